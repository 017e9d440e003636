#include "gateway/protocols/media.h"

#include <charconv>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace nexusflow::gateway::media {
namespace json = boost::json;

namespace {

HttpError Invalid(std::string param, std::string message) {
  return HttpError(400, std::move(message), std::move(param), "invalid_parameter");
}

// An integer JSON value (1 and 1.0 alike) within [lo, hi].
bool IntIn(const json::value& v, int64_t lo, int64_t hi, int64_t* out) {
  if (v.is_int64()) *out = v.get_int64();
  else if (v.is_uint64() && v.get_uint64() <= static_cast<uint64_t>(INT64_MAX)) *out = static_cast<int64_t>(v.get_uint64());
  else if (v.is_double()) {
    // Only a whole number within the bounds converts (a cast of any other double is undefined).
    const double d = v.get_double();
    if (!(d >= static_cast<double>(lo) && d <= static_cast<double>(hi)) || d != std::floor(d)) return false;
    *out = static_cast<int64_t>(d);
  } else {
    return false;
  }
  return *out >= lo && *out <= hi;
}

// "1024x1024" or "1024*1024" → DashScope's "1024*1024", each side within the limits.
bool ParseSize(std::string_view text, int lo, int hi, std::string* out) {
  size_t sep = text.find_first_of("x*");
  if (sep == std::string_view::npos) return false;
  int w = 0, h = 0;
  auto a = std::from_chars(text.data(), text.data() + sep, w);
  auto b = std::from_chars(text.data() + sep + 1, text.data() + text.size(), h);
  if (a.ec != std::errc() || a.ptr != text.data() + sep || b.ec != std::errc() ||
      b.ptr != text.data() + text.size())
    return false;
  if (w < lo || w > hi || h < lo || h > hi) return false;
  *out = absl::StrCat(w, "*", h);
  return true;
}

bool CheckString(const json::object& f, const std::string& key, bool required, size_t max_bytes,
                 json::object& params, HttpError* error) {
  const json::value* v = f.if_contains(key);
  if (!v || v->is_null()) {
    if (required) *error = Invalid(std::string(key), absl::StrCat("'", key, "' is required."));
    return !required;
  }
  if (!v->is_string() || (required && v->get_string().empty())) {
    *error = Invalid(std::string(key), absl::StrCat("'", key, "' must be a non-empty string."));
    return false;
  }
  if (v->get_string().size() > max_bytes) {
    *error = Invalid(std::string(key), absl::StrCat("'", key, "' is longer than ", max_bytes, " bytes."));
    return false;
  }
  params[key] = *v;
  return true;
}

bool CheckBool(const json::object& f, const std::string& key, json::object& params, HttpError* error) {
  const json::value* v = f.if_contains(key);
  if (!v || v->is_null()) return true;
  if (!v->is_bool()) {
    *error = Invalid(std::string(key), absl::StrCat("'", key, "' must be true or false."));
    return false;
  }
  params[key] = *v;
  return true;
}

bool CheckSeed(const json::object& f, json::object& params, HttpError* error) {
  const json::value* v = f.if_contains("seed");
  if (!v || v->is_null()) return true;
  int64_t seed = 0;
  if (!IntIn(*v, 0, 2147483647, &seed)) {
    *error = Invalid("seed", "'seed' must be an integer from 0 to 2147483647.");
    return false;
  }
  params["seed"] = seed;
  return true;
}

int64_t Seconds(const google::protobuf::Timestamp& t) { return t.seconds(); }

std::string_view StatusName(connector::v1::TaskStatus s) {
  switch (s) {
    case connector::v1::TASK_STATUS_QUEUED: return "queued";
    case connector::v1::TASK_STATUS_RUNNING: return "running";
    case connector::v1::TASK_STATUS_SUCCEEDED: return "succeeded";
    case connector::v1::TASK_STATUS_FAILED: return "failed";
    case connector::v1::TASK_STATUS_CANCELED: return "canceled";
    default: return "unknown";
  }
}

}  // namespace

