// Split mode at scale, on PostgreSQL and Redis: two replicas of every service and two
// gateways sharing one HTTP port (SO_REUSEPORT), each gateway with its own outbox, all of
// them real `nexusflow` processes; the mock provider is the only fake. The test starts its
// own PostgreSQL and Redis (tools/lib/pg.sh, redis.sh) as the unprivileged user and stops
// them at the end.
//
// - Under 200 concurrent requests (sync and streamed, clients that hang up mid-stream,
//   upstreams that fail before and after output), both billing-ledger replicas, then one
//   gateway, then both provider-connectors are SIGKILLed and restarted. Every request whose
//   client received output is charged exactly once, at least for that output (exactly its
//   usage when the answer was whole); no request that failed before output is charged; the
//   balance drops by exactly the sum of the usage records; `nexusflow ledger verify` passes.
// - Tokens per minute across the two gateways and two limiters: of a burst on one key, the
//   usage records never sum to more than the key's TPM limit in a window.
// - rate_limiter.redis_failure: closed: with Redis stopped mid-load every new request is
//   answered 503 with retry-after in its caller's protocol, while the streams admitted
//   before run to their end and are charged; once Redis is back the limits hold again.
// - One limiter cut off from Redis while the other is not: the releases it cannot carry
//   out reach the other, so no concurrency slot leaks.
//
// Ports (fixed, below the ephemeral range): HTTP 21080; gateway gRPC 21090 and 21100,
// /metrics 21300 and 21310; services' gRPC 21091–21095 and 21101–21105, /metrics
// 21301–21305 and 21311–21315; mock provider 21110; PostgreSQL 21120; Redis 21121 (21122:
// an address where no Redis listens).
#include <curl/curl.h>
#include <fcntl.h>
#include <grpcpp/create_channel.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "nexusflow/billing/v1/billing.grpc.pb.h"
#include "tests/integration/harness.h"
#include "tests/integration/http_get.h"
#include "tests/integration/ports.h"

namespace {

using nexusflow::testing::WaitFor;
using nexusflow::testing::MetricValue;

namespace json = boost::json;
namespace billing = nexusflow::billing::v1;
using nexusflow::testing::HttpGet;
using nexusflow::testing::Listening;

std::string g_binary, g_mock, g_config, g_tools_lib;

constexpr int kHttpPort = 21080;
constexpr int kMockPort = 21110;
constexpr int kPgPort = 21120;
constexpr int kRedisPort = 21121;
constexpr int kReplicas = 2;
constexpr int kGateways = 2;
constexpr char kAdminKey[] = "nf-admin-scale-crash-test";
constexpr char kInternalToken[] = "nf-internal-scale-crash-test";
// Models of deploy/local/nexusflow.yaml with their prices, nano-USD per million tokens
// (input, output): qwen3-max's upstream speaks OpenAI, so an OpenAI caller's stream is
// relayed as the upstream wrote it; claude-haiku-4-5's speaks Anthropic and
// gemini-2.5-flash's Gemini, so theirs are translated and rendered by the gateway.
constexpr char kModel[] = "qwen3-max";
const char* const kModels[] = {kModel, "claude-haiku-4-5", "gemini-2.5-flash"};
const std::map<std::string, std::pair<int64_t, int64_t>> kPrices = {{kModel, {1'200'000'000, 6'000'000'000}},
                                                                    {"claude-haiku-4-5", {1'000'000'000, 5'000'000'000}},
                                                                    {"gemini-2.5-flash", {300'000'000, 2'500'000'000}}};
const std::vector<std::string> kTargets = {"auth", "routing", "rate-limiter", "billing-ledger",
                                           "provider-connector"};

int TargetIndex(const std::string& target) {
  for (size_t i = 0; i < kTargets.size(); ++i)
    if (kTargets[i] == target) return static_cast<int>(i);
  return -1;
}
int ServicePort(const std::string& target, int replica) { return 21091 + 10 * replica + TargetIndex(target); }
int ServiceMetricsPort(const std::string& target, int replica) { return ServicePort(target, replica) + 210; }
int GatewayGrpcPort(int g) { return 21090 + 10 * g; }
int GatewayMetricsPort(int g) { return 21300 + 10 * g; }

std::string ServiceName(const std::string& target, int replica) {
  return replica == 0 ? target : target + "-" + std::to_string(replica + 1);
}
std::string GatewayName(int g) { return g == 0 ? "gateway" : "gateway-" + std::to_string(g + 1); }

void Pause(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// Runs a bash script with arguments ($1…); its exit status and stdout.
std::pair<int, std::string> Bash(const std::string& script, const std::vector<std::string>& args) {
  int out[2];
  if (pipe(out) != 0) return {-1, ""};
  pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], 1);
    close(out[0]);
    close(out[1]);
    std::vector<std::string> all = {"bash", "-c", script, "bash"};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    execvp("bash", argv.data());
    _exit(127);
  }
  close(out[1]);
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = read(out[0], buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
  close(out[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, text};
}

std::string Metrics(int port) { return HttpGet("http://127.0.0.1:" + std::to_string(port) + "/metrics"); }

// ---------------------------------------------------------------------------------------
// HTTP client.

struct Exchange {
  long status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // names in lower case
  CURLcode code = CURLE_OK;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

size_t HeaderLine(char* data, size_t size, size_t n, void* out) {
  std::string line(data, size * n);
  auto colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    for (auto& c : name) c = static_cast<char>(tolower(c));
    std::string value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.erase(value.begin());
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' '))
      value.pop_back();
    static_cast<Exchange*>(out)->headers[name] = value;
  }
  return size * n;
}

// One request; `on_data` (optional) sees the body as it grows and returns false to hang up.
Exchange Http(const std::string& method, const std::string& path, const std::string& body,
              const std::vector<std::string>& headers, long timeout_s = 60,
              std::function<bool(const std::string&)> on_data = nullptr) {
  Exchange r;
  struct Sink {
    Exchange* r;
    std::function<bool(const std::string&)>* on_data;
  } sink{&r, &on_data};
  CURL* c = curl_easy_init();
  std::string url = "http://127.0.0.1:" + std::to_string(kHttpPort) + path;
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
  curl_slist* list = curl_slist_append(nullptr, "Content-Type: application/json");
  for (const auto& h : headers) list = curl_slist_append(list, h.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
  if (!body.empty()) curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
  curl_easy_setopt(
      c, CURLOPT_WRITEFUNCTION, +[](char* data, size_t size, size_t n, void* out) -> size_t {
        auto* s = static_cast<Sink*>(out);
        s->r->body.append(data, size * n);
        if (*s->on_data && !(*s->on_data)(s->r->body)) return 0;  // hang up
        return size * n;
      });
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, HeaderLine);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout_s);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  r.code = curl_easy_perform(c);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
  curl_slist_free_all(list);
  curl_easy_cleanup(c);
  return r;
}

Exchange Admin(const std::string& method, const std::string& path, const std::string& body) {
  return Http(method, path, body, {std::string("Authorization: Bearer ") + kAdminKey});
}

// What a client saw of an OpenAI chat answer, streamed or not.
struct Answer {
  int64_t words = 0;            // words of output text received (the mock's output tokens)
  bool whole = false;           // the whole answer: JSON body, or a stream up to [DONE]
  bool error_event = false;     // a stream that ended with an error event
  int64_t prompt_tokens = -1;   // the usage the client was told, when it was
  int64_t completion_tokens = -1;
};

int64_t CountWords(std::string_view text) {
  int64_t n = 0;
  bool in_word = false;
  for (char c : text) {
    if (c == ' ') {
      in_word = false;
    } else if (!in_word) {
      in_word = true;
      ++n;
    }
  }
  return n;
}

void ReadUsage(const json::value& v, Answer* a) {
  const auto* usage = v.as_object().if_contains("usage");
  if (!usage || !usage->is_object()) return;
  a->prompt_tokens = usage->as_object().at("prompt_tokens").to_number<int64_t>();
  a->completion_tokens = usage->as_object().at("completion_tokens").to_number<int64_t>();
}

// An OpenAI SSE body: complete frames only (a cut stream may end in half a frame).
Answer ReadStream(const std::string& sse) {
  Answer a;
  std::string text;
  size_t pos = 0;
  while (true) {
    size_t start = sse.find("data: ", pos);
    if (start == std::string::npos) break;
    size_t end = sse.find("\n\n", start);
    if (end == std::string::npos) break;
    pos = end + 2;
    std::string_view data(sse.data() + start + 6, end - start - 6);
    if (data == "[DONE]") {
      a.whole = true;
      continue;
    }
    boost::system::error_code ec;
    json::value v = json::parse(data, ec);
    if (ec || !v.is_object()) continue;
    if (v.as_object().contains("error")) a.error_event = true;
    ReadUsage(v, &a);
    const auto* choices = v.as_object().if_contains("choices");
    if (!choices || !choices->is_array()) continue;
    for (const auto& ch : choices->as_array()) {
      const auto* delta = ch.as_object().if_contains("delta");
      if (!delta || !delta->is_object()) continue;
      if (const auto* t = delta->as_object().if_contains("content"); t && t->is_string())
        text += std::string(t->as_string());
    }
  }
  a.words = CountWords(text);
  return a;
}

Answer ReadJson(const std::string& body) {
  Answer a;
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec || !v.is_object() || !v.as_object().contains("choices")) return a;
  const auto& msg = v.at("choices").at(0).at("message").as_object();
  if (const auto* t = msg.if_contains("content"); t && t->is_string()) a.words = CountWords(t->as_string());
  ReadUsage(v, &a);
  a.whole = a.completion_tokens >= 0;
  return a;
}

