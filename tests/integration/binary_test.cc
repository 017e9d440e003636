// Starts the real nexusflow binary with single targets and checks what operators rely
// on: the gRPC health check, /metrics with RPC counters, config validation, and a clean
// stop on SIGTERM.
#include <gtest/gtest.h>

#include "tests/integration/http_get.h"
#include "tests/integration/ports.h"

#include <curl/curl.h>
#include <grpcpp/create_channel.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

#include "grpc/health/v1/health.grpc.pb.h"
#include "nexusflow/auth/v1/auth.grpc.pb.h"
#include "nexusflow/routing/v1/routing.grpc.pb.h"

namespace {

using nexusflow::testing::FreePort;
using nexusflow::testing::HttpGet;

std::string g_binary;


std::string TempDir() {
  char tmpl[] = "/tmp/nf-binary-test-XXXXXX";
  return mkdtemp(tmpl);
}

std::string WriteConfig(const std::string& dir) {
  std::string path = dir + "/nexusflow.yaml";
  std::ofstream(path) << "auth:\n  database: " << dir << "/auth.db\n"
                      << "billing_ledger:\n  database: " << dir << "/ledger.db\n";
  return path;
}

pid_t Spawn(const std::vector<std::string>& args) {
  pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

int WaitExit(pid_t pid, int seconds) {
  for (int i = 0; i < seconds * 10; ++i) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  return -2;
}

TEST(BinaryTest, AuthAloneAnswersHealthAndCountsRpcsInMetrics) {
  std::string dir = TempDir();
  int grpc_port = FreePort(), metrics_port = FreePort();
  pid_t pid = Spawn({g_binary, "--target=auth", "--config=" + WriteConfig(dir),
                     "--grpc-listen=127.0.0.1:" + std::to_string(grpc_port),
                     "--metrics-listen=127.0.0.1:" + std::to_string(metrics_port)});
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(grpc_port),
                                     grpc::InsecureChannelCredentials());
  ASSERT_TRUE(channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(20)));
  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::health::v1::HealthCheckResponse resp;
  for (int i = 0; i < 50; ++i) {
    grpc::ClientContext ctx;
    if (health->Check(&ctx, grpc::health::v1::HealthCheckRequest{}, &resp).ok() &&
        resp.status() == grpc::health::v1::HealthCheckResponse::SERVING)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);

  // One real RPC, then its counter shows on /metrics.
  auto auth = nexusflow::auth::v1::AuthService::NewStub(channel);
  grpc::ClientContext ctx;
  nexusflow::auth::v1::AuthenticateRequest req;
  req.set_key_sha256(std::string(32, 'x'));
  nexusflow::auth::v1::AuthenticateResponse out;
  EXPECT_EQ(auth->Authenticate(&ctx, req, &out).error_code(), grpc::UNAUTHENTICATED);
  std::string metrics = HttpGet("http://127.0.0.1:" + std::to_string(metrics_port) + "/metrics");
  EXPECT_NE(metrics.find("nexusflow_grpc_server_handled_total{code=\"UNAUTHENTICATED\",method=\"Authenticate\",service=\"nexusflow.auth.v1.AuthService\"} 1"),
            std::string::npos)
      << metrics.substr(0, 2000);
  EXPECT_NE(metrics.find("nexusflow_auth_authentications_total{result=\"unknown\"} 1"), std::string::npos);

  kill(pid, SIGTERM);
  EXPECT_EQ(WaitExit(pid, 20), 0);
}

