#include <gtest/gtest.h>

#include <grpcpp/client_context.h>

#include "libs/common/ids.h"
#include "libs/rpc/server_host.h"
#include "services/auth/auth_service.h"

namespace nexusflow::auth {
namespace {

class AuthServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto store = OpenSqliteKeyStore(":memory:");
    ASSERT_TRUE(store.ok()) << store.status();
    service_ = std::make_unique<AuthService>(std::move(*store), [this] { return now_; });
    host_.AddService(service_.get());
    ASSERT_TRUE(host_.Start("127.0.0.1:0").ok());
    stub_ = pb::AuthService::NewStub(host_.InProcessChannel());
  }

  grpc::Status Authenticate(const std::string& secret, pb::AuthenticateResponse* resp) {
    grpc::ClientContext ctx;
    pb::AuthenticateRequest req;
    req.set_key_sha256(Sha256(secret));
    return stub_->Authenticate(&ctx, req, resp);
  }

  pb::CreateKeyResponse Create(const std::string& secret = "", int64_t expires = 0) {
    grpc::ClientContext ctx;
    pb::CreateKeyRequest req;
    req.set_account_id("acct_1");
    req.set_name("test");
    req.set_plan("tiny");
    req.add_allowed_models("m1");
    if (!secret.empty()) req.set_secret(secret);
    if (expires) req.mutable_expires_at()->set_seconds(expires);
    pb::CreateKeyResponse resp;
    EXPECT_TRUE(stub_->CreateKey(&ctx, req, &resp).ok());
    return resp;
  }

  int64_t now_ = 1'700'000'000;
  std::unique_ptr<AuthService> service_;
  ServerHost host_;
  std::unique_ptr<pb::AuthService::Stub> stub_;
};

TEST_F(AuthServiceTest, CreatedKeyAuthenticatesToItsIdentity) {
  auto created = Create();
  EXPECT_EQ(created.secret().rfind("sk-nf-", 0), 0u);
  pb::AuthenticateResponse resp;
  ASSERT_TRUE(Authenticate(created.secret(), &resp).ok());
  EXPECT_EQ(resp.identity().key_id(), created.key().id());
  EXPECT_EQ(resp.identity().account_id(), "acct_1");
  EXPECT_EQ(resp.identity().plan(), "tiny");
  ASSERT_EQ(resp.identity().allowed_models_size(), 1);
}

TEST_F(AuthServiceTest, UnknownKeyIsUnauthenticated) {
  pb::AuthenticateResponse resp;
  EXPECT_EQ(Authenticate("sk-nf-nope", &resp).error_code(), grpc::UNAUTHENTICATED);
}

TEST_F(AuthServiceTest, ImportedSecretIsUsedAndCannotBeImportedTwice) {
  Create("sk-demo-0123456789abcdef");
  pb::AuthenticateResponse resp;
  EXPECT_TRUE(Authenticate("sk-demo-0123456789abcdef", &resp).ok());
  grpc::ClientContext ctx;
  pb::CreateKeyRequest req;
  req.set_account_id("acct_2");
  req.set_secret("sk-demo-0123456789abcdef");
  pb::CreateKeyResponse out;
  EXPECT_EQ(stub_->CreateKey(&ctx, req, &out).error_code(), grpc::ALREADY_EXISTS);
}

TEST_F(AuthServiceTest, ExpiredKeyIsRejected) {
  auto created = Create("", now_ + 10);
  pb::AuthenticateResponse resp;
  EXPECT_TRUE(Authenticate(created.secret(), &resp).ok());
  now_ += 11;
  EXPECT_EQ(Authenticate(created.secret(), &resp).error_code(), grpc::UNAUTHENTICATED);
}

TEST_F(AuthServiceTest, RevocationIsRejectedAndStreamedToWatchers) {
  auto created = Create();
  grpc::ClientContext watch_ctx;
  auto reader = stub_->WatchRevocations(&watch_ctx, pb::WatchRevocationsRequest{});
  pb::RevocationEvent event;
  ASSERT_TRUE(reader->Read(&event));  // keep-alive
  EXPECT_TRUE(event.key_sha256().empty());

  grpc::ClientContext ctx;
  pb::RevokeKeyRequest req;
  req.set_key_id(created.key().id());
  pb::RevokeKeyResponse revoked;
  ASSERT_TRUE(stub_->RevokeKey(&ctx, req, &revoked).ok());
  EXPECT_EQ(revoked.key().status(), pb::KEY_STATUS_REVOKED);

  ASSERT_TRUE(reader->Read(&event));
  EXPECT_EQ(event.key_sha256(), Sha256(created.secret()));
  pb::AuthenticateResponse resp;
  EXPECT_EQ(Authenticate(created.secret(), &resp).error_code(), grpc::UNAUTHENTICATED);
  watch_ctx.TryCancel();
}

TEST_F(AuthServiceTest, ListShowsKeysWithoutSecrets) {
  Create();
  Create();
  grpc::ClientContext ctx;
  pb::ListKeysRequest req;
  req.set_account_id("acct_1");
  pb::ListKeysResponse resp;
  ASSERT_TRUE(stub_->ListKeys(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.keys_size(), 2);
}

}  // namespace
}  // namespace nexusflow::auth