std::string ChatBody(bool stream, int max_tokens, const std::string& text, const char* model = kModel) {
  json::object body{{"model", model},
                    {"stream", stream},
                    {"max_tokens", max_tokens},
                    {"messages", json::array{json::object{{"role", "user"}, {"content", text}}}}};
  if (stream) body["stream_options"] = json::object{{"include_usage", true}};
  return json::serialize(body);
}

// __int128 ceil of the price formula (services/billing-ledger/pricing.cc) for plain input
// and output.
int64_t ExpectedCost(const std::string& model, int64_t input, int64_t output) {
  const auto& [in, out] = kPrices.at(model);
  __int128 sum = static_cast<__int128>(input) * in + static_cast<__int128>(output) * out;
  return static_cast<int64_t>((sum + 999'999) / 1'000'000);
}

// ---------------------------------------------------------------------------------------

class ScaleCrashTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/nf-scale-crash-XXXXXX";
    suite_dir_ = mkdtemp(tmpl);
    // PostgreSQL runs as an unprivileged user, who must be able to reach its directory.
    chmod(suite_dir_.c_str(), 0711);
    for (int port : {kHttpPort, kMockPort, kPgPort, kRedisPort}) {
      if (Listening(port)) {
        setup_error_ = "port " + std::to_string(port) + " is taken";
        return;
      }
    }
    auto pg = Bash(R"(source "$1/pg.sh" && nf_pg_start "$2" "$3" >&2 && printf %s "$NF_PG_URL")",
                   {g_tools_lib, suite_dir_ + "/pg", std::to_string(kPgPort)});
    if (pg.first != 0 || pg.second.empty()) {
      setup_error_ = "PostgreSQL did not start";
      return;
    }
    pg_url_ = pg.second;
    if (!StartRedis()) setup_error_ = "Redis did not start";
  }

  static void TearDownTestSuite() {
    StopRedis();
    Bash(R"(source "$1/pg.sh" && nf_pg_stop "$2")", {g_tools_lib, suite_dir_ + "/pg"});
    if (!::testing::UnitTest::GetInstance()->Failed()) std::filesystem::remove_all(suite_dir_);
  }

  static bool StartRedis() {
    return Bash(R"(source "$1/redis.sh" && nf_redis_start "$2" "$3")",
                {g_tools_lib, suite_dir_ + "/redis", std::to_string(kRedisPort)})
               .first == 0;
  }
  static void StopRedis() {
    Bash(R"(source "$1/redis.sh" && nf_redis_stop "$2")", {g_tools_lib, suite_dir_ + "/redis"});
  }

  void SetUp() override {
    ASSERT_TRUE(setup_error_.empty()) << setup_error_;
    dir_ = suite_dir_ + "/" + ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::create_directories(dir_);
    setenv("NEXUSFLOW_DATA_DIR", dir_.c_str(), 1);
    setenv("NEXUSFLOW_HTTP_PORT", std::to_string(kHttpPort).c_str(), 1);
    setenv("NEXUSFLOW_MOCK_PORT", std::to_string(kMockPort).c_str(), 1);
    setenv("NEXUSFLOW_MOCK_API_KEY", "mock-upstream-key", 1);
    setenv("NEXUSFLOW_ADMIN_KEY", kAdminKey, 1);
    setenv("NEXUSFLOW_INTERNAL_TOKEN", kInternalToken, 1);
    setenv("NEXUSFLOW_ACCESS_LOG", "true", 1);
    setenv("NEXUSFLOW_REUSE_PORT", "true", 1);
    setenv("NEXUSFLOW_LEDGER_DATABASE", pg_url_.c_str(), 1);
    setenv("NEXUSFLOW_AUTH_DATABASE", pg_url_.c_str(), 1);
    setenv("NEXUSFLOW_RATE_LIMITER_STORE", ("redis://127.0.0.1:" + std::to_string(kRedisPort)).c_str(), 1);
    setenv("NEXUSFLOW_RATE_LIMITER_REDIS_FAILURE", "open", 1);
    for (const auto& target : kTargets) {
      std::string var = "NEXUSFLOW_";
      for (char ch : target) var += ch == '-' ? '_' : static_cast<char>(toupper(ch));
      std::string address;
      for (int r = 0; r < kReplicas; ++r)
        address += (r ? ",127.0.0.1:" : "127.0.0.1:") + std::to_string(ServicePort(target, r));
      setenv((var + "_ADDRESS").c_str(), address.c_str(), 1);
    }
  }

  void TearDown() override {
    for (auto& [name, pid] : pids_) {
      if (pid <= 0) continue;
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    pids_.clear();
    WaitFor([] { return !Listening(kHttpPort) && !Listening(kMockPort); }, 10);
  }

  // Everything but the stores: the mock, every service twice, two gateways.
  void StartCluster() {
    ASSERT_FALSE(Listening(kHttpPort)) << "port " << kHttpPort << " is taken";
    pids_["mock"] =
        Spawn("mock", {g_mock, "--port=" + std::to_string(kMockPort), "--api-key=mock-upstream-key"}, {});
    ASSERT_TRUE(WaitFor([] { return Listening(kMockPort); }, 30));
    for (int r = 0; r < kReplicas; ++r)
      for (const auto& target : kTargets) ASSERT_NO_FATAL_FAILURE(StartService(target, r));
    for (int g = 0; g < kGateways; ++g) ASSERT_NO_FATAL_FAILURE(StartGateway(g));
  }

  pid_t Spawn(const std::string& name, const std::vector<std::string>& args,
              const std::vector<std::pair<std::string, std::string>>& env) {
    return nexusflow::testing::SpawnLogged(dir_ + "/" + name + ".log", args, env);
  }

  void StartService(const std::string& target, int replica,
                    const std::vector<std::pair<std::string, std::string>>& env = {}) {
    int port = ServicePort(target, replica);
    ASSERT_FALSE(Listening(port)) << "port " << port << " is taken";
    pids_[ServiceName(target, replica)] =
        Spawn(ServiceName(target, replica),
              {g_binary, "--config=" + g_config, "--target=" + target,
               "--grpc-listen=127.0.0.1:" + std::to_string(port),
               "--metrics-listen=127.0.0.1:" + std::to_string(ServiceMetricsPort(target, replica))},
              env);
    ASSERT_TRUE(WaitFor([port] { return Listening(port); }, 30)) << ServiceName(target, replica) << " did not start";
  }

  // Both gateways answer on one port: ready once many fresh connections in a row find a
  // ready gateway (the kernel spreads them over both listeners).
  static bool GatewaysReady() {
    for (int i = 0; i < 16; ++i)
      if (HttpGet("http://127.0.0.1:" + std::to_string(kHttpPort) + "/readyz") != "ready\n") return false;
    return true;
  }

  void StartGateway(int g) {
    ASSERT_FALSE(Listening(GatewayMetricsPort(g)));
    pids_[GatewayName(g)] = Spawn(
        GatewayName(g),
        {g_binary, "--config=" + g_config, "--target=gateway",
         "--grpc-listen=127.0.0.1:" + std::to_string(GatewayGrpcPort(g)),
         "--metrics-listen=127.0.0.1:" + std::to_string(GatewayMetricsPort(g))},
        {{"NEXUSFLOW_GATEWAY_OUTBOX", dir_ + "/outbox-" + std::to_string(g + 1) + ".db"}});
    ASSERT_TRUE(WaitFor([g] { return Listening(GatewayMetricsPort(g)); }, 30)) << GatewayName(g) << " did not start";
    ASSERT_TRUE(WaitFor(GatewaysReady, 60)) << "the gateways did not become ready";
  }

  void Kill(const std::string& name) {
    pid_t pid = pids_[name];
    ASSERT_GT(pid, 0) << name;
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    pids_[name] = 0;
  }

  // An account with `usd` of credit.
  std::string CreateAccount(const std::string& name, const std::string& usd) {
    auto account = Admin("POST", "/admin/v1/accounts", json::serialize(json::object{{"name", name}}));
    EXPECT_EQ(account.status, 201) << account.body;
    if (account.status != 201) return "";
    std::string id(json::parse(account.body).at("id").as_string());
    auto credit = Admin("POST", "/admin/v1/accounts/" + id + "/credits",
                        json::serialize(json::object{{"amount", usd}, {"idempotency_key", name + "-seed"}}));
    EXPECT_EQ(credit.status, 200) << credit.body;
    return id;
  }

  struct Key {
    std::string id;
    std::string secret;
  };
  Key CreateKey(const std::string& account, const std::string& plan, json::object limits = {}) {
    json::object body{{"account_id", account}, {"plan", plan}};
    if (!limits.empty()) body["limits"] = std::move(limits);
    auto key = Admin("POST", "/admin/v1/keys", json::serialize(body));
    EXPECT_EQ(key.status, 201) << key.body;
    if (key.status != 201) return {};
    auto v = json::parse(key.body);
    return {std::string(v.at("id").as_string()), std::string(v.at("key").as_string())};
  }

  std::unique_ptr<billing::BillingLedgerService::Stub> Billing() {
    auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(ServicePort("billing-ledger", 0)),
                                       grpc::InsecureChannelCredentials());
    return billing::BillingLedgerService::NewStub(channel);
  }

  void Internal(grpc::ClientContext& ctx) {
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    ctx.AddMetadata("x-nexusflow-internal-token", kInternalToken);
  }

  billing::Balance Balance(const std::string& account) {
    grpc::ClientContext ctx;
    Internal(ctx);
    billing::GetBalanceRequest req;
    req.set_account_id(account);
    billing::Balance b;
    grpc::Status s = Billing()->GetBalance(&ctx, req, &b);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return b;
  }

  // Every usage record of the account, page by page.
  std::vector<billing::UsageRecord> Usage(const std::string& account) {
    std::vector<billing::UsageRecord> all;
    auto client = Billing();
    int64_t after = 0;
    while (true) {
      grpc::ClientContext ctx;
      Internal(ctx);
      billing::ListUsageRequest req;
      req.set_account_id(account);
      req.set_limit(1000);
      req.set_after(after);
      billing::ListUsageResponse resp;
      grpc::Status s = client->ListUsage(&ctx, req, &resp);
      EXPECT_TRUE(s.ok()) << s.error_message();
      if (!s.ok()) return all;
      for (const auto& r : resp.records()) all.push_back(r);
      if (!resp.has_more() || resp.records_size() == 0) return all;
      after = resp.records(resp.records_size() - 1).sequence();
    }
  }

  // Reservations granted by the billing replicas now running (their RPC counters).
  double HoldsGranted() {
    double sum = 0;
    for (int r = 0; r < kReplicas; ++r) {
      double v = MetricValue(Metrics(ServiceMetricsPort("billing-ledger", r)),
                             "nexusflow_grpc_server_handled_total{code=\"OK\",method=\"Reserve\","
                             "service=\"nexusflow.billing.v1.BillingLedgerService\"}");
      if (v > 0) sum += v;
    }
    return sum;
  }

  double GatewayMetric(int g, const std::string& series) { return MetricValue(Metrics(GatewayMetricsPort(g)), series); }

  // `nexusflow ledger verify` on the shared ledger: its exit status, output in the log.
  int VerifyLedger() {
    auto r = Bash(R"("$1" ledger verify --database="$2" 2>&1)", {g_binary, pg_url_});
    std::cerr << "ledger verify: " << r.second;
    return r.first;
  }

  static std::string suite_dir_, pg_url_, setup_error_;
  std::string dir_;
  std::map<std::string, pid_t> pids_;
};

