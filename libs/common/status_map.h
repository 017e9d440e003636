#pragma once
// The one table that maps status codes between Abseil, gRPC and HTTP, and renders an
// HTTP error in each public protocol's error body (PROTOCOLS.md §0).
#include <string>
#include <string_view>

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace nexusflow {

enum class ApiProtocol { kOpenAI, kAnthropic, kGemini, kNexusFlow };

grpc::StatusCode ToGrpcCode(absl::StatusCode code);
absl::StatusCode FromGrpcCode(grpc::StatusCode code);
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// Default HTTP status for a code. Where one code means different things to the caller
// (FAILED_PRECONDITION from billing is 402), the caller picks the status itself.
int HttpStatusFor(absl::StatusCode code);

// An error as the HTTP caller will see it. (Not an aggregate on purpose: GCC 12 destroys
// an aggregate temporary twice when it is built inside a co_await expression.)
struct HttpError {
  HttpError() = default;
  HttpError(int status, std::string message, std::string param = "", std::string code = "")
      : status(status), message(std::move(message)), param(std::move(param)), code(std::move(code)) {}
  int status = 500;
  std::string message;
  std::string param;  // offending parameter, when known (OpenAI "param")
  std::string code;   // overrides the table's code (OpenAI "code"), e.g. "model_not_found"
};

HttpError HttpErrorFrom(const absl::Status& status);

// The body of `error` in `protocol`'s error shape.
std::string ErrorBody(ApiProtocol protocol, const HttpError& error, std::string_view request_id);

// Reason phrase-free status names used in logs and metrics labels, e.g. "NOT_FOUND".
std::string_view GrpcCodeName(grpc::StatusCode code);

}  // namespace nexusflow
