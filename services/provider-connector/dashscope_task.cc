#include "services/provider-connector/dashscope_task.h"

#include <algorithm>

#include <boost/json.hpp>

#include "absl/strings/str_cat.h"

namespace nexusflow::connector {
namespace json = boost::json;

namespace {

const json::object* ObjectAt(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v ? v->if_object() : nullptr;
}

std::string StringAt(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->get_string()) : "";
}

double NumberAt(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (!v || !v->is_number()) return 0;
  boost::system::error_code ec;
  double d = v->to_number<double>(ec);
  return ec ? 0 : d;
}

// A count or a duration as the upstream reports it, within [0, kMaxUnits]: a negative,
// absurd or out-of-range number never reaches a cast (undefined) or a bill.
constexpr double kMaxUnits = 1e9;
double UnitsAt(const json::object& o, std::string_view key) {
  const double d = NumberAt(o, key);
  return d > 0 ? std::min(d, kMaxUnits) : 0;
}

}  // namespace

std::string_view DashScopeSubmitPath(MediaKind kind) {
  return kind == MediaKind::kImage ? "/api/v1/services/aigc/text2image/image-synthesis"
                                   : "/api/v1/services/aigc/video-generation/video-synthesis";
}

absl::StatusOr<std::string> BuildDashScopeSubmit(MediaKind kind, std::string_view upstream_model,
                                                 std::string_view params_json) {
  boost::system::error_code ec;
  json::value v = json::parse(params_json, ec);
  if (ec || !v.is_object()) return absl::InvalidArgumentError("the task's parameters are not a JSON object");
  json::object params = v.get_object();
  const json::value* prompt = params.if_contains("prompt");
  if (!prompt || !prompt->is_string() || prompt->get_string().empty())
    return absl::InvalidArgumentError("'prompt' is required: a non-empty string");
  json::object input{{"prompt", *prompt}};
  params.erase("prompt");
  for (std::string_view key : {"negative_prompt", "img_url", "image_url"}) {
    if (const json::value* x = params.if_contains(key)) {
      input[key] = *x;
      params.erase(key);
    }
  }
  // OpenAI's "1024x1024" is DashScope's "1024*1024".
  if (json::value* size = params.if_contains("size"); size && size->is_string()) {
    std::string s(size->get_string());
    for (char& c : s)
      if (c == 'x') c = '*';
    *size = s;
  }
  if (kind == MediaKind::kImage && !params.contains("n")) params["n"] = 1;  // DashScope's default is 4
  json::object body{{"model", upstream_model}, {"input", std::move(input)}, {"parameters", std::move(params)}};
  return json::serialize(body);
}

absl::StatusOr<std::string> ParseDashScopeSubmitted(std::string_view body) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  const json::object* output = !ec && v.is_object() ? ObjectAt(v.get_object(), "output") : nullptr;
  std::string id = output ? StringAt(*output, "task_id") : "";
  if (id.empty()) return absl::InternalError("DashScope's submission answer has no output.task_id");
  return id;
}

absl::StatusOr<DashScopePoll> ParseDashScopePoll(std::string_view body) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec || !v.is_object()) return absl::InternalError("DashScope's task answer is not a JSON object");
  const json::object& root = v.get_object();
  const json::object* output = ObjectAt(root, "output");
  if (!output) return absl::InternalError("DashScope's task answer has no output");
  std::string status = StringAt(*output, "task_status");
  DashScopePoll poll;
  if (const json::object* usage = ObjectAt(root, "usage")) {
    poll.usage.set_image_count(static_cast<int64_t>(UnitsAt(*usage, "image_count")));
    double seconds = UnitsAt(*usage, "video_duration");
    if (seconds == 0) seconds = UnitsAt(*usage, "duration");
    poll.usage.set_video_duration_seconds(seconds);
    int64_t videos = static_cast<int64_t>(UnitsAt(*usage, "video_count"));
    if (videos == 0 && seconds > 0) videos = 1;
    poll.usage.set_video_count(videos);
  }
  if (status == "PENDING") {
    poll.status = v1::TASK_STATUS_QUEUED;
  } else if (status == "RUNNING") {
    poll.status = v1::TASK_STATUS_RUNNING;
  } else if (status == "SUCCEEDED") {
    poll.status = v1::TASK_STATUS_SUCCEEDED;
    poll.final = true;
    if (std::string url = StringAt(*output, "video_url"); !url.empty()) poll.result.add_urls(url);
    if (const json::value* results = output->if_contains("results"); results && results->is_array()) {
      for (const json::value& r : results->get_array()) {
        const json::object* o = r.if_object();
        if (std::string url = o ? StringAt(*o, "url") : ""; !url.empty()) poll.result.add_urls(url);
      }
    }
    // Billed for what was produced: the images with a URL when usage says nothing.
    if (poll.usage.image_count() == 0 && poll.usage.video_count() == 0 && !output->contains("video_url"))
      poll.usage.set_image_count(poll.result.urls_size());
    if (poll.result.urls_size() == 0) {
      poll.status = v1::TASK_STATUS_FAILED;
      poll.error.set_code("upstream_no_result");
      poll.error.set_message("The provider reported success without any result.");
    }
  } else if (status == "FAILED") {
    poll.status = v1::TASK_STATUS_FAILED;
    poll.final = true;
    poll.error.set_code(StringAt(*output, "code").empty() ? "upstream_failed" : StringAt(*output, "code"));
    poll.error.set_message(StringAt(*output, "message").empty() ? "The provider failed the task."
                                                                : StringAt(*output, "message"));
    poll.usage.Clear();  // a failed task is not billed
  } else if (status == "CANCELED") {
    poll.status = v1::TASK_STATUS_CANCELED;
    poll.final = true;
    poll.usage.Clear();
  } else if (status == "UNKNOWN") {
    // Expired or lost at the provider: it will never finish.
    poll.status = v1::TASK_STATUS_FAILED;
    poll.final = true;
    poll.error.set_code("upstream_task_unknown");
    poll.error.set_message("The provider no longer knows this task (expired or lost).");
    poll.usage.Clear();
  } else {
    return absl::InternalError(absl::StrCat("DashScope answered an unknown task_status '", status, "'"));
  }
  return poll;
}

}  // namespace nexusflow::connector