std::string ScaleCrashTest::suite_dir_, ScaleCrashTest::pg_url_, ScaleCrashTest::setup_error_;

// ---------------------------------------------------------------------------------------

// One client's request and what it saw.
struct Call {
  std::string key_id, key;
  bool stream = false;
  int hang_up_after = 0;  // words; 0 = reads to the end
  const char* model = kModel;
  std::string text;
  Exchange ex;
  Answer answer;
};

void Send(Call& c) {
  std::function<bool(const std::string&)> on_data;
  if (c.hang_up_after > 0)
    on_data = [&c](const std::string& body) { return ReadStream(body).words < c.hang_up_after; };
  c.ex = Http("POST", "/v1/chat/completions", ChatBody(c.stream, 500, c.text, c.model),
              {"Authorization: Bearer " + c.key}, 90, on_data);
  c.answer = c.stream && c.ex.status == 200 ? ReadStream(c.ex.body) : ReadJson(c.ex.body);
}

TEST_F(ScaleCrashTest, KilledBillingGatewayAndConnectorUnderLoadLoseNoChargeAndDoubleNone) {
  ASSERT_NO_FATAL_FAILURE(StartCluster());
  std::string account = CreateAccount("scale-crash", "100.00");
  ASSERT_FALSE(account.empty());
  const int64_t before = Balance(account).balance_nano_usd();

  // Each request has a key of its own, so its usage record is found by key even when its
  // client never learned the request id. Each ten go to the next of the three models. The
  // kinds, by index:
  //   0, 1  a long stream (12 s)                 5  sync, answered after 7 s
  //   2     a stream of 4 s                      6  sync, answered after 11 s
  //   3     a stream whose client hangs up       7  sync, upstream 500 (before output)
  //   4     sync, answered after 3 s             8  stream, upstream error after 5 words
  //   9     stream: upstream 503 before output (even), connection dropped after 8 words (odd)
  auto make = [&](int i, int wave) {
    Call c;
    Key key = CreateKey(account, "unlimited");
    c.key_id = key.id;
    c.key = key.secret;
    std::string tag = "w" + std::to_string(wave) + " r" + std::to_string(i) + " ";
    c.model = kModels[(i / 10) % 3];  // every kind through each upstream protocol
    switch (i % 10) {
      case 0:
      case 1: c.stream = true, c.text = tag + "[mock:words=120][mock:chunk-delay=100]"; break;
      case 2: c.stream = true, c.text = tag + "[mock:words=40][mock:chunk-delay=100]"; break;
      case 3: c.stream = true, c.hang_up_after = 5 + i % 20, c.text = tag + "[mock:words=200][mock:chunk-delay=50]"; break;
      case 4: c.text = tag + "[mock:words=30][mock:delay=3000]"; break;
      case 5: c.text = tag + "[mock:words=30][mock:delay=7000]"; break;
      case 6: c.text = tag + "[mock:words=30][mock:delay=11000]"; break;
      case 7: c.text = tag + "[mock:status=500][mock:delay=" + std::to_string(200 * (i % 50)) + "]"; break;
      case 8: c.stream = true, c.text = tag + "[mock:status=500][mock:drop-after=5][mock:words=50][mock:chunk-delay=200]"; break;
      case 9:
        c.stream = true;
        c.text = tag + ((i / 10) % 2 == 0 ? "[mock:status=503][mock:delay=" + std::to_string(300 * (i % 40)) + "]"
                                          : "[mock:drop-after=8][mock:words=50][mock:chunk-delay=300]");
        break;
    }
    return c;
  };
  constexpr int kWave1 = 200, kOutage = 10, kWave2 = 40;
  // A deque: the clients hold references to their calls while more are added.
  std::deque<Call> calls;
  for (int i = 0; i < kWave1; ++i) calls.push_back(make(i, 1));
  for (int i = 0; i < kOutage; ++i) calls.push_back(make(i % 2 ? 0 : 4, 0));  // while billing is down
  for (int i = 0; i < kWave2; ++i) calls.push_back(make(i, 2));
  ASSERT_FALSE(HasFailure());
  std::vector<std::thread> clients;
  struct JoinAll {  // whichever way the test ends
    std::vector<std::thread>& threads;
    ~JoinAll() {
      for (auto& t : threads)
        if (t.joinable()) t.join();
    }
  } join_all{clients};
  auto launch = [&](int from, int to) {
    for (int i = from; i < to; ++i) clients.emplace_back([&c = calls[i]] { Send(c); });
  };
  // Short requests until `in_a_row` of them are answered (every gateway's channels are
  // back after a restart); each is checked like the others.
  auto served_again = [&](int in_a_row) {
    return WaitFor(
        [&] {
          for (int i = 0; i < in_a_row; ++i) {
            Call& c = calls.emplace_back(make(4, 3));
            c.text = "probe " + std::to_string(calls.size()) + " [mock:words=3]";
            Send(c);
            if (c.ex.status != 200) return false;
          }
          return true;
        },
        60);
  };

  // 200 at once; every one admitted (a hold each) before billing goes.
  launch(0, kWave1);
  ASSERT_TRUE(WaitFor([&] { return HoldsGranted() >= kWave1; }, 60)) << "wave 1 was not admitted";
  Pause(1500);
  for (int r = 0; r < kReplicas; ++r) ASSERT_NO_FATAL_FAILURE(Kill(ServiceName("billing-ledger", r)));
  // New requests need a hold: refused while billing is down; answers finishing now wait
  // in the outboxes.
  launch(kWave1, kWave1 + kOutage);
  for (int i = kWave1; i < kWave1 + kOutage; ++i) clients[i].join();
  Pause(2000);
  for (int r = 0; r < kReplicas; ++r) ASSERT_NO_FATAL_FAILURE(StartService("billing-ledger", r));

  // One gateway dies with streams and answers in flight, and restarts on its outbox.
  Pause(1000);
  ASSERT_NO_FATAL_FAILURE(Kill(GatewayName(0)));
  ASSERT_NO_FATAL_FAILURE(StartGateway(0));
  ASSERT_TRUE(served_again(6)) << "billing did not come back for the gateways";

  // More requests through both gateways, then both connectors die under them.
  double granted = HoldsGranted();
  launch(kWave1 + kOutage, kWave1 + kOutage + kWave2);
  EXPECT_TRUE(WaitFor([&] { return HoldsGranted() >= granted + kWave2; }, 60)) << "wave 2 was not admitted";
  Pause(1500);
  for (int r = 0; r < kReplicas; ++r) ASSERT_NO_FATAL_FAILURE(Kill(ServiceName("provider-connector", r)));
  Pause(500);
  for (int r = 0; r < kReplicas; ++r) ASSERT_NO_FATAL_FAILURE(StartService("provider-connector", r));

  for (auto& t : clients)
    if (t.joinable()) t.join();
  // The system serves again after it all, and every settlement the gateways owe reaches
  // the ledger.
  EXPECT_TRUE(served_again(6)) << "not serving after the connectors restarted";
  EXPECT_TRUE(WaitFor(
      [&] {
        for (int g = 0; g < kGateways; ++g)
          if (GatewayMetric(g, "nexusflow_gateway_settlements_pending") != 0) return false;
        return true;
      },
      90))
      << "settlements still pending in an outbox";
  EXPECT_GT(GatewayMetric(0, "nexusflow_gateway_settlements_recovered_total{state=\"started\"}"), 0)
      << "the killed gateway left no stream in its outbox";

  // The ledger's side.
  auto records = Usage(account);
  std::map<std::string, std::vector<billing::UsageRecord>> by_key;
  std::set<std::string> request_ids;
  int64_t sum = 0;
  for (const auto& rec : records) {
    by_key[rec.key_id()].push_back(rec);
    EXPECT_TRUE(request_ids.insert(rec.request_id()).second) << "charged twice: " << rec.request_id();
    ASSERT_TRUE(kPrices.count(rec.model())) << rec.model();
    EXPECT_EQ(rec.price().input_nano_usd_per_mtok(), kPrices.at(rec.model()).first);
    EXPECT_EQ(rec.price().output_nano_usd_per_mtok(), kPrices.at(rec.model()).second);
    EXPECT_EQ(rec.cost_nano_usd(), ExpectedCost(rec.model(), rec.usage().input_tokens(), rec.usage().output_tokens()))
        << rec.request_id();
    sum += rec.cost_nano_usd();
  }
  int whole = 0, partial = 0, failed = 0, cut = 0;
  for (const auto& c : calls) {
    const auto& recs = by_key[c.key_id];
    std::string what = c.text + " -> HTTP " + std::to_string(c.ex.status) + " curl " + std::to_string(c.ex.code) +
                       ", " + std::to_string(c.answer.words) + " words";
    std::string request_id = c.ex.header("x-request-id");
    if (c.answer.whole) {
      // The whole answer: charged once, exactly the usage its client was told.
      ++whole;
      ASSERT_EQ(recs.size(), 1u) << what;
      EXPECT_EQ(recs[0].request_id(), request_id) << what;
      EXPECT_EQ(recs[0].usage().input_tokens(), c.answer.prompt_tokens) << what;
      EXPECT_EQ(recs[0].usage().output_tokens(), c.answer.completion_tokens) << what;
      EXPECT_EQ(c.answer.completion_tokens, c.answer.words) << what;
    } else if (c.answer.words > 0) {
      // Part of an answer (hung up, cut by a killed gateway or connector, upstream error):
      // charged once, at least for what arrived.
      ++partial;
      ASSERT_EQ(recs.size(), 1u) << what;
      EXPECT_EQ(recs[0].request_id(), request_id) << what;
      EXPECT_GE(recs[0].usage().output_tokens(), c.answer.words) << what;
      EXPECT_GT(recs[0].usage().input_tokens(), 0) << what;
    } else if (c.ex.code == CURLE_OK && (c.ex.status >= 400 || c.answer.error_event)) {
      // Failed before any output, and told so: nothing charged.
      ++failed;
      EXPECT_TRUE(recs.empty()) << what << " was charged: " << recs[0].DebugString();
    } else {
      // The connection died before any output reached the client (a killed gateway): the
      // gateway may have committed the charge just before, never twice.
      ++cut;
      EXPECT_LE(recs.size(), 1u) << what;
    }
  }
  std::set<std::string> keys;
  for (const auto& c : calls) keys.insert(c.key_id);
  for (const auto& [key_id, recs] : by_key) EXPECT_TRUE(keys.count(key_id)) << "a record of an unknown key " << key_id;
  // Requests made while billing was down were refused, in the caller's protocol.
  for (int i = kWave1; i < kWave1 + kOutage; ++i) {
    EXPECT_EQ(calls[i].ex.status, 503) << calls[i].ex.body;
    EXPECT_NE(calls[i].ex.body.find("service_unavailable"), std::string::npos) << calls[i].ex.body;
  }
  std::cerr << "answers: " << whole << " whole, " << partial << " partial, " << failed << " failed before output, "
            << cut << " cut before output; " << records.size() << " usage records\n";
  // Each kind of outcome happened.
  EXPECT_GT(whole, 0);
  EXPECT_GT(partial, 0);
  EXPECT_GT(failed, kOutage);

  // Money: the balance dropped by exactly the records' sum; the ledger is consistent.
  EXPECT_EQ(before - Balance(account).balance_nano_usd(), sum);
  EXPECT_EQ(VerifyLedger(), 0) << "nexusflow ledger verify found the ledger inconsistent";
}

