#include "dashscope.h"

#include <algorithm>
#include <array>
#include <boost/json.hpp>
#include <charconv>
#include <utility>
#include <vector>

namespace nexusflow::mock {
namespace {

namespace json = boost::json;

constexpr std::string_view kFilePrefix = "/mock/dashscope/files/";
constexpr int kImageFileSide = 8;  // the served PNG is a placeholder of this many pixels a side
constexpr std::int64_t kMaxMarkerTaskMs = 24LL * 3600 * 1000;
constexpr std::uint64_t kPruneEvery = 1024;  // submissions between sweeps of forgotten tasks

RequestError Invalid(std::string message, std::string code = "InvalidParameter") {
  return RequestError{400, std::move(message), {}, std::move(code)};
}

DashScopeAnswer ErrorAnswer(const RequestError& error, std::string_view request_id) {
  return DashScopeAnswer{error.status, "application/json", DashScopeErrorBody(error, request_id)};
}

std::optional<std::int64_t> ParseCount(std::string_view text) {
  std::int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < 0) return std::nullopt;
  return value;
}

// "1024*768" → {1024, 768}, each side within [min_side, max_side].
std::optional<std::pair<int, int>> ParseSize(std::string_view size, int min_side, int max_side) {
  const std::size_t star = size.find('*');
  if (star == std::string_view::npos) return std::nullopt;
  const std::optional<std::int64_t> width = ParseCount(size.substr(0, star));
  const std::optional<std::int64_t> height = ParseCount(size.substr(star + 1));
  if (!width || !height || *width < min_side || *width > max_side || *height < min_side ||
      *height > max_side) {
    return std::nullopt;
  }
  return std::pair<int, int>{static_cast<int>(*width), static_cast<int>(*height)};
}

// An integer parameter in [min, max]; nullopt when absent, an error when out of range.
std::optional<RequestError> IntParameter(const json::object& parameters, std::string_view name,
                                         std::int64_t min, std::int64_t max, std::int64_t& out) {
  const json::value* value = parameters.if_contains(name);
  if (!value || value->is_null()) return std::nullopt;
  const std::optional<std::int64_t> number = AsInteger(*value);
  if (!number || *number < min || *number > max) {
    return Invalid("Parameter 'parameters." + std::string(name) + "' must be an integer in [" +
                   std::to_string(min) + ", " + std::to_string(max) + "]");
  }
  out = *number;
  return std::nullopt;
}

std::string UuidFrom(std::string_view hex) {
  std::string out(hex.substr(0, 8));
  for (std::size_t pos : {8, 12, 16, 20}) {
    out += '-';
    out += hex.substr(pos, pos == 20 ? 12 : 4);
  }
  return out;
}

// Placeholder media: a tiny but valid PNG (stored deflate, real CRCs), and the opening boxes
// of an MP4 file.
std::uint32_t Crc32(std::string_view bytes, std::uint32_t crc = 0) {
  static const std::array<std::uint32_t, 256> table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t n = 0; n < 256; ++n) {
      std::uint32_t c = n;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320U ^ (c >> 1) : c >> 1;
      t[n] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (unsigned char b : bytes) crc = table[(crc ^ b) & 0xff] ^ (crc >> 8);
  return ~crc;
}

void PutU32(std::string& out, std::uint32_t v) {
  out += static_cast<char>(v >> 24);
  out += static_cast<char>(v >> 16);
  out += static_cast<char>(v >> 8);
  out += static_cast<char>(v);
}

void PngChunk(std::string& out, std::string_view type, std::string_view data) {
  PutU32(out, static_cast<std::uint32_t>(data.size()));
  std::string typed(type);
  typed += data;
  out += typed;
  PutU32(out, Crc32(typed));
}

std::string PlaceholderPng(std::uint64_t seed) {
  const int side = kImageFileSide;
  std::string raw;  // filter byte 0, then RGB per pixel, per row
  for (int y = 0; y < side; ++y) {
    raw += '\0';
    for (int x = 0; x < side; ++x) {
      raw += static_cast<char>((seed >> 0) + x * 16);
      raw += static_cast<char>((seed >> 8) + y * 16);
      raw += static_cast<char>(seed >> 16);
    }
  }
  std::string zlib = "\x78\x01";  // one final stored block
  zlib += '\x01';
  const auto len = static_cast<std::uint16_t>(raw.size());
  zlib += static_cast<char>(len & 0xff);
  zlib += static_cast<char>(len >> 8);
  zlib += static_cast<char>(~len & 0xff);
  zlib += static_cast<char>((~len >> 8) & 0xff);
  zlib += raw;
  std::uint32_t a = 1, b = 0;
  for (unsigned char c : raw) {
    a = (a + c) % 65521;
    b = (b + a) % 65521;
  }
  PutU32(zlib, (b << 16) | a);

  std::string png("\x89PNG\r\n\x1a\n", 8);
  std::string header;
  PutU32(header, side);
  PutU32(header, side);
  header += std::string("\x08\x02\x00\x00\x00", 5);  // 8-bit RGB, no interlace
  PngChunk(png, "IHDR", header);
  PngChunk(png, "IDAT", zlib);
  PngChunk(png, "IEND", {});
  return png;
}

std::string PlaceholderMp4(std::string_view task_id) {
  std::string out;
  PutU32(out, 24);
  out += "ftypisom";
  PutU32(out, 0x200);
  out += "isommp41";
  const std::string note = "nexusflow mock video " + std::string(task_id);
  PutU32(out, static_cast<std::uint32_t>(8 + note.size()));
  out += "free";
  out += note;
  return out;
}

std::uint64_t Fnv1a(std::string_view bytes) {
  std::uint64_t hash = 0xcbf29ce484222325ULL;
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

std::string ImageUrl(std::string_view host, std::string_view task_id, int index) {
  return "http://" + std::string(host) + std::string(kFilePrefix) + std::string(task_id) + "/" +
         std::to_string(index) + ".png";
}

}  // namespace

std::string_view TaskStatusName(TaskStatus status) {
  switch (status) {
    case TaskStatus::kPending:
      return "PENDING";
    case TaskStatus::kRunning:
      return "RUNNING";
    case TaskStatus::kSucceeded:
      return "SUCCEEDED";
    case TaskStatus::kFailed:
      return "FAILED";
    case TaskStatus::kCanceled:
      return "CANCELED";
    case TaskStatus::kUnknown:
      return "UNKNOWN";
  }
  return "UNKNOWN";
}

std::string DashScopeErrorBody(const RequestError& error, std::string_view request_id) {
  std::string code = error.code;
  if (code.empty()) {
    switch (error.status) {
      case 400:
        code = "InvalidParameter";
        break;
      case 401:
        code = "InvalidApiKey";
        break;
      case 403:
        code = "AccessDenied";
        break;
      case 404:
        code = "NotFound";
        break;
      case 429:
        code = "Throttling";
        break;
      default:
        code = error.status >= 500 ? "InternalError" : "InvalidParameter";
        break;
    }
  }
  return json::serialize(
      json::object{{"code", code}, {"message", error.message}, {"request_id", request_id}});
}

MediaMarkers ParseMediaMarkers(std::string_view prompt) {
  MediaMarkers markers;
  constexpr std::string_view kOpen = "[mock:";
  std::size_t pos = 0;
  while ((pos = prompt.find(kOpen, pos)) != std::string_view::npos) {
    pos += kOpen.size();
    const std::size_t close = prompt.find(']', pos);
    if (close == std::string_view::npos) break;
    const std::string_view marker = prompt.substr(pos, close - pos);
    pos = close + 1;
    if (marker == "fail") {
      markers.fail = true;
      continue;
    }
    const std::size_t eq = marker.find('=');
    if (eq == std::string_view::npos) continue;
    const std::string_view key = marker.substr(0, eq);
    const std::optional<std::int64_t> value = ParseCount(marker.substr(eq + 1));
    if (!value) continue;
    if (key == "task-ms") {
      markers.task_ms = std::min(*value, kMaxMarkerTaskMs);
    } else if (key == "images") {
      markers.images = static_cast<int>(std::min<std::int64_t>(*value, kMaxImagesPerTask));
    } else if (key == "status" && *value >= 100 && *value <= 599) {
      markers.status = static_cast<int>(*value);
    }
  }
  return markers;
}

DashScopeAnswer DashScopeTasks::Submit(MediaKind kind, std::string_view body,
                                       std::string_view async_header, std::string_view host,
                                       std::string_view request_id, Clock::time_point now) {
  // DashScope's media endpoints refuse synchronous calls.
  if (async_header != "enable") {
    return ErrorAnswer(
        RequestError{
            403, "current user api does not support synchronous calls", {}, "AccessDenied"},
        request_id);
  }
  json::error_code ec;
  json::value parsed = json::parse(body, ec);
  if (ec || !parsed.is_object())
    return ErrorAnswer(Invalid("The request body is not a JSON object"), request_id);
  const json::object& request = parsed.get_object();

  Task task;
  task.kind = kind;
  task.model = std::string(StringOr(request.if_contains("model")));
  if (task.model.empty())
    return ErrorAnswer(Invalid("Required parameter 'model' is missing"), request_id);
  const json::value* input = request.if_contains("input");
  if (!input || !input->is_object()) {
    return ErrorAnswer(Invalid("Required parameter 'input' is missing"), request_id);
  }
  const json::value* prompt = input->get_object().if_contains("prompt");
  if (!prompt || !prompt->is_string() || prompt->get_string().empty()) {
    return ErrorAnswer(Invalid("Required parameter 'input.prompt' is missing"), request_id);
  }
  task.prompt = std::string(prompt->get_string());

  static const json::object kNoParameters;
  const json::object* parameters = &kNoParameters;
  if (const json::value* given = request.if_contains("parameters"); given && !given->is_null()) {
    if (!given->is_object())
      return ErrorAnswer(Invalid("Parameter 'parameters' must be an object"), request_id);
    parameters = &given->get_object();
  }
  std::int64_t seed = 0;
  if (auto error = IntParameter(*parameters, "seed", 0, 2147483647, seed))
    return ErrorAnswer(*error, request_id);

  if (kind == MediaKind::kImage) {
    if (const json::value* size = parameters->if_contains("size"); size && !size->is_null()) {
      if (!size->is_string() || !ParseSize(size->get_string(), kMinImageSide, kMaxImageSide)) {
        return ErrorAnswer(
            Invalid("Parameter 'parameters.size' must be 'width*height', each side in [" +
                    std::to_string(kMinImageSide) + ", " + std::to_string(kMaxImageSide) + "]"),
            request_id);
      }
    }
    std::int64_t n = kDefaultImagesPerTask;
    if (auto error = IntParameter(*parameters, "n", 1, kMaxImagesPerTask, n))
      return ErrorAnswer(*error, request_id);
    task.requested = static_cast<int>(n);
  } else {
    std::int64_t duration = kDefaultVideoSeconds;
    if (auto error =
            IntParameter(*parameters, "duration", kMinVideoSeconds, kMaxVideoSeconds, duration)) {
      return ErrorAnswer(*error, request_id);
    }
    task.video_seconds = static_cast<int>(duration);
    task.video_size = "1920*1080";
    if (const json::value* resolution = parameters->if_contains("resolution");
        resolution && !resolution->is_null()) {
      static constexpr std::pair<std::string_view, std::string_view> kResolutions[] = {
          {"480P", "832*480"}, {"720P", "1280*720"}, {"1080P", "1920*1080"}};
      const auto* found =
          std::find_if(std::begin(kResolutions), std::end(kResolutions), [&](const auto& row) {
            return resolution->is_string() && resolution->get_string() == row.first;
          });
      if (found == std::end(kResolutions)) {
        return ErrorAnswer(
            Invalid("Parameter 'parameters.resolution' must be one of 480P, 720P, 1080P"),
            request_id);
      }
      task.video_size = std::string(found->second);
    }
    if (const json::value* size = parameters->if_contains("size"); size && !size->is_null()) {
      if (!size->is_string() || !ParseSize(size->get_string(), 256, kMaxImageSide)) {
        return ErrorAnswer(
            Invalid("Parameter 'parameters.size' must be 'width*height', each side in [256, " +
                    std::to_string(kMaxImageSide) + "]"),
            request_id);
      }
      task.video_size = std::string(size->get_string());
    }
  }

  const MediaMarkers markers = ParseMediaMarkers(task.prompt);
  if (markers.status >= 400) {
    return ErrorAnswer(
        RequestError{markers.status, "Forced status " + std::to_string(markers.status), {}, {}},
        request_id);
  }
  task.host = std::string(host);
  task.submitted = now;
  task.duration_ms = markers.task_ms.value_or(options_.task_ms);
  task.produced = std::min(task.requested, markers.images.value_or(task.requested));
  task.fail = markers.fail || (kind == MediaKind::kImage && task.produced == 0);

  const std::string task_id = UuidFrom(RandomHex(32));
  {
    std::lock_guard lock(mu_);
    const std::uint64_t sequence = submitted_++;
    // The failure share spread evenly: the k-th task fails when k·P/100 crosses an integer.
    if ((sequence + 1) * options_.fail_percent / 100 > sequence * options_.fail_percent / 100)
      task.fail = true;
    task.sequence = sequence;
    if (submitted_ % kPruneEvery == 0) Prune(now);
    tasks_.emplace(task_id, std::move(task));
  }
  json::object answer{{"output", json::object{{"task_id", task_id}, {"task_status", "PENDING"}}},
                      {"request_id", request_id}};
  return DashScopeAnswer{200, "application/json", json::serialize(answer)};
}

TaskStatus DashScopeTasks::StatusAt(const Task& task, Clock::time_point now) const {
  if (task.canceled) return TaskStatus::kCanceled;
  const auto elapsed =
      std::chrono::duration_cast<std::chrono::milliseconds>(now - task.submitted).count();
  if (elapsed < task.duration_ms / 4) return TaskStatus::kPending;
  if (elapsed < task.duration_ms) return TaskStatus::kRunning;
  return task.fail ? TaskStatus::kFailed : TaskStatus::kSucceeded;
}

const DashScopeTasks::Task* DashScopeTasks::Find(std::string_view task_id,
                                                 Clock::time_point now) const {
  const auto it = tasks_.find(task_id);
  if (it == tasks_.end()) return nullptr;
  const Task& task = it->second;
  if (now - task.submitted > std::chrono::milliseconds(task.duration_ms) + kTaskRetention)
    return nullptr;
  return &task;
}

void DashScopeTasks::Prune(Clock::time_point now) {
  std::erase_if(tasks_, [&](const auto& entry) {
    return now - entry.second.submitted >
           std::chrono::milliseconds(entry.second.duration_ms) + kTaskRetention;
  });
}

DashScopeAnswer DashScopeTasks::Get(std::string_view task_id, std::string_view request_id,
                                    Clock::time_point now) {
  std::lock_guard lock(mu_);
  const Task* task = Find(task_id, now);
  const TaskStatus status = task ? StatusAt(*task, now) : TaskStatus::kUnknown;
  json::object output{{"task_id", task_id}, {"task_status", TaskStatusName(status)}};
  json::object body{{"request_id", request_id}};
  if (status == TaskStatus::kFailed) {
    output["code"] = "InternalError.Algo";
    output["message"] = "The mock was told to fail this task";
  } else if (status == TaskStatus::kSucceeded && task->kind == MediaKind::kImage) {
    json::array results;
    for (int i = 0; i < task->requested; ++i) {
      if (i < task->produced) {
        results.push_back(
            json::object{{"url", ImageUrl(task->host, task_id, i)}, {"orig_prompt", task->prompt}});
      } else {
        results.push_back(json::object{{"code", "InternalError.Algo"},
                                       {"message", "The mock was told to skip this image"}});
      }
    }
    output["results"] = std::move(results);
    output["task_metrics"] = json::object{{"TOTAL", task->requested},
                                          {"SUCCEEDED", task->produced},
                                          {"FAILED", task->requested - task->produced}};
    body["usage"] = json::object{{"image_count", task->produced}};
  } else if (status == TaskStatus::kSucceeded) {
    output["video_url"] =
        "http://" + task->host + std::string(kFilePrefix) + std::string(task_id) + "/video.mp4";
    output["orig_prompt"] = task->prompt;
    body["usage"] = json::object{{"video_duration", task->video_seconds},
                                 {"duration", task->video_seconds},
                                 {"video_count", 1},
                                 {"video_ratio", task->video_size}};
  }
  body["output"] = std::move(output);
  return DashScopeAnswer{200, "application/json", json::serialize(body)};
}

DashScopeAnswer DashScopeTasks::Cancel(std::string_view task_id, std::string_view request_id,
                                       Clock::time_point now) {
  std::lock_guard lock(mu_);
  const Task* found = Find(task_id, now);
  if (!found || StatusAt(*found, now) != TaskStatus::kPending) {
    return ErrorAnswer(
        Invalid("Failed to cancel the task, please confirm if the task is in PENDING status.",
                "UnsupportedOperation"),
        request_id);
  }
  tasks_.find(task_id)->second.canceled = true;
  return DashScopeAnswer{200, "application/json",
                         json::serialize(json::object{{"request_id", request_id}})};
}

std::optional<DashScopeAnswer> DashScopeTasks::File(std::string_view path, Clock::time_point now) {
  if (!path.starts_with(kFilePrefix)) return std::nullopt;
  const std::string_view rest = path.substr(kFilePrefix.size());
  const std::size_t slash = rest.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  const std::string_view task_id = rest.substr(0, slash);
  const std::string_view name = rest.substr(slash + 1);
  std::lock_guard lock(mu_);
  const Task* task = Find(task_id, now);
  if (!task || StatusAt(*task, now) != TaskStatus::kSucceeded) return std::nullopt;
  if (task->kind == MediaKind::kVideo) {
    if (name != "video.mp4") return std::nullopt;
    return DashScopeAnswer{200, "video/mp4", PlaceholderMp4(task_id)};
  }
  if (!name.ends_with(".png")) return std::nullopt;
  const std::optional<std::int64_t> index = ParseCount(name.substr(0, name.size() - 4));
  if (!index || *index >= task->produced) return std::nullopt;
  return DashScopeAnswer{200, "image/png",
                         PlaceholderPng(Fnv1a(std::string(task_id) + std::string(name)))};
}

DashScopeAnswer DashScopeTasks::List(Clock::time_point now) {
  std::lock_guard lock(mu_);
  std::vector<std::pair<std::uint64_t, json::object>> rows;
  for (const auto& [id, task] : tasks_) {
    if (!Find(id, now)) continue;
    rows.emplace_back(task.sequence,
                      json::object{{"task_id", id},
                                   {"kind", task.kind == MediaKind::kImage ? "image" : "video"},
                                   {"model", task.model},
                                   {"prompt", task.prompt},
                                   {"task_status", TaskStatusName(StatusAt(task, now))}});
  }
  std::sort(rows.begin(), rows.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  json::array data;
  for (auto& row : rows) data.push_back(std::move(row.second));
  return DashScopeAnswer{
      200, "application/json",
      json::serialize(json::object{{"object", "list"}, {"data", std::move(data)}})};
}

}  // namespace nexusflow::mock
