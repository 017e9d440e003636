#pragma once
// DashScope's asynchronous media protocol (PROTOCOLS.md §D), as the mock answers it: submit
// an image or video synthesis with `X-DashScope-Async: enable`, poll
// `GET /api/v1/tasks/{id}`, cancel a pending task. A task is PENDING for the first quarter
// of its duration, RUNNING until its end, then SUCCEEDED (or FAILED); its result URLs point
// back at the mock (`/mock/dashscope/files/...`), which serves a small PNG or MP4 there.
//
// Tasks live in memory. Every call takes the current time, so a test drives the progression
// with a clock of its own; the server passes the steady clock.
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "reply.h"

namespace nexusflow::mock {

enum class MediaKind { kImage, kVideo };

// A task's state as DashScope names it.
enum class TaskStatus { kPending, kRunning, kSucceeded, kFailed, kCanceled, kUnknown };
std::string_view TaskStatusName(TaskStatus status);

// DashScope's error body: {"code", "message", "request_id"}. `error.code` is DashScope's
// code; empty → the usual one for the status (400 InvalidParameter, 401 InvalidApiKey...).
std::string DashScopeErrorBody(const RequestError& error, std::string_view request_id);

// The `[mock:...]` markers of a media prompt.
struct MediaMarkers {
  std::optional<std::int64_t>
      task_ms;                // [mock:task-ms=N]: the task's duration, replaces --task-seconds
  bool fail = false;          // [mock:fail]: the task ends FAILED
  std::optional<int> images;  // [mock:images=K]: only K of the n images succeed
  int status = 0;             // [mock:status=NNN]: the submission is answered NNN
};
MediaMarkers ParseMediaMarkers(std::string_view prompt);

struct DashScopeOptions {
  std::int64_t task_ms = 3000;  // how long a task takes from submission to its end
  int fail_percent = 0;         // this share of tasks (spread evenly) ends FAILED
};

struct DashScopeAnswer {
  int status = 200;
  std::string_view content_type = "application/json";  // a literal
  std::string body;
};

// Largest values the mock accepts (the Wan models' documented limits).
inline constexpr int kMaxImagesPerTask = 4;
inline constexpr int kDefaultImagesPerTask = 4;  // DashScope's default `n` for Wan
inline constexpr int kMinImageSide = 512;
inline constexpr int kMaxImageSide = 2048;
inline constexpr int kMinVideoSeconds = 1;
inline constexpr int kMaxVideoSeconds = 15;
inline constexpr int kDefaultVideoSeconds = 5;
// Result URLs and the tasks themselves are forgotten this long after the task ends.
inline constexpr std::chrono::hours kTaskRetention{24};

class DashScopeTasks {
 public:
  using Clock = std::chrono::steady_clock;

  explicit DashScopeTasks(DashScopeOptions options) : options_(options) {}

  // POST .../image-synthesis or .../video-synthesis. `async_header` is the value of
  // X-DashScope-Async; `host` the request's Host, for the result URLs.
  DashScopeAnswer Submit(MediaKind kind, std::string_view body, std::string_view async_header,
                         std::string_view host, std::string_view request_id, Clock::time_point now);
  // GET /api/v1/tasks/{id}: always 200; UNKNOWN for an id never issued or forgotten.
  DashScopeAnswer Get(std::string_view task_id, std::string_view request_id, Clock::time_point now);
  // POST /api/v1/tasks/{id}/cancel: only a PENDING task can be canceled.
  DashScopeAnswer Cancel(std::string_view task_id, std::string_view request_id,
                         Clock::time_point now);
  // GET /mock/dashscope/files/{task_id}/{name}: `{i}.png` of an image task (i < images
  // produced), `video.mp4` of a video task; nullopt → 404.
  std::optional<DashScopeAnswer> File(std::string_view path, Clock::time_point now);
  // GET /mock/dashscope/tasks: every task kept, in submission order, as
  // `{"object":"list","data":[{"task_id","kind","model","prompt","task_status"}]}`, so a
  // test can count how often a job was submitted (never needs the API key).
  DashScopeAnswer List(Clock::time_point now);

 private:
  struct Task {
    MediaKind kind;
    std::string model;
    std::string prompt;
    std::string host;
    Clock::time_point submitted;
    std::int64_t duration_ms = 0;
    int requested = 1;  // images asked for
    int produced = 1;   // images that succeed
    int video_seconds = 0;
    std::string video_size;  // "1280*720"
    bool fail = false;
    bool canceled = false;
    std::uint64_t sequence = 0;  // submission order
  };

  TaskStatus StatusAt(const Task& task, Clock::time_point now) const;
  const Task* Find(std::string_view task_id, Clock::time_point now) const;
  void Prune(Clock::time_point now);

  const DashScopeOptions options_;
  std::mutex mu_;
  std::map<std::string, Task, std::less<>> tasks_;
  std::uint64_t submitted_ = 0;
};

}  // namespace nexusflow::mock