TEST_F(ScaleCrashTest, TokensPerMinuteAcrossTwoGatewaysAndLimitersNeverAdmitMoreThanTheLimit) {
  ASSERT_NO_FATAL_FAILURE(StartCluster());
  std::string account = CreateAccount("scale-tpm", "10.00");
  ASSERT_FALSE(account.empty());
  constexpr int64_t kLimit = 3000;  // tokens per minute, the key's own
  Key key = CreateKey(account, "unlimited", {{"tpm", kLimit}});
  ASSERT_FALSE(key.id.empty());

  // Requests of one size, half streamed: a prompt in Chinese (a token a character, as
  // tokenizers count it: more than a guess of four bytes a token) and exactly max_tokens
  // words.
  constexpr int kRequests = 120, kWords = 40;
  struct Tpm {
    bool stream;
    Exchange ex;
  };
  std::vector<Tpm> calls(kRequests);
  std::vector<std::thread> clients;
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kRequests; ++i) {
    clients.emplace_back([&, i] {
      char text[96];
      snprintf(text, sizeof text, "你好世界你好世界 %03d [mock:words=%d]", i, kWords);
      calls[i].stream = i % 2 == 1;
      calls[i].ex = Http("POST", "/v1/chat/completions", ChatBody(calls[i].stream, kWords, text),
                         {"Authorization: Bearer " + key.secret});
    });
  }
  for (auto& t : clients) t.join();
  auto span = std::chrono::steady_clock::now() - start;

  int admitted = 0, denied = 0;
  int64_t most_remaining = -1;  // x-ratelimit-remaining-tokens of the burst's first admission
  for (const auto& c : calls) {
    if (c.ex.status == 200) {
      ++admitted;
      Answer a = c.stream ? ReadStream(c.ex.body) : ReadJson(c.ex.body);
      EXPECT_TRUE(a.whole) << c.ex.body;
      most_remaining = std::max<int64_t>(most_remaining, std::atoll(c.ex.header("x-ratelimit-remaining-tokens").c_str()));
      continue;
    }
    ++denied;
    EXPECT_EQ(c.ex.status, 429) << c.ex.body;
    EXPECT_NE(c.ex.body.find("tokens per minute"), std::string::npos) << c.ex.body;
    EXPECT_GE(std::atoi(c.ex.header("retry-after").c_str()), 1) << c.ex.body;
  }
  EXPECT_GT(admitted, 0);
  EXPECT_GT(denied, 0) << "the burst never reached the limit";
  // The burst went through both gateways, and each asked both limiters.
  for (int g = 0; g < kGateways; ++g)
    EXPECT_GT(GatewayMetric(g, "nexusflow_gateway_http_requests_total{code=\"200\",route=\"chat_completions\"}") +
                  GatewayMetric(g, "nexusflow_gateway_http_requests_total{code=\"429\",route=\"chat_completions\"}"),
              0)
        << GatewayName(g) << " took no part";
  for (int r = 0; r < kReplicas; ++r)
    EXPECT_GT(MetricValue(Metrics(ServiceMetricsPort("rate-limiter", r)),
                          "nexusflow_grpc_server_handled_total{code=\"OK\",method=\"Acquire\","
                          "service=\"nexusflow.ratelimit.v1.RateLimiterService\"}"),
              0)
        << ServiceName("rate-limiter", r) << " took no part";

  // Counted from the ledger: what the admitted requests used.
  auto records = Usage(account);
  ASSERT_EQ(records.size(), static_cast<size_t>(admitted));
  int64_t tokens = 0, each = 0;
  for (const auto& r : records) {
    EXPECT_EQ(r.key_id(), key.id);
    int64_t used = r.usage().input_tokens() + r.usage().cache_read_tokens() + r.usage().cache_write_tokens() +
                   r.usage().output_tokens();
    EXPECT_EQ(r.usage().output_tokens(), kWords);
    if (each == 0) each = used;
    EXPECT_EQ(used, each) << "requests of one size";
    tokens += used;
  }
  int64_t counted = kLimit - most_remaining;  // what the limiter counted for one request
  std::cerr << admitted << " of " << kRequests << " admitted, " << each << " tokens each (counted " << counted
            << " at admission), " << tokens << " in all; limit " << kLimit << "\n";
  // Every admission lies within the burst; each 60 s of it admits at most the limit. (The
  // burst takes a second or two: one window.)
  int64_t windows = std::chrono::duration_cast<std::chrono::seconds>(span).count() / 60 + 1;
  EXPECT_LE(tokens, kLimit * windows) << admitted << " requests of " << each << " tokens";
  // A request is admitted at no less than it uses, and as many are admitted as fit by that.
  EXPECT_GE(counted, each);
  EXPECT_GE(admitted, kLimit / counted);
  EXPECT_EQ(VerifyLedger(), 0);
}