bool ParseBody(std::string_view body, json::object* fields, std::string* model, HttpError* error) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec || !v.is_object()) {
    *error = HttpError(400, "The request body must be a JSON object.");
    return false;
  }
  *fields = std::move(v.get_object());
  const json::value* m = fields->if_contains("model");
  if (!m || !m->is_string() || m->get_string().empty()) {
    *error = Invalid("model", "'model' is required: the id of an image or video model.");
    return false;
  }
  *model = std::string(m->get_string());
  fields->erase("model");
  return true;
}

bool ValidateParams(std::string_view kind, const json::object& f, MediaRequest* out, HttpError* error) {
  const bool video = kind == "video";
  json::object& params = out->params;
  out->kind = std::string(kind);
  static const std::vector<std::string_view> kImageKeys = {"prompt", "negative_prompt", "n", "size", "seed",
                                                           "prompt_extend", "watermark"};
  static const std::vector<std::string_view> kVideoKeys = {"prompt", "negative_prompt", "duration", "resolution",
                                                           "size", "seed", "prompt_extend", "watermark"};
  const auto& allowed = video ? kVideoKeys : kImageKeys;
  for (const auto& kv : f) {
    if (std::find(allowed.begin(), allowed.end(), kv.key()) == allowed.end()) {
      *error = Invalid(std::string(kv.key()), absl::StrCat("Unknown parameter '", std::string(kv.key()), "' for ",
                                                           video ? "a video" : "an image", " model."));
      return false;
    }
  }
  if (!CheckString(f, "prompt", true, kMaxPromptBytes, params, error)) return false;
  if (!CheckString(f, "negative_prompt", false, kMaxPromptBytes, params, error)) return false;
  if (!CheckSeed(f, params, error)) return false;
  if (!CheckBool(f, "prompt_extend", params, error) || !CheckBool(f, "watermark", params, error)) return false;
  if (!video) {
    int64_t n = 1;
    if (const json::value* v = f.if_contains("n"); v && !v->is_null() && !IntIn(*v, 1, kMaxImages, &n)) {
      *error = Invalid("n", absl::StrCat("'n' must be an integer from 1 to ", kMaxImages, "."));
      return false;
    }
    std::string size = "1024*1024";
    if (const json::value* v = f.if_contains("size"); v && !v->is_null()) {
      if (!v->is_string() || !ParseSize(v->get_string(), kMinImageSide, kMaxImageSide, &size)) {
        *error = Invalid("size", absl::StrCat("'size' must be WIDTHxHEIGHT (or WIDTH*HEIGHT), each side from ",
                                              kMinImageSide, " to ", kMaxImageSide, "."));
        return false;
      }
    }
    params["n"] = n;
    params["size"] = size;
    out->images = n;
    return true;
  }
  int64_t duration = kDefaultVideoSeconds;
  if (const json::value* v = f.if_contains("duration");
      v && !v->is_null() && !IntIn(*v, kMinVideoSeconds, kMaxVideoSeconds, &duration)) {
    *error = Invalid("duration", absl::StrCat("'duration' must be a whole number of seconds from ", kMinVideoSeconds,
                                              " to ", kMaxVideoSeconds, "."));
    return false;
  }
  params["duration"] = duration;
  const json::value* resolution = f.if_contains("resolution");
  const json::value* size = f.if_contains("size");
  if (resolution && !resolution->is_null() && size && !size->is_null()) {
    *error = Invalid("size", "Give 'resolution' or 'size', not both.");
    return false;
  }
  if (size && !size->is_null()) {
    std::string s;
    if (!size->is_string() || !ParseSize(size->get_string(), 240, 1920, &s)) {
      *error = Invalid("size", "'size' must be WIDTHxHEIGHT (or WIDTH*HEIGHT), each side from 240 to 1920.");
      return false;
    }
    params["size"] = s;
  } else {
    std::string r = "720P";
    if (resolution && !resolution->is_null()) {
      if (!resolution->is_string() ||
          (resolution->get_string() != "480P" && resolution->get_string() != "720P" &&
           resolution->get_string() != "1080P")) {
        *error = Invalid("resolution", "'resolution' must be one of 480P, 720P, 1080P.");
        return false;
      }
      r = std::string(resolution->get_string());
    }
    params["resolution"] = r;
  }
  out->video_seconds = duration;
  return true;
}

