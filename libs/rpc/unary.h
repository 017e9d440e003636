#pragma once
// Ends a callback-API unary RPC with an absl::Status.
#include <grpcpp/support/server_callback.h>

#include "libs/common/status_map.h"

namespace nexusflow {

inline grpc::ServerUnaryReactor* FinishUnary(grpc::CallbackServerContext* ctx,
                                             const absl::Status& status) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace nexusflow