// Internal gRPC is closed: with a token configured, a call without it is refused before
// any work (no key is created), the health check stays open, and the token opens the call.
// Without a token, only loopback may listen.
TEST(BinaryTest, InternalRpcsAnswerOnlyToTheToken) {
  std::string dir = TempDir();
  std::string token = "nf-internal-test-0123456789abcdef";
  std::string admin = "nf-admin-rpc-test-0123456789abcd";
  std::string config = dir + "/nexusflow.yaml";
  std::ofstream(config) << "server:\n  internal_token: \"" << token << "\"\n"
                        << "  admin_rpc_token: \"" << admin << "\"\n"
                        << "auth:\n  database: " << dir << "/auth.db\n";
  int grpc_port = FreePort();
  pid_t pid = Spawn({g_binary, "--target=auth", "--config=" + config,
                     "--grpc-listen=127.0.0.1:" + std::to_string(grpc_port),
                     "--metrics-listen=127.0.0.1:" + std::to_string(FreePort())});
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(grpc_port), grpc::InsecureChannelCredentials());
  ASSERT_TRUE(channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(20)));
  auto auth = nexusflow::auth::v1::AuthService::NewStub(channel);
  nexusflow::auth::v1::CreateKeyRequest create;
  create.set_account_id("acct_x");
  create.set_plan("default");
  nexusflow::auth::v1::CreateKeyResponse created;
  {
    grpc::ClientContext ctx;
    grpc::Status s = auth->CreateKey(&ctx, create, &created);
    EXPECT_EQ(s.error_code(), grpc::PERMISSION_DENIED) << s.error_message();
  }
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("x-nexusflow-internal-token", "nf-internal-test-wrong-token-000");
    EXPECT_EQ(auth->CreateKey(&ctx, create, &created).error_code(), grpc::PERMISSION_DENIED);
  }
  {
    // The internal token alone (what the connector, routing or the limiter hold) is not
    // the gateway: no admin RPC answers it.
    grpc::ClientContext ctx;
    ctx.AddMetadata("x-nexusflow-internal-token", token);
    grpc::Status s = auth->CreateKey(&ctx, create, &created);
    EXPECT_EQ(s.error_code(), grpc::PERMISSION_DENIED) << s.error_message();
  }
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("x-nexusflow-internal-token", token);
    ctx.AddMetadata("x-nexusflow-admin-token", "nf-admin-rpc-test-wrong-token-00");
    EXPECT_EQ(auth->CreateKey(&ctx, create, &created).error_code(), grpc::PERMISSION_DENIED);
  }
  {
    grpc::ClientContext ctx;
    nexusflow::auth::v1::ListKeysResponse keys;
    ctx.AddMetadata("x-nexusflow-internal-token", token);
    ctx.AddMetadata("x-nexusflow-admin-token", admin);
    ASSERT_TRUE(auth->ListKeys(&ctx, nexusflow::auth::v1::ListKeysRequest{}, &keys).ok());
    EXPECT_EQ(keys.keys_size(), 0) << "a refused CreateKey created a key";
  }
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("x-nexusflow-internal-token", token);
    ctx.AddMetadata("x-nexusflow-admin-token", admin);
    EXPECT_TRUE(auth->CreateKey(&ctx, create, &created).ok());
  }
  {
    // A non-admin RPC needs only the internal token.
    grpc::ClientContext ctx;
    ctx.AddMetadata("x-nexusflow-internal-token", token);
    nexusflow::auth::v1::AuthenticateResponse who;
    nexusflow::auth::v1::AuthenticateRequest req;
    req.set_key_sha256(std::string(32, 'x'));  // no such key: NOT_FOUND or UNAUTHENTICATED, not refused
    grpc::Status s = auth->Authenticate(&ctx, req, &who);
    EXPECT_NE(s.error_code(), grpc::PERMISSION_DENIED) << s.error_message();
  }
  {
    grpc::ClientContext ctx;
    auto reader = auth->WatchRevocations(&ctx, nexusflow::auth::v1::WatchRevocationsRequest{});
    nexusflow::auth::v1::RevocationEvent event;
    EXPECT_FALSE(reader->Read(&event));
    EXPECT_EQ(reader->Finish().error_code(), grpc::PERMISSION_DENIED);
  }
  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::health::v1::HealthCheckResponse resp;
  grpc::ClientContext hctx;
  EXPECT_TRUE(health->Check(&hctx, grpc::health::v1::HealthCheckRequest{}, &resp).ok());
  kill(pid, SIGTERM);
  EXPECT_EQ(WaitExit(pid, 20), 0);

  // No token: a listener beyond loopback is refused at start.
  pid_t open = Spawn({g_binary, "--target=auth", "--config=" + WriteConfig(dir),
                      "--grpc-listen=0.0.0.0:" + std::to_string(FreePort()),
                      "--metrics-listen=127.0.0.1:" + std::to_string(FreePort())});
  EXPECT_NE(WaitExit(open, 20), 0);
}

TEST(BinaryTest, CheckConfigRejectsUnknownKeysWithTheirPath) {
  std::string dir = TempDir();
  std::string path = dir + "/bad.yaml";
  std::ofstream(path) << "gateway:\n  admin_kye: x\n";
  std::string cmd = g_binary + " --check-config " + path + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof buf, p)) out += buf;
  int status = pclose(p);
  EXPECT_NE(WEXITSTATUS(status), 0);
  EXPECT_NE(out.find("gateway.admin_kye"), std::string::npos) << out;
  pid_t pid = Spawn({g_binary, "--target=nonsense", "--config=" + WriteConfig(dir)});
  EXPECT_EQ(WaitExit(pid, 10), 2);
}

std::string CatalogConfig(const std::string& dir, const std::vector<std::string>& models) {
  std::string yaml = "auth:\n  database: " + dir + "/auth.db\n" +
                     "provider_connector:\n  providers:\n    p: {kind: openai, base_url: \"http://127.0.0.1:1/v1\"}\n" +
                     "routing:\n  models:\n";
  for (const auto& m : models)
    yaml += "    - {id: " + m + ", pricing: {input: \"1\"}, deployments: [{provider: p}]}\n";
  return yaml;
}

TEST(BinaryTest, RoutingReloadsTheCatalogWhenTheFileChanges) {
  std::string dir = TempDir();
  std::string path = dir + "/nexusflow.yaml";
  std::ofstream(path) << CatalogConfig(dir, {"m1"});
  int grpc_port = FreePort();
  pid_t pid = Spawn({g_binary, "--target=routing", "--config=" + path,
                     "--grpc-listen=127.0.0.1:" + std::to_string(grpc_port)});
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(grpc_port),
                                     grpc::InsecureChannelCredentials());
  ASSERT_TRUE(channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(20)));
  auto routing = nexusflow::routing::v1::RoutingService::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  auto reader = routing->WatchCatalog(&ctx, nexusflow::routing::v1::WatchCatalogRequest{});
  nexusflow::routing::v1::CatalogSnapshot snap;
  ASSERT_TRUE(reader->Read(&snap));
  ASSERT_EQ(snap.models_size(), 1);

  // A broken file is ignored; the next good one is served.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  std::ofstream(path) << "routing:\n  modelz: []\n";
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  std::ofstream(path) << CatalogConfig(dir, {"m1", "m2"});
  ASSERT_TRUE(reader->Read(&snap));
  EXPECT_EQ(snap.models_size(), 2);
  EXPECT_EQ(snap.models(1).id(), "m2");
  ctx.TryCancel();
  kill(pid, SIGTERM);
  EXPECT_EQ(WaitExit(pid, 20), 0);
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (argc < 2) {
    fprintf(stderr, "usage: binary_test PATH_TO_NEXUSFLOW\n");
    return 2;
  }
  g_binary = argv[1];
  return RUN_ALL_TESTS();
}
