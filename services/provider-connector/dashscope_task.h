#pragma once
// DashScope's asynchronous media protocol (PROTOCOLS.md §D), the connector's side: the
// submission body, and a poll answer turned into the canonical task state. A task we
// submitted that DashScope answers UNKNOWN for (expired, or lost) is failed: it will never
// finish. A multi-image task that produced fewer images than asked is SUCCEEDED with the
// images it has, and billed for `usage.image_count`, never for `n`.
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nexusflow/connector/v1/connector.pb.h"

namespace nexusflow::connector {

enum class MediaKind { kImage, kVideo };

// The submission path under the provider's base URL.
std::string_view DashScopeSubmitPath(MediaKind kind);

// {model, input:{prompt, ...}, parameters:{...}} from the caller's parameters (a JSON
// object: "prompt" and the others); INVALID_ARGUMENT naming what is wrong.
absl::StatusOr<std::string> BuildDashScopeSubmit(MediaKind kind, std::string_view upstream_model,
                                                 std::string_view params_json);

// The task id from a submission's answer.
absl::StatusOr<std::string> ParseDashScopeSubmitted(std::string_view body);

struct DashScopePoll {
  v1::TaskStatus status = v1::TASK_STATUS_UNSPECIFIED;  // QUEUED for PENDING, RUNNING, ...
  bool final = false;                                   // no further poll changes it
  v1::TaskResult result;                                // SUCCEEDED: the URLs
  v1::TaskError error;                                  // FAILED: why
  v1::MediaUsage usage;                                 // what to bill
};

// One poll answer (GET /api/v1/tasks/{id}).
absl::StatusOr<DashScopePoll> ParseDashScopePoll(std::string_view body);

}  // namespace nexusflow::connector
