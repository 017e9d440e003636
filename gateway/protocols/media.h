#pragma once
// Media requests: the async task API (`/v1/tasks`, PROTOCOLS.md §0) and OpenAI image
// generation (`POST /v1/images/generations`): parsing, per-kind parameter validation (a 400
// naming the parameter), and the answers' bodies.
//
// Parameters, by the model's kind (the Wan models' documented limits):
//   image: prompt (required), negative_prompt, n (1–4, default 1), size ("1024x1024" or
//          "1024*1024", each side 512–2048, default 1024*1024), seed, prompt_extend, watermark
//   video: prompt (required), negative_prompt, duration (seconds, 1–15, default 5),
//          resolution (480P | 720P | 1080P, default 720P) or size, seed, prompt_extend,
//          watermark
// Anything else is refused, so a misspelt parameter never silently does nothing.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json.hpp>

#include "libs/common/status_map.h"
#include "nexusflow/connector/v1/connector.pb.h"

namespace nexusflow::gateway::media {

inline constexpr int kMaxImages = 4;
inline constexpr int kMinImageSide = 512;
inline constexpr int kMaxImageSide = 2048;
inline constexpr int kMinVideoSeconds = 1;
inline constexpr int kMaxVideoSeconds = 15;
inline constexpr int kDefaultVideoSeconds = 5;
inline constexpr size_t kMaxPromptBytes = 8000;

// A validated media request: what the connector runs, and the most it can produce.
struct MediaRequest {
  std::string model;
  std::string kind;            // "image" | "video"
  boost::json::object params;  // canonical parameters (DashScope's names)
  int64_t images = 0;          // images it may produce (the hold)
  int64_t video_seconds = 0;   // seconds of video it may produce (the hold)
};

// The JSON object of a request body with its "model"; 400 otherwise.
bool ParseBody(std::string_view body, boost::json::object* fields, std::string* model, HttpError* error);

// Validates `fields` (model removed) for a model of `kind` ("image" or "video") into `out`.
bool ValidateParams(std::string_view kind, const boost::json::object& fields, MediaRequest* out,
                    HttpError* error);

// POST /v1/images/generations: OpenAI's fields (prompt, n, size, quality, style,
// response_format, user) over an image model's parameters. `b64_json` says how the images
// are answered.
bool ParseImagesRequest(std::string_view body, MediaRequest* out, bool* b64_json, HttpError* error);

// The public task object: {"id","object":"task","model","status","created_at","updated_at",
// "params", "result":{urls, expires_at}?, "error":{code,message}?, "usage"?}.
boost::json::object TaskObject(const connector::v1::Task& task);
std::string TaskBody(const connector::v1::Task& task);
// {"object":"list","data":[tasks…],"has_more","next_cursor"?}
std::string TaskListBody(const connector::v1::ListTasksResponse& page);

// OpenAI's images answer: {"created","data":[{"url"} | {"b64_json"}]}.
std::string ImagesBody(int64_t created_unix, const std::vector<std::string>& urls,
                       const std::vector<std::string>& b64_images);

}  // namespace nexusflow::gateway::media