bool ParseImagesRequest(std::string_view body, MediaRequest* out, bool* b64_json, HttpError* error) {
  json::object fields;
  if (!ParseBody(body, &fields, &out->model, error)) return false;
  *b64_json = false;
  if (const json::value* v = fields.if_contains("response_format"); v && !v->is_null()) {
    if (!v->is_string() || (v->get_string() != "url" && v->get_string() != "b64_json")) {
      *error = Invalid("response_format", "'response_format' must be url or b64_json.");
      return false;
    }
    *b64_json = v->get_string() == "b64_json";
  }
  if (const json::value* v = fields.if_contains("quality"); v && !v->is_null()) {
    static const std::vector<std::string_view> kQualities = {"auto", "standard", "hd", "low", "medium", "high"};
    if (!v->is_string() || std::find(kQualities.begin(), kQualities.end(), v->get_string()) == kQualities.end()) {
      *error = Invalid("quality", "'quality' must be one of auto, standard, hd, low, medium, high.");
      return false;
    }
  }
  if (const json::value* v = fields.if_contains("style"); v && !v->is_null() &&
      (!v->is_string() || (v->get_string() != "vivid" && v->get_string() != "natural"))) {
    *error = Invalid("style", "'style' must be vivid or natural.");
    return false;
  }
  if (const json::value* v = fields.if_contains("user"); v && !v->is_null() && !v->is_string()) {
    *error = Invalid("user", "'user' must be a string.");
    return false;
  }
  // OpenAI's presentation fields shape the answer, not the image the model draws.
  for (std::string_view key : {"response_format", "quality", "style", "user"}) fields.erase(key);
  return ValidateParams("image", fields, out, error);
}

json::object TaskObject(const connector::v1::Task& t) {
  json::object o{{"id", t.id()},
                 {"object", "task"},
                 {"model", t.model()},
                 {"kind", t.kind()},
                 {"status", StatusName(t.status())},
                 {"created_at", Seconds(t.created_at())},
                 {"updated_at", Seconds(t.updated_at())}};
  boost::system::error_code ec;
  json::value params = json::parse(t.params_json(), ec);
  o["params"] = !ec && params.is_object() ? params : json::object();
  if (t.status() == connector::v1::TASK_STATUS_SUCCEEDED) {
    json::array urls;
    for (const auto& u : t.result().urls()) urls.push_back(json::string(u));
    o["result"] = json::object{{"urls", std::move(urls)}, {"expires_at", Seconds(t.result().expires_at())}};
  }
  if (t.has_error() && !t.error().code().empty())
    o["error"] = json::object{{"code", t.error().code()}, {"message", t.error().message()}};
  if (t.status() == connector::v1::TASK_STATUS_SUCCEEDED || t.status() == connector::v1::TASK_STATUS_FAILED ||
      t.status() == connector::v1::TASK_STATUS_CANCELED) {
    json::object usage;
    if (t.kind() == "video") {
      usage["video_count"] = t.usage().video_count();
      usage["video_seconds"] = static_cast<int64_t>(t.usage().video_duration_seconds());
    } else {
      usage["image_count"] = t.usage().image_count();
    }
    o["usage"] = std::move(usage);
  }
  return o;
}

std::string TaskBody(const connector::v1::Task& task) { return json::serialize(TaskObject(task)); }

std::string TaskListBody(const connector::v1::ListTasksResponse& page) {
  json::array data;
  for (const auto& t : page.tasks()) data.push_back(TaskObject(t));
  json::object o{{"object", "list"}, {"data", std::move(data)}, {"has_more", page.has_more()}};
  if (page.has_more()) o["next_cursor"] = page.next_cursor();
  return json::serialize(o);
}

std::string ImagesBody(int64_t created_unix, const std::vector<std::string>& urls,
                       const std::vector<std::string>& b64_images) {
  json::array data;
  for (const auto& u : urls) data.push_back(json::object{{"url", u}});
  for (const auto& b : b64_images) data.push_back(json::object{{"b64_json", b}});
  return json::serialize(json::object{{"created", created_unix}, {"data", std::move(data)}});
}

}  // namespace nexusflow::gateway::media
