// A hostile DashScope answer: a submission's and a task poll's, decoded as the media worker
// does, and the task object the gateway would render from it.
#include "gateway/protocols/media.h"
#include "services/provider-connector/dashscope_task.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace nexusflow;
  const std::string_view text = fuzz::AsText(data, size);
  (void)connector::ParseDashScopeSubmitted(text);
  auto poll = connector::ParseDashScopePoll(text);
  if (!poll.ok()) return 0;
  if (poll->final && poll->status == connector::v1::TASK_STATUS_SUCCEEDED && poll->result.urls_size() == 0)
    std::abort();  // success always carries a result
  connector::v1::Task task;
  task.set_id("task_fuzz");
  task.set_kind(poll->usage.video_count() > 0 ? "video" : "image");
  task.set_status(poll->status);
  *task.mutable_result() = poll->result;
  *task.mutable_error() = poll->error;
  *task.mutable_usage() = poll->usage;
  (void)gateway::media::TaskBody(task);
  return 0;
}
