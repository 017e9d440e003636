#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include <boost/json.hpp>

#include "libs/common/ids.h"
#include "libs/common/money.h"
#include "libs/common/json_util.h"
#include "libs/common/sse.h"
#include "libs/common/status_map.h"

namespace nexusflow {
namespace {

TEST(MoneyTest, ParsesDecimalUsdExactly) {
  EXPECT_EQ(*ParseUsd("25"), 25 * kNanoPerUsd);
  EXPECT_EQ(*ParseUsd("0.000000001"), 1);
  EXPECT_EQ(*ParseUsd("1.5"), 1'500'000'000);
  EXPECT_EQ(*ParseUsd("-2.25"), -2'250'000'000);
  EXPECT_FALSE(ParseUsd("1.0000000001").ok());
  EXPECT_FALSE(ParseUsd("1e3").ok());
  EXPECT_FALSE(ParseUsd("").ok());
  EXPECT_FALSE(ParseUsd(".").ok());
  EXPECT_FALSE(ParseUsd("99999999999999999999").ok());
}

TEST(MoneyTest, AmountsAtTheEdgeOfInt64AreExactOrRefused) {
  // INT64_MAX nano-USD is 9223372036.854775807 USD.
  EXPECT_EQ(*ParseUsd("9223372036.854775807"), INT64_MAX);
  EXPECT_FALSE(ParseUsd("9223372036.854775808").ok());  // one nano-USD over
  EXPECT_FALSE(ParseUsd("9223372037").ok());
  EXPECT_FALSE(ParseUsd("9223372039").ok());  // used to overflow inside the parser
  EXPECT_EQ(*ParseUsd("-9223372036.854775807"), -INT64_MAX);
}

TEST(MoneyTest, FormatsWithTwoToNineDecimals) {
  EXPECT_EQ(FormatUsd(0), "0.00");
  EXPECT_EQ(FormatUsd(1'500'000'000), "1.50");
  EXPECT_EQ(FormatUsd(1), "0.000000001");
  EXPECT_EQ(FormatUsd(-2'250'000'000), "-2.25");
  EXPECT_EQ(FormatUsd(99'999'838'000), "99.999838");
}

TEST(JsonTest, WholeNumberNeverCastsWhatDoesNotFit) {
  EXPECT_EQ(WholeNumber(2.0), 2);
  EXPECT_EQ(WholeNumber(-9007199254740992.0), -9007199254740992);
  EXPECT_EQ(WholeNumber(2.5), std::nullopt);
  EXPECT_EQ(WholeNumber(1e300), std::nullopt);  // an upstream's or a caller's huge count
  EXPECT_EQ(WholeNumber(9223372036854775808.0), std::nullopt);  // 2^63
  EXPECT_EQ(WholeNumber(-9223372036854775808.0), INT64_MIN);
  EXPECT_EQ(WholeNumber(std::numeric_limits<double>::infinity()), std::nullopt);
  EXPECT_EQ(WholeNumber(std::numeric_limits<double>::quiet_NaN()), std::nullopt);
}

TEST(SseTest, PendingCountsAnUnfinishedEventForLimits) {
  SseParser p;
  std::vector<SseEvent> out;
  p.Feed("data: abc", out);
  EXPECT_EQ(p.Pending(), 9u);  // the open line
  p.Feed("\ndata: de", out);
  EXPECT_EQ(p.Pending(), 3u + 8u);  // the event's data so far, and the next open line
  p.Feed("\n\n", out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].data, "abc\nde");
  EXPECT_EQ(p.Pending(), 0u);
}

TEST(SseTest, LineEndsOfEveryKindAlsoSplitAcrossReads) {
  SseParser p;
  std::vector<SseEvent> out;
  p.Feed("data: a\r", out);       // \r now, its \n in the next read
  p.Feed("\n\rdata: b\r\r", out);  // an \r\n, a lone \r ending the event, then \r endings
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].data, "a");
  EXPECT_EQ(out[1].data, "b");
  for (char c : std::string("data: c\n\n")) p.Feed(std::string_view(&c, 1), out);  // a byte at a time
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[2].data, "c");
}

TEST(SseTest, ParsesFramesSplitAcrossReads) {
  SseParser p;
  std::vector<SseEvent> out;
  p.Feed("data: {\"a\"", out);
  EXPECT_TRUE(out.empty());
  p.Feed(":1}\r\n\r\nevent: ping\ndata: x\n", out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].data, "{\"a\":1}");
  p.Feed("data: y\n\n: comment\n\ndata: [DONE]\n\n", out);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[1].event, "ping");
  EXPECT_EQ(out[1].data, "x\ny");
  EXPECT_EQ(out[2].data, "[DONE]");
}

TEST(StatusMapTest, ErrorBodiesFollowEachProtocol) {
  HttpError e{429, "slow down", "", ""};
  auto openai = boost::json::parse(ErrorBody(ApiProtocol::kOpenAI, e, "req_1"));
  EXPECT_EQ(openai.at("error").at("type").as_string(), "rate_limit_error");
  EXPECT_EQ(openai.at("error").at("code").as_string(), "rate_limit_exceeded");
  auto anthropic = boost::json::parse(ErrorBody(ApiProtocol::kAnthropic, e, "req_1"));
  EXPECT_EQ(anthropic.at("type").as_string(), "error");
  EXPECT_EQ(anthropic.at("error").at("type").as_string(), "rate_limit_error");
  EXPECT_EQ(anthropic.at("request_id").as_string(), "req_1");
  auto gemini = boost::json::parse(ErrorBody(ApiProtocol::kGemini, e, "req_1"));
  EXPECT_EQ(gemini.at("error").at("status").as_string(), "RESOURCE_EXHAUSTED");
  EXPECT_EQ(gemini.at("error").at("code").as_int64(), 429);
  HttpError balance{402, "no money", "", ""};
  auto b = boost::json::parse(ErrorBody(ApiProtocol::kOpenAI, balance, ""));
  EXPECT_EQ(b.at("error").at("type").as_string(), "insufficient_quota");
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kUnauthenticated), 401);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(FromGrpcStatus(ToGrpcStatus(absl::NotFoundError("x"))).code(),
            absl::StatusCode::kNotFound);
}

TEST(IdsTest, KeysAreLongRandomAndHashStable) {
  std::string a = NewApiKeySecret(), b = NewApiKeySecret();
  EXPECT_EQ(a.size(), 46u);
  EXPECT_NE(a, b);
  EXPECT_EQ(a.rfind("sk-nf-", 0), 0u);
  EXPECT_EQ(Sha256("abc").size(), 32u);
  EXPECT_EQ(HexEncode(Sha256("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

// Request ids sort by the time they were made and never repeat.
TEST(IdsTest, TimeOrderedIdsSortByTimeAndStayUnique) {
  const int64_t before_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count();
  std::vector<std::string> ids;
  for (int i = 0; i < 2000; ++i) {
    ids.push_back(NewTimeOrderedId("req_"));
    if (i == 999) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  for (const auto& id : ids) {
    ASSERT_EQ(id.size(), 4u + 12 + 20) << id;
    EXPECT_EQ(id.rfind("req_", 0), 0u);
    EXPECT_EQ(id.find_first_not_of("0123456789abcdef", 4), std::string::npos) << id;
  }
  EXPECT_GE(std::stoll(ids.front().substr(4, 12), nullptr, 16), before_ms);
  // Every id of the second thousand was made at least a millisecond after the first
  // thousand, so it sorts after all of them.
  const std::string last_of_first = *std::max_element(ids.begin(), ids.begin() + 1000);
  for (int i = 1000; i < 2000; ++i) EXPECT_GT(ids[i], last_of_first);
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(std::adjacent_find(ids.begin(), ids.end()), ids.end());
}

}  // namespace
}  // namespace nexusflow
