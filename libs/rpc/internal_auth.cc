#include "libs/rpc/internal_auth.h"

#include <grpcpp/server_context.h>
#include <openssl/crypto.h>

namespace nexusflow {
namespace {

std::string& Token() {
  static std::string token;
  return token;
}

std::string& AdminToken() {
  static std::string token;
  return token;
}

bool Carries(const grpc::CallbackServerContext* ctx, const char* header, const std::string& token) {
  const auto& md = ctx->client_metadata();
  auto it = md.find(header);
  if (it == md.end() || it->second.size() != token.size()) return false;
  return CRYPTO_memcmp(it->second.data(), token.data(), token.size()) == 0;
}

}  // namespace

void SetInternalToken(const std::string& token) { Token() = token; }
const std::string& InternalToken() { return Token(); }

bool InternalCallAllowed(const grpc::CallbackServerContext* ctx) {
  const std::string& token = Token();
  return token.empty() || Carries(ctx, kInternalTokenHeader, token);
}

void SetAdminRpcToken(const std::string& token) { AdminToken() = token; }
const std::string& AdminRpcToken() { return AdminToken(); }

bool AdminCallAllowed(const grpc::CallbackServerContext* ctx) {
  const std::string& token = AdminToken();
  return token.empty() || Carries(ctx, kAdminTokenHeader, token);
}

grpc::Status AdminCallRefused() {
  return grpc::Status(grpc::PERMISSION_DENIED,
                      "admin RPCs answer only to the gateway (server.admin_rpc_token)");
}

grpc::Status InternalCallRefused() {
  return grpc::Status(grpc::PERMISSION_DENIED,
                      "internal RPCs answer only to callers with the internal token (server.internal_token)");
}

}  // namespace nexusflow
