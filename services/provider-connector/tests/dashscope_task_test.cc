#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "services/provider-connector/dashscope_task.h"

namespace nexusflow::connector {
namespace {

// PROTOCOLS.md section E: a DashScope task ending UNKNOWN, and one with image_count < n.
TEST(DashScopePollTest, UnknownIsAFinalFailureWithoutCharge) {
  auto p = ParseDashScopePoll(R"({"request_id":"r","output":{"task_id":"t1","task_status":"UNKNOWN"}})");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->status, v1::TASK_STATUS_FAILED);
  EXPECT_TRUE(p->final);
  EXPECT_EQ(p->error.code(), "upstream_task_unknown");
  EXPECT_EQ(p->usage.image_count(), 0);
}

TEST(DashScopePollTest, FewerImagesThanAskedSucceedAndBillTheImageCount) {
  auto p = ParseDashScopePoll(
      R"({"request_id":"r","output":{"task_id":"t2","task_status":"SUCCEEDED",)"
      R"("results":[{"url":"https://x/1.png"},{"code":"DataInspectionFailed","message":"blocked"},)"
      R"({"url":"https://x/3.png"}],"task_metrics":{"TOTAL":4,"SUCCEEDED":2,"FAILED":2}},)"
      R"("usage":{"image_count":2}})");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->status, v1::TASK_STATUS_SUCCEEDED);
  EXPECT_TRUE(p->final);
  ASSERT_EQ(p->result.urls_size(), 2);
  EXPECT_EQ(p->result.urls(1), "https://x/3.png");
  EXPECT_EQ(p->usage.image_count(), 2);
}

TEST(DashScopePollTest, AbsurdOrNegativeUsageIsBoundedNotUndefined) {
  auto p = ParseDashScopePoll(
      R"({"output":{"task_id":"t","task_status":"SUCCEEDED","video_url":"http://v"},)"
      R"("usage":{"video_duration":1e300,"video_count":233333333333333333333333333333333333333333}})");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->usage.video_count(), 1'000'000'000);
  EXPECT_EQ(p->usage.video_duration_seconds(), 1e9);
  p = ParseDashScopePoll(
      R"({"output":{"task_id":"t","task_status":"SUCCEEDED","results":[{"url":"http://a"}]},"usage":{"image_count":-5}})");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->usage.image_count(), 1);  // nothing usable reported: the images with a URL
}

TEST(DashScopePollTest, EveryStatus) {
  auto pending = ParseDashScopePoll(R"({"output":{"task_id":"t","task_status":"PENDING"}})");
  ASSERT_TRUE(pending.ok());
  EXPECT_EQ(pending->status, v1::TASK_STATUS_QUEUED);
  EXPECT_FALSE(pending->final);
  auto running = ParseDashScopePoll(R"({"output":{"task_id":"t","task_status":"RUNNING"}})");
  EXPECT_EQ(running->status, v1::TASK_STATUS_RUNNING);
  auto video = ParseDashScopePoll(R"({"output":{"task_id":"t","task_status":"SUCCEEDED","video_url":"https://x/v.mp4"},)"
                                  R"("usage":{"video_duration":10,"video_count":1}})");
  ASSERT_TRUE(video.ok());
  EXPECT_EQ(video->result.urls(0), "https://x/v.mp4");
  EXPECT_EQ(video->usage.video_duration_seconds(), 10);
  EXPECT_EQ(video->usage.video_count(), 1);
  auto failed = ParseDashScopePoll(R"({"output":{"task_id":"t","task_status":"FAILED","code":"InternalError",)"
                                   R"("message":"boom"},"usage":{"image_count":1}})");
  EXPECT_EQ(failed->status, v1::TASK_STATUS_FAILED);
  EXPECT_EQ(failed->error.code(), "InternalError");
  EXPECT_EQ(failed->usage.image_count(), 0);  // never billed
  auto canceled = ParseDashScopePoll(R"({"output":{"task_id":"t","task_status":"CANCELED"}})");
  EXPECT_EQ(canceled->status, v1::TASK_STATUS_CANCELED);
  auto empty = ParseDashScopePoll(R"({"output":{"task_id":"t","task_status":"SUCCEEDED","results":[]}})");
  EXPECT_EQ(empty->status, v1::TASK_STATUS_FAILED);
  EXPECT_FALSE(ParseDashScopePoll(R"({"output":{"task_status":"SOMETHING"}})").ok());
  EXPECT_FALSE(ParseDashScopePoll("[]").ok());
}

TEST(DashScopeSubmitTest, ParametersSplitIntoInputAndParameters) {
  auto body = BuildDashScopeSubmit(MediaKind::kImage, "wan2.6-t2i",
                                   R"({"prompt":"a cat","size":"1024x1024","negative_prompt":"dogs"})");
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_EQ(boost::json::parse(*body),
            boost::json::parse(R"({"model":"wan2.6-t2i","input":{"prompt":"a cat","negative_prompt":"dogs"},)"
                               R"("parameters":{"size":"1024*1024","n":1}})"));
  auto video = BuildDashScopeSubmit(MediaKind::kVideo, "v", R"({"prompt":"waves","duration":10,"resolution":"720P"})");
  ASSERT_TRUE(video.ok());
  EXPECT_EQ(boost::json::parse(*video),
            boost::json::parse(R"({"model":"v","input":{"prompt":"waves"},"parameters":{"duration":10,"resolution":"720P"}})"));
  EXPECT_FALSE(BuildDashScopeSubmit(MediaKind::kImage, "m", R"({"size":"1x1"})").ok());
  EXPECT_FALSE(BuildDashScopeSubmit(MediaKind::kImage, "m", "nope").ok());
  auto id = ParseDashScopeSubmitted(R"({"output":{"task_id":"abc","task_status":"PENDING"},"request_id":"r"})");
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(*id, "abc");
  EXPECT_FALSE(ParseDashScopeSubmitted(R"({"code":"AccessDenied"})").ok());
}

}  // namespace
}  // namespace nexusflow::connector
