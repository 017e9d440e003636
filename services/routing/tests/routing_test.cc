#include <gtest/gtest.h>

#include <grpcpp/client_context.h>

#include "libs/rpc/server_host.h"
#include "services/routing/routing_service.h"

namespace nexusflow::routing {
namespace {

Config::Routing TwoModels() {
  Config::Routing r;
  ModelConfig a;
  a.id = "chat-a";
  a.protocols = {"openai"};
  a.capabilities = {"chat", "tools"};
  a.price = {3'000'000'000, 15'000'000'000, 300'000'000, 3'750'000'000};
  a.deployments = {{"p1", "up-a", 1, 1}, {"p2", "up-a2", 1, 0}};
  ModelConfig e;
  e.id = "embed";
  e.capabilities = {"embedding"};
  e.protocols = {"openai"};
  e.deployments = {{"p1", "embed", 1, 0}};
  r.models = {a, e};
  return r;
}

class RoutingServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    service_ = std::make_unique<RoutingService>(TwoModels());
    host_.AddService(service_.get());
    ASSERT_TRUE(host_.Start("127.0.0.1:0").ok());
    stub_ = pb::RoutingService::NewStub(host_.InProcessChannel());
  }
  grpc::Status Resolve(const std::string& model, llm::v1::Protocol p, const std::string& cap,
                       pb::ResolveResponse* resp) {
    grpc::ClientContext ctx;
    pb::ResolveRequest req;
    req.set_model(model);
    req.set_protocol(p);
    req.set_capability(cap);
    return stub_->Resolve(&ctx, req, resp);
  }
  std::unique_ptr<RoutingService> service_;
  ServerHost host_;
  std::unique_ptr<pb::RoutingService::Stub> stub_;
};

TEST_F(RoutingServiceTest, ResolvesWithPriceAndDeploymentsByPriority) {
  pb::ResolveResponse resp;
  ASSERT_TRUE(Resolve("chat-a", llm::v1::PROTOCOL_OPENAI, "chat", &resp).ok());
  EXPECT_EQ(resp.model().price().input_nano_usd_per_mtok(), 3'000'000'000);
  ASSERT_EQ(resp.model().deployments_size(), 2);
  EXPECT_EQ(resp.model().deployments(0).provider(), "p2");  // priority 0 first
  EXPECT_EQ(resp.model().deployments(1).provider(), "p1");
}

TEST_F(RoutingServiceTest, UnknownModelIsNotFound) {
  pb::ResolveResponse resp;
  EXPECT_EQ(Resolve("nope", llm::v1::PROTOCOL_OPENAI, "chat", &resp).error_code(),
            grpc::NOT_FOUND);
}

TEST_F(RoutingServiceTest, ModelNotOnProtocolOrCapabilityIsFailedPrecondition) {
  pb::ResolveResponse resp;
  grpc::Status s = Resolve("chat-a", llm::v1::PROTOCOL_GEMINI, "chat", &resp);
  EXPECT_EQ(s.error_code(), grpc::FAILED_PRECONDITION);
  // The caller learns where the model is offered.
  EXPECT_NE(s.error_message().find("it is offered on: openai"), std::string::npos) << s.error_message();
  EXPECT_EQ(Resolve("embed", llm::v1::PROTOCOL_OPENAI, "chat", &resp).error_code(),
            grpc::FAILED_PRECONDITION);
}

TEST_F(RoutingServiceTest, WatchSendsSnapshotThenUpdates) {
  grpc::ClientContext ctx;
  auto reader = stub_->WatchCatalog(&ctx, pb::WatchCatalogRequest{});
  pb::CatalogSnapshot snap;
  ASSERT_TRUE(reader->Read(&snap));
  EXPECT_EQ(snap.models_size(), 2);
  auto config = TwoModels();
  config.models.pop_back();
  service_->Update(config);
  ASSERT_TRUE(reader->Read(&snap));
  EXPECT_EQ(snap.models_size(), 1);
  EXPECT_GT(snap.version(), 1);
  ctx.TryCancel();
}

TEST(CatalogTest, WeightsSpreadLoadAmongEqualPriority) {
  Config::Routing r;
  ModelConfig m;
  m.id = "m";
  m.deployments = {{"a", "m", 3, 0}, {"b", "m", 1, 0}};
  r.models = {m};
  Catalog c(Catalog::SnapshotFromConfig(r, 1));
  int first_a = 0;
  for (int i = 0; i < 4000; ++i)
    if (c.Resolve("m", llm::v1::PROTOCOL_UNSPECIFIED, "")->deployments(0).provider() == "a")
      ++first_a;
  EXPECT_GT(first_a, 2700);  // expected 3000
  EXPECT_LT(first_a, 3300);
}

}  // namespace
}  // namespace nexusflow::routing