TEST_F(ScaleCrashTest, FailClosedAnswers503InTheCallersProtocolWhileRedisIsDownAndLimitsResume) {
  setenv("NEXUSFLOW_RATE_LIMITER_REDIS_FAILURE", "closed", 1);
  ASSERT_NO_FATAL_FAILURE(StartCluster());
  std::string account = CreateAccount("scale-fail-closed", "10.00");
  ASSERT_FALSE(account.empty());
  const int64_t before = Balance(account).balance_nano_usd();
  Key free = CreateKey(account, "free");  // 10 requests a minute
  Key probe = CreateKey(account, "unlimited");
  ASSERT_FALSE(free.id.empty() || probe.id.empty());
  int n = 0;
  auto chat = [&](const Key& k, bool stream = false) {
    return Http("POST", "/v1/chat/completions",
                ChatBody(stream, 5, "closed " + std::to_string(++n) + " [mock:words=2]"),
                {"Authorization: Bearer " + k.secret});
  };

  // Redis up: the free key's ten, then 429 naming the limit.
  for (int i = 0; i < 10; ++i) {
    auto r = chat(free);
    ASSERT_EQ(r.status, 200) << "curl " << r.code << ": " << r.body;
  }
  auto over = chat(free);
  EXPECT_EQ(over.status, 429) << over.body;
  EXPECT_NE(over.body.find("requests per minute"), std::string::npos) << over.body;
  EXPECT_FALSE(over.header("retry-after").empty());
  EXPECT_EQ(Usage(account).size(), 10u);

  // Streams admitted before Redis goes: they run to their end, and are charged.
  constexpr int kStreams = 8;
  std::vector<Exchange> streams(kStreams);
  std::atomic<int> streaming{0};
  std::vector<std::thread> clients;
  struct JoinAll {
    std::vector<std::thread>& threads;
    ~JoinAll() {
      for (auto& t : threads)
        if (t.joinable()) t.join();
    }
  } join_all{clients};
  for (int i = 0; i < kStreams; ++i) {
    clients.emplace_back([&, i] {
      bool counted = false;
      streams[i] = Http("POST", "/v1/chat/completions",
                        ChatBody(true, 100, "admitted " + std::to_string(i) + " [mock:words=40][mock:chunk-delay=100]"),
                        {"Authorization: Bearer " + probe.secret}, 60, [&](const std::string& body) {
                          if (!counted && ReadStream(body).words > 0) counted = true, ++streaming;
                          return true;
                        });
    });
  }
  ASSERT_TRUE(WaitFor([&] { return streaming == kStreams; }, 30)) << "the streams did not start";

  // Redis down: every request, whatever its key and protocol, is refused with 503 and a
  // retry-after, in the error shape of its protocol; none is charged. Several of each, so
  // both gateways and both limiters answer.
  StopRedis();
  auto parse = [](const Exchange& ex) {
    boost::system::error_code ec;
    json::value v = json::parse(ex.body, ec);
    return ec || !v.is_object() ? json::value() : v;
  };
  for (int round = 0; round < 4; ++round) {
    for (const Key* k : {&free, &probe}) {
      for (bool stream : {false, true}) {
        auto r = chat(*k, stream);
        EXPECT_EQ(r.status, 503) << r.body;
        EXPECT_EQ(r.header("retry-after"), "1") << r.body;
        json::value v = parse(r);
        ASSERT_TRUE(v.is_object()) << r.body;
        EXPECT_EQ(v.at("error").at("code"), "service_unavailable") << r.body;
        EXPECT_EQ(v.at("error").at("type"), "server_error") << r.body;
      }
      auto anthropic = Http(
          "POST", "/v1/messages",
          R"({"model":"claude-haiku-4-5","max_tokens":5,"messages":[{"role":"user","content":"hi [mock:words=2]"}]})",
          {"x-api-key: " + k->secret, "anthropic-version: 2023-06-01"});
      EXPECT_EQ(anthropic.status, 503) << anthropic.body;
      EXPECT_EQ(anthropic.header("retry-after"), "1") << anthropic.body;
      json::value a = parse(anthropic);
      ASSERT_TRUE(a.is_object()) << anthropic.body;
      EXPECT_EQ(a.at("type"), "error") << anthropic.body;
      EXPECT_EQ(a.at("error").at("type"), "overloaded_error") << anthropic.body;
      auto gemini = Http("POST", "/v1beta/models/gemini-2.5-flash:generateContent",
                         R"({"contents":[{"role":"user","parts":[{"text":"hi [mock:words=2]"}]}]})",
                         {"x-goog-api-key: " + k->secret});
      EXPECT_EQ(gemini.status, 503) << gemini.body;
      EXPECT_EQ(gemini.header("retry-after"), "1") << gemini.body;
      json::value g = parse(gemini);
      ASSERT_TRUE(g.is_object()) << gemini.body;
      EXPECT_EQ(g.at("error").at("code"), 503) << gemini.body;
      EXPECT_EQ(g.at("error").at("status"), "UNAVAILABLE") << gemini.body;
    }
  }
  double unavailable = 0;
  for (int r = 0; r < kReplicas; ++r) {
    std::string page = Metrics(ServiceMetricsPort("rate-limiter", r));
    for (const char* plan : {"free", "unlimited"}) {
      double v = MetricValue(page, std::string("nexusflow_ratelimit_decisions_total{outcome=\"unavailable\",plan=\"") +
                                       plan + "\"}");
      if (v > 0) unavailable += v;
    }
  }
  EXPECT_EQ(unavailable, 4 * 2 * 4) << "every refusal is counted as unavailable";
  for (auto& t : clients) t.join();
  for (const auto& r : streams) {
    EXPECT_EQ(r.status, 200);
    EXPECT_TRUE(ReadStream(r.body).whole) << r.body;
  }
  EXPECT_EQ(Usage(account).size(), 10u + kStreams) << "a refused request was charged, or an admitted one not";

  // Redis back (empty: the minute starts afresh). Once every gateway and limiter reaches
  // it again, the free key gets exactly its ten, then 429.
  ASSERT_TRUE(StartRedis());
  ASSERT_TRUE(WaitFor(
      [&] {
        for (int i = 0; i < 8; ++i)
          if (chat(probe).status != 200) return false;
        return true;
      },
      30))
      << "requests are still refused with Redis back";
  // (A limiter still reconnecting, its backoff at most 2 s, answers 503: asked again.)
  int ok = 0, limited = 0;
  std::string seen;
  for (int i = 0; i < 100 && ok + limited < 12; ++i) {
    auto r = chat(free);
    if (r.status == 200) ++ok;
    if (r.status == 429) ++limited;
    if (r.status == 503) Pause(100);
    seen += std::to_string(r.status) + (r.status == 200 ? "" : " " + r.body) + "\n";
  }
  EXPECT_EQ(ok, 10) << seen;
  EXPECT_EQ(limited, 2) << seen;

  auto records = Usage(account);
  int64_t sum = 0;
  for (const auto& r : records) sum += r.cost_nano_usd();
  EXPECT_EQ(before - Balance(account).balance_nano_usd(), sum);
  EXPECT_EQ(VerifyLedger(), 0);
}

