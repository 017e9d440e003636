#pragma once
// Internal gRPC is closed: every RPC of the five services answers only to callers that
// present the process's internal token (a Kubernetes Secret shared by the deployments) as
// the x-nexusflow-internal-token metadata. The admin RPCs (accounts, credits, keys) also
// need the gateway's own identity when one is configured (server.admin_rpc_token, as
// x-nexusflow-admin-token): a secret given to the gateway, which presents it, and to auth and
// billing-ledger, which check it — never to routing, the rate limiter or the connector, so
// none of those can credit an account or make a key. The standard health service stays
// open for probes. Channels made by DialTarget and ServerHost::InProcessChannel send the
// token. With no token configured every call is allowed, and ServerHost then listens on
// loopback only.
//
// Each handler starts with NF_REQUIRE_INTERNAL (unary) or NF_REQUIRE_INTERNAL_STREAM
// (server streaming): the check happens before any work, and a refused call ends with
// PERMISSION_DENIED.
#include <string>

#include <grpcpp/support/server_callback.h>

#include "libs/rpc/stream_writer.h"

namespace nexusflow {

inline constexpr char kInternalTokenHeader[] = "x-nexusflow-internal-token";
inline constexpr char kAdminTokenHeader[] = "x-nexusflow-admin-token";

// Set once at start (before serving).
void SetInternalToken(const std::string& token);
const std::string& InternalToken();

// The call carries the token (compared in constant time), or none is required.
bool InternalCallAllowed(const grpc::CallbackServerContext* ctx);

grpc::Status InternalCallRefused();

// The admin identity: set once at start; empty = admin RPCs need only the internal token.
void SetAdminRpcToken(const std::string& token);
const std::string& AdminRpcToken();
// An internal call that also carries the admin token (when one is configured).
bool AdminCallAllowed(const grpc::CallbackServerContext* ctx);
grpc::Status AdminCallRefused();

template <class T>
grpc::ServerWriteReactor<T>* RefuseStream() {
  auto writer = QueuedWriter<T>::Create();
  writer->Finish(InternalCallRefused());
  return writer.get();
}

}  // namespace nexusflow

#define NF_REQUIRE_INTERNAL(ctx)                                     \
  do {                                                               \
    if (!::nexusflow::InternalCallAllowed(ctx)) {                    \
      auto* refused_ = (ctx)->DefaultReactor();                      \
      refused_->Finish(::nexusflow::InternalCallRefused());          \
      return refused_;                                               \
    }                                                                \
  } while (0)

// For the admin RPCs: the internal token and the gateway's admin identity.
#define NF_REQUIRE_ADMIN(ctx)                                        \
  do {                                                               \
    if (!::nexusflow::InternalCallAllowed(ctx)) {                    \
      auto* refused_ = (ctx)->DefaultReactor();                      \
      refused_->Finish(::nexusflow::InternalCallRefused());          \
      return refused_;                                               \
    }                                                                \
    if (!::nexusflow::AdminCallAllowed(ctx)) {                       \
      auto* refused_ = (ctx)->DefaultReactor();                      \
      refused_->Finish(::nexusflow::AdminCallRefused());             \
      return refused_;                                               \
    }                                                                \
  } while (0)

#define NF_REQUIRE_INTERNAL_STREAM(ctx, Message)                      \
  do {                                                                \
    if (!::nexusflow::InternalCallAllowed(ctx)) return ::nexusflow::RefuseStream<Message>(); \
  } while (0)
