#include "libs/rpc/internal_auth.h"

#include <grpcpp/server_context.h>
#include <openssl/crypto.h>

namespace nexusflow {
namespace {

std::string& Token() {
  static std::string token;
  return token;
}

}  // namespace

void SetInternalToken(const std::string& token) { Token() = token; }
const std::string& InternalToken() { return Token(); }

bool InternalCallAllowed(const grpc::CallbackServerContext* ctx) {
  const std::string& token = Token();
  if (token.empty()) return true;
  const auto& md = ctx->client_metadata();
  auto it = md.find(kInternalTokenHeader);
  if (it == md.end() || it->second.size() != token.size()) return false;
  return CRYPTO_memcmp(it->second.data(), token.data(), token.size()) == 0;
}

grpc::Status InternalCallRefused() {
  return grpc::Status(grpc::PERMISSION_DENIED,
                      "internal RPCs answer only to callers with the internal token (server.internal_token)");
}

}  // namespace nexusflow
