#include "libs/common/status_map.h"

#include <boost/json.hpp>

namespace nexusflow {
namespace json = boost::json;

grpc::StatusCode ToGrpcCode(absl::StatusCode code) {
  // Abseil and gRPC share the canonical code numbers.
  return static_cast<grpc::StatusCode>(static_cast<int>(code));
}

absl::StatusCode FromGrpcCode(grpc::StatusCode code) {
  return static_cast<absl::StatusCode>(static_cast<int>(code));
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(ToGrpcCode(status.code()), std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(FromGrpcCode(status.error_code()), status.error_message());
}

int HttpStatusFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk: return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition: return 400;
    case absl::StatusCode::kUnauthenticated: return 401;
    case absl::StatusCode::kPermissionDenied: return 403;
    case absl::StatusCode::kNotFound: return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted: return 409;
    case absl::StatusCode::kResourceExhausted: return 429;
    case absl::StatusCode::kCancelled: return 499;
    case absl::StatusCode::kUnimplemented: return 501;
    case absl::StatusCode::kUnavailable: return 503;
    case absl::StatusCode::kDeadlineExceeded: return 504;
    default: return 500;
  }
}

HttpError HttpErrorFrom(const absl::Status& status) {
  return HttpError{HttpStatusFor(status.code()), std::string(status.message()), "", ""};
}

namespace {

struct Row {
  const char* openai_type;
  const char* openai_code;  // nullptr → JSON null
  const char* anthropic_type;
  const char* gemini_status;
};

Row RowFor(int status) {
  switch (status) {
    case 400: return {"invalid_request_error", nullptr, "invalid_request_error", "INVALID_ARGUMENT"};
    case 401: return {"invalid_request_error", "invalid_api_key", "authentication_error", "UNAUTHENTICATED"};
    case 402: return {"insufficient_quota", "insufficient_balance", "billing_error", "FAILED_PRECONDITION"};
    case 403: return {"permission_error", nullptr, "permission_error", "PERMISSION_DENIED"};
    case 404: return {"invalid_request_error", "not_found", "not_found_error", "NOT_FOUND"};
    case 405: return {"invalid_request_error", "method_not_allowed", "invalid_request_error", "INVALID_ARGUMENT"};
    case 409: return {"invalid_request_error", "conflict", "invalid_request_error", "ALREADY_EXISTS"};
    case 413: return {"invalid_request_error", "request_too_large", "request_too_large", "INVALID_ARGUMENT"};
    case 429: return {"rate_limit_error", "rate_limit_exceeded", "rate_limit_error", "RESOURCE_EXHAUSTED"};
    case 499: return {"invalid_request_error", "cancelled", "invalid_request_error", "CANCELLED"};
    case 501: return {"invalid_request_error", "not_implemented", "api_error", "UNIMPLEMENTED"};
    case 502: return {"server_error", "upstream_error", "overloaded_error", "UNAVAILABLE"};
    case 503: return {"server_error", "service_unavailable", "overloaded_error", "UNAVAILABLE"};
    case 504: return {"server_error", "timeout", "timeout_error", "DEADLINE_EXCEEDED"};
    case 529: return {"server_error", "overloaded", "overloaded_error", "UNAVAILABLE"};
    default: return {"server_error", nullptr, "api_error", "INTERNAL"};
  }
}

}  // namespace

std::string ErrorBody(ApiProtocol protocol, const HttpError& error, std::string_view request_id) {
  Row row = RowFor(error.status);
  json::object body;
  switch (protocol) {
    case ApiProtocol::kOpenAI:
    case ApiProtocol::kNexusFlow: {
      json::object e;
      e["message"] = error.message;
      e["type"] = row.openai_type;
      e["param"] = error.param.empty() ? json::value(nullptr) : json::value(error.param);
      if (!error.code.empty()) {
        e["code"] = error.code;
      } else if (row.openai_code) {
        e["code"] = row.openai_code;
      } else {
        e["code"] = nullptr;
      }
      body["error"] = std::move(e);
      break;
    }
    case ApiProtocol::kAnthropic: {
      body["type"] = "error";
      body["error"] = json::object{{"type", row.anthropic_type}, {"message", error.message}};
      body["request_id"] = request_id;
      break;
    }
    case ApiProtocol::kGemini: {
      body["error"] = json::object{{"code", error.status},
                                   {"message", error.message},
                                   {"status", row.gemini_status},
                                   {"details", json::array{}}};
      break;
    }
  }
  return json::serialize(body);
}

std::string_view GrpcCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::OK: return "OK";
    case grpc::CANCELLED: return "CANCELLED";
    case grpc::UNKNOWN: return "UNKNOWN";
    case grpc::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::NOT_FOUND: return "NOT_FOUND";
    case grpc::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::UNAUTHENTICATED: return "UNAUTHENTICATED";
    case grpc::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::ABORTED: return "ABORTED";
    case grpc::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::INTERNAL: return "INTERNAL";
    case grpc::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::DATA_LOSS: return "DATA_LOSS";
    default: return "UNKNOWN";
  }
}

}  // namespace nexusflow