TEST_F(ScaleCrashTest, ALeaseReleasedThroughALimiterThatCannotReachRedisIsReleasedThroughTheOther) {
  ASSERT_NO_FATAL_FAILURE(StartCluster());
  // The second limiter loses its Redis (an address where none listens) and stays up: the
  // gateways keep calling it in turn with the first.
  ASSERT_NO_FATAL_FAILURE(Kill(ServiceName("rate-limiter", 1)));
  ASSERT_NO_FATAL_FAILURE(StartService("rate-limiter", 1,
                                       {{"NEXUSFLOW_RATE_LIMITER_STORE", "redis://127.0.0.1:" +
                                                                             std::to_string(kRedisPort + 1)}}));
  std::string account = CreateAccount("scale-release", "10.00");
  ASSERT_FALSE(account.empty());
  Key key = CreateKey(account, "unlimited", {{"concurrency", 2}});
  Key warm = CreateKey(account, "unlimited", {{"concurrency", 1000}});
  ASSERT_FALSE(key.id.empty() || warm.id.empty());
  // Until the gateways reach the restarted limiter again (it admits without Redis).
  auto fail_open = [] {
    return MetricValue(Metrics(ServiceMetricsPort("rate-limiter", 1)), "nexusflow_ratelimit_fail_open_total");
  };
  ASSERT_TRUE(WaitFor(
      [&] {
        Http("POST", "/v1/chat/completions", ChatBody(false, 5, "warm [mock:words=2]"),
             {"Authorization: Bearer " + warm.secret});
        return fail_open() > 0;
      },
      30))
      << "the gateways never called the second limiter";
  double warmed = fail_open();

  // One request at a time: never two in flight, so never over a concurrency of 2, however
  // many. (Admissions by the second limiter are not counted: fail-open.)
  std::string refused;
  for (int i = 0; i < 16; ++i) {
    auto r = Http("POST", "/v1/chat/completions", ChatBody(i % 2 == 1, 5, "one at a time [mock:words=2]"),
                  {"Authorization: Bearer " + key.secret});
    if (r.status != 200) refused += std::to_string(i) + ": " + std::to_string(r.status) + " " + r.body + "\n";
  }
  EXPECT_TRUE(refused.empty()) << refused;
  EXPECT_GT(fail_open(), warmed) << "the second limiter took no part";
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (argc < 5) {
    fprintf(stderr, "usage: scale_crash_test NEXUSFLOW MOCK_PROVIDER CONFIG TOOLS_LIB_DIR\n");
    return 2;
  }
  g_binary = argv[1];
  g_mock = argv[2];
  g_config = argv[3];
  g_tools_lib = argv[4];
  signal(SIGPIPE, SIG_IGN);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  return RUN_ALL_TESTS();
}
