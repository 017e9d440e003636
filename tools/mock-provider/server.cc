#include "server.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <csignal>
#include <exception>
#include <iostream>
#include <memory>
#include <optional>
#include <string_view>
#include <thread>
#include <variant>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include "anthropic.h"
#include "chat.h"
#include "dashscope.h"
#include "embeddings.h"
#include "faults.h"
#include "gemini.h"
#include "prompt_cache.h"
#include "stream_stats.h"

namespace nexusflow::mock {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Request = http::request<http::string_body>;

// Every asynchronous call reports failure as an error_code: no exceptions on the request path.
constexpr auto kNoThrow = asio::as_tuple(asio::use_awaitable);

constexpr std::uint32_t kMaxHeaderBytes = 64 * 1024;
constexpr std::chrono::seconds kIoTimeout{60};  // reading one body or writing one response
constexpr std::chrono::seconds kDrainTimeout{5};
constexpr std::size_t kMaxDrainBytes = 64 * 1024 * 1024;
constexpr std::size_t kDrainChunkBytes = 64 * 1024;
constexpr std::size_t kWatchReadBytes = 4 * 1024;

std::string_view View(beast::string_view s) { return {s.data(), s.size()}; }

void ReportFailure(std::exception_ptr failure) {
  if (!failure) return;
  try {
    std::rethrow_exception(failure);
  } catch (const std::exception& e) {
    std::cerr << "mock-provider: connection aborted: " << e.what() << '\n';
  } catch (...) {
    std::cerr << "mock-provider: connection aborted by an unknown exception\n";
  }
}

asio::awaitable<void> Sleep(std::int64_t ms) {
  if (ms <= 0) co_return;
  auto executor = co_await asio::this_coro::executor;
  asio::steady_timer timer(executor, std::chrono::milliseconds(ms));
  co_await timer.async_wait(kNoThrow);
}

// A complete non-streaming answer.
struct Answer {
  unsigned status = 200;
  std::string_view content_type = "application/json";
  std::string body;
};

// The process's shared state: the flags and the prompt cache every connection consults.
struct ServerState {
  MockOptions options;
  PromptCache cache;
  std::unique_ptr<DashScopeTasks> media_tasks;  // DashScope's async image and video tasks
  DeploymentFaults faults;  // per-deployment faults set through /mock/deployments
};

// The value of `name` in the query string of `target` (not percent-decoded).
std::string_view QueryParam(std::string_view target, std::string_view name) {
  const std::size_t question = target.find('?');
  if (question == std::string_view::npos) return {};
  std::string_view query = target.substr(question + 1);
  while (!query.empty()) {
    const std::size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    if (pair.size() > name.size() && pair.starts_with(name) && pair[name.size()] == '=') {
      return pair.substr(name.size() + 1);
    }
    if (amp == std::string_view::npos) break;
    query = query.substr(amp + 1);
  }
  return {};
}

std::string_view BearerToken(const Request& req) {
  constexpr std::string_view kBearer = "Bearer ";
  const std::string_view authorization = View(req[http::field::authorization]);
  return authorization.starts_with(kBearer) ? authorization.substr(kBearer.size()) : std::string_view();
}

// The error a request without the right key gets, in each vendor's words: OpenAI wants
// `Authorization: Bearer`; Anthropic `x-api-key` (the Node SDK 1.x sends Bearer, so both);
// Gemini `x-goog-api-key` or `?key=`, answering a missing key 403 and a wrong one 400
// API_KEY_INVALID, as Google does.
struct KeyFailure {
  RequestError error;
  std::string_view reason;  // Gemini ErrorInfo reason
};

std::optional<KeyFailure> OpenAiKeyCheck(const Request& req, std::string_view, const std::string& key) {
  if (View(req[http::field::authorization]).empty()) {
    return KeyFailure{RequestError{401,
                                   "You didn't provide an API key. You need to provide your API key "
                                   "in an Authorization header using Bearer auth (i.e. "
                                   "Authorization: Bearer YOUR_KEY).",
                                   {},
                                   {}},
                      {}};
  }
  if (BearerToken(req) != key) return KeyFailure{ErrorForStatus(401, "Incorrect API key provided."), {}};
  return std::nullopt;
}

std::optional<KeyFailure> AnthropicKeyCheck(const Request& req, std::string_view, const std::string& key) {
  const std::string_view sent = View(req["x-api-key"]);
  const std::string_view bearer = BearerToken(req);
  if (sent.empty() && bearer.empty()) {
    return KeyFailure{RequestError{401, "x-api-key header is required", {}, {}}, {}};
  }
  if (sent != key && bearer != key) return KeyFailure{RequestError{401, "invalid x-api-key", {}, {}}, {}};
  return std::nullopt;
}

std::optional<KeyFailure> GeminiKeyCheck(const Request& req, std::string_view target, const std::string& key) {
  std::string_view sent = View(req["x-goog-api-key"]);
  if (sent.empty()) sent = QueryParam(target, "key");
  if (sent.empty() && !View(req[http::field::authorization]).empty()) {
    return KeyFailure{RequestError{401,
                                   "Request had invalid authentication credentials. Expected OAuth 2 "
                                   "access token, login cookie or other valid authentication "
                                   "credential.",
                                   {},
                                   {}},
                      {}};
  }
  if (sent.empty()) {
    return KeyFailure{RequestError{403,
                                   "Method doesn't allow unregistered callers (callers without "
                                   "established identity). Please use API Key or other form of API "
                                   "consumer identity to call this API.",
                                   {},
                                   {}},
                      {}};
  }
  if (sent != key) {
    return KeyFailure{RequestError{400, "API key not valid. Please pass a valid API key.", {}, {}},
                      "API_KEY_INVALID"};
  }
  return std::nullopt;
}

std::optional<KeyFailure> DashScopeKeyCheck(const Request& req, std::string_view, const std::string& key) {
  if (View(req[http::field::authorization]).empty()) {
    return KeyFailure{RequestError{401, "No API-key provided.", {}, "InvalidApiKey"}, {}};
  }
  if (BearerToken(req) != key) {
    return KeyFailure{RequestError{401, "Invalid API-key provided.", {}, "InvalidApiKey"}, {}};
  }
  return std::nullopt;
}

// The wire protocols the mock speaks. Each row of kCodecs below holds what differs
// between them (key check, required header, error body, answer serialisers), so the request
// path never switches on the protocol.
enum class Protocol { kOpenAi, kAnthropic, kGemini, kDashScope };

// The frames of one streamed answer and the error event that replaces its end when
// `[mock:status=N]` and `[mock:drop-after=K]` are combined.
struct StreamPlan {
  std::string_view content_type;
  std::vector<SseFrame> frames;
  std::string error_first;  // the error when nothing was sent yet (Gemini's JSON array opens with it)
  std::string error_later;
};

struct Codec {
  std::string_view name;  // also the prompt cache's scope
  std::optional<KeyFailure> (*check_key)(const Request&, std::string_view target, const std::string& key);
  std::string_view required_header;  // answered 400 when absent (Anthropic's version header)
  bool request_id_header;            // also send the request id as `request-id` (Anthropic's)
  std::string_view json_content_type;
  std::string (*error_body)(const RequestError&, std::string_view request_id, std::string_view reason);
  std::string (*sync_body)(const Reply&);
  StreamPlan (*stream_plan)(const Reply&, const RequestError& midstream_error);
};

constexpr std::string_view kSseContentType = "text/event-stream; charset=utf-8";

const Codec kCodecs[] = {  // indexed by Protocol
    {"openai", OpenAiKeyCheck, {}, false, "application/json",
     [](const RequestError& e, std::string_view, std::string_view) { return ErrorBody(e); },
     [](const Reply& r) { return ChatCompletionBody(r, NewResponseIds()); },
     [](const Reply& r, const RequestError& e) {
       std::string error = ChatStreamErrorFrame(e);
       return StreamPlan{kSseContentType, ChatStreamFrames(r, NewResponseIds()), error, error};
     }},
    {"anthropic", AnthropicKeyCheck, "anthropic-version", true, "application/json",
     [](const RequestError& e, std::string_view id, std::string_view) { return AnthropicErrorBody(e, id); },
     [](const Reply& r) { return MessageBody(r, MessageIdsFor(r)); },
     [](const Reply& r, const RequestError& e) {
       std::string error = MessageStreamErrorFrame(e);
       return StreamPlan{kSseContentType, MessageStreamFrames(r, MessageIdsFor(r)), error, error};
     }},
    {"gemini", GeminiKeyCheck, {}, false, "application/json; charset=UTF-8",
     [](const RequestError& e, std::string_view, std::string_view reason) { return GeminiErrorBody(e, reason); },
     [](const Reply& r) { return GenerateContentBody(r, NewResponseId()); },
     [](const Reply& r, const RequestError& e) {
       return StreamPlan{r.gemini_sse ? std::string_view("text/event-stream")
                                      : std::string_view("application/json; charset=UTF-8"),
                         GenerateContentStreamFrames(r, NewResponseId()),
                         GeminiStreamErrorFrame(e, r.gemini_sse, true),
                         GeminiStreamErrorFrame(e, r.gemini_sse, false)};
     }},
    // DashScope's native API: only the async media endpoints, which never stream.
    {"dashscope", DashScopeKeyCheck, {}, false, "application/json",
     [](const RequestError& e, std::string_view id, std::string_view) { return DashScopeErrorBody(e, id); },
     [](const Reply&) { return std::string(); },
     [](const Reply&, const RequestError&) { return StreamPlan{}; }},
};

const Codec& CodecFor(Protocol protocol) { return kCodecs[static_cast<int>(protocol)]; }

// Which protocol's error body a path gets, also when the route is unknown.
Protocol ProtocolOf(std::string_view path) {
  if (path == "/v1/messages" || path.starts_with("/v1/messages/")) return Protocol::kAnthropic;
  if (path.starts_with("/v1beta/")) return Protocol::kGemini;
  if (path.starts_with("/api/v1/")) return Protocol::kDashScope;
  return Protocol::kOpenAi;
}

Answer ErrorAnswer(Protocol protocol, const RequestError& error, std::string_view request_id,
                   std::string_view reason = {}) {
  const Codec& codec = CodecFor(protocol);
  return Answer{static_cast<unsigned>(error.status), codec.json_content_type,
                codec.error_body(error, request_id, reason)};
}

// Writes `answer`; returns whether the connection stays open.
//
// GCC 12 miscompiles temporaries with destructors inside a co_await expression (they may be
// freed twice), so the coroutines here only ever co_await calls whose arguments are named
// objects or trivially destructible values.
// `retry_after` is sent as Retry-After; when empty a 429 carries "1".
asio::awaitable<bool> Respond(beast::tcp_stream& stream, const Request& req, Protocol protocol,
                              const std::string& request_id, Answer& answer,
                              std::string_view retry_after = {}) {
  http::response<http::string_body> res;
  res.version(req.version());
  res.result(answer.status);
  res.set(http::field::content_type, answer.content_type);
  res.set("x-request-id", request_id);
  if (CodecFor(protocol).request_id_header) res.set("request-id", request_id);
  if (!retry_after.empty()) {
    res.set(http::field::retry_after, retry_after);
  } else if (answer.status == 429) {
    res.set(http::field::retry_after, "1");
  }
  res.keep_alive(req.keep_alive());
  res.body() = std::move(answer.body);
  res.prepare_payload();
  stream.expires_after(kIoTimeout);
  auto [ec, written] = co_await http::async_write(stream, res, kNoThrow);
  co_return !ec && res.keep_alive();
}

// Answers a request that cannot be read to its end, then closes. The unread input is
// drained first: closing with unread data would reset the connection and could destroy
// the answer before the client reads it.
asio::awaitable<void> RejectAndClose(beast::tcp_stream& stream, Protocol protocol, unsigned status,
                                     const std::string& message) {
  const std::string request_id = "req_" + RandomHex(24);
  const Answer answer =
      ErrorAnswer(protocol, RequestError{static_cast<int>(status), message, {}, {}}, request_id);
  http::response<http::string_body> res;
  res.version(11);
  res.result(status);
  res.set(http::field::content_type, answer.content_type);
  res.set("x-request-id", request_id);
  if (CodecFor(protocol).request_id_header) res.set("request-id", request_id);
  res.keep_alive(false);
  res.body() = answer.body;
  res.prepare_payload();
  stream.expires_after(kIoTimeout);
  auto [ec, written] = co_await http::async_write(stream, res, kNoThrow);
  if (ec) co_return;
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  stream.expires_after(kDrainTimeout);
  std::vector<char> sink(kDrainChunkBytes);
  for (std::size_t drained = 0; drained < kMaxDrainBytes;) {
    auto [read_ec, n] = co_await stream.async_read_some(asio::buffer(sink), kNoThrow);
    if (read_ec) break;
    drained += n;
  }
}

void AppendFrame(std::string& out, std::string_view data, bool chunked) {
  if (chunked) {
    char size[16];
    auto [end, ec] = std::to_chars(size, size + sizeof(size), data.size(), 16);
    out.append(size, end);
    out += "\r\n";
    out += data;
    out += "\r\n";
  } else {
    out += data;
  }
}

asio::awaitable<bool> Flush(beast::tcp_stream& stream, std::string& out) {
  if (out.empty()) co_return true;
  stream.expires_after(kIoTimeout);
  auto [ec, written] = co_await asio::async_write(stream, asio::buffer(out), kNoThrow);
  out.clear();
  co_return !ec;
}

// Notices a streaming client going away while the stream waits between chunks, when no
// write can fail. From the stream's first wait until its end one read stays pending on the
// socket: bytes that arrive (a pipelined next request) are appended to the connection's
// buffer for the next parse; EOF or an error means the client is gone, and the stream's
// pending wait and write are cancelled. With more than kMaxHeaderBytes of pipelined input
// buffered the watch stops reading, and only a failed write notices the client leaving.
class PeerWatch {
 public:
  PeerWatch(beast::tcp_stream& stream, beast::flat_buffer& buffer)
      : stream_(stream),
        buffer_(buffer),
        wake_(stream.get_executor()),
        finished_(stream.get_executor()) {}
  PeerWatch(const PeerWatch&) = delete;
  PeerWatch& operator=(const PeerWatch&) = delete;

  bool gone() const { return gone_; }

  // Waits `ms` (starting the read on first use); false when the client is gone.
  asio::awaitable<bool> Wait(std::int64_t ms) {
    if (!started_) Start();
    if (gone_) co_return false;
    wake_.expires_after(std::chrono::milliseconds(ms));
    co_await wake_.async_wait(kNoThrow);
    co_return !gone_;
  }

  // Ends the read. Must be awaited before the stream or the buffer is destroyed.
  asio::awaitable<void> Stop() {
    stopping_ = true;
    if (!reading_) co_return;
    beast::error_code ignored;
    stream_.socket().cancel(ignored);
    while (reading_) {  // Read() cancels finished_ when it returns
      finished_.expires_at(asio::steady_timer::time_point::max());
      co_await finished_.async_wait(kNoThrow);
    }
  }

 private:
  void Start() {
    started_ = true;
    reading_ = true;
    asio::co_spawn(stream_.get_executor(), Read(), [this](std::exception_ptr failure) {
      if (!failure) return;
      reading_ = false;
      finished_.cancel();
      ReportFailure(failure);
    });
  }

  asio::awaitable<void> Read() {
    while (!stopping_ && buffer_.size() < kMaxHeaderBytes) {
      auto space = buffer_.prepare(kWatchReadBytes);
      auto [ec, n] = co_await stream_.socket().async_read_some(space, kNoThrow);
      buffer_.commit(n);
      if (ec) {
        if (!stopping_) {
          gone_ = true;
          wake_.cancel();
          beast::error_code ignored;
          stream_.socket().cancel(ignored);  // a write blocked on a full socket buffer
        }
        break;
      }
    }
    reading_ = false;
    finished_.cancel();
  }

  beast::tcp_stream& stream_;
  beast::flat_buffer& buffer_;
  asio::steady_timer wake_;      // the stream's current wait
  asio::steady_timer finished_;  // Stop() waits on it for Read() to return
  bool started_ = false;
  bool reading_ = false;
  bool stopping_ = false;
  bool gone_ = false;
};

// Writes the frames of a streamed answer. Frames produced at the same instant share one
// write; before every wait the pending bytes are flushed, so a client sees each delayed
// chunk when it is produced. The first frame waits --ttft-ms (+ [mock:delay]), every later
// content frame the chunk delay; [mock:drop-after=N] ends the stream before the (N+1)th
// content frame or the finish frame, with the protocol's error event first when the request
// also carries [mock:status].
asio::awaitable<StreamEnd> WriteStream(beast::tcp_stream& stream, PeerWatch& watch,
                                       const Request& req, Protocol protocol,
                                       const std::string& request_id,
                                       const StreamPlan& plan, const MockMarkers& markers,
                                       const MockOptions& options) {
  const bool chunked = req.version() >= 11;
  const bool keep_alive = chunked && req.keep_alive();
  std::string out = chunked ? "HTTP/1.1 200 OK\r\n" : "HTTP/1.0 200 OK\r\n";
  out += "Content-Type: ";
  out += plan.content_type;
  out += "\r\nCache-Control: no-cache\r\nx-request-id: ";
  out += request_id;
  out += "\r\n";
  if (CodecFor(protocol).request_id_header) {
    out += "request-id: ";
    out += request_id;
    out += "\r\n";
  }
  if (chunked) out += "Transfer-Encoding: chunked\r\n";
  if (!keep_alive) out += "Connection: close\r\n";
  out += "\r\n";

  const std::int64_t chunk_delay_ms = markers.chunk_delay_ms.value_or(std::int64_t{options.chunk_delay_ms});
  const std::optional<int>& drop_after = markers.drop_after;
  const bool error_at_drop = markers.status >= 400;
  int content_sent = 0;
  bool first = true;
  for (const SseFrame& frame : plan.frames) {
    if (drop_after && ((frame.kind == FrameKind::kContent && content_sent >= *drop_after) ||
                       frame.kind == FrameKind::kFinish)) {
      if (error_at_drop) {
        AppendFrame(out, first ? plan.error_first : plan.error_later, chunked);
        if (chunked) out += "0\r\n\r\n";
      }
      co_await Flush(stream, out);
      co_return StreamEnd::kDropped;
    }
    std::int64_t wait_ms = 0;
    if (first) {
      wait_ms = options.ttft_ms + markers.delay_ms;
    } else if (frame.kind == FrameKind::kContent) {
      wait_ms = chunk_delay_ms;
    }
    if (wait_ms > 0) {
      if (!co_await Flush(stream, out)) co_return StreamEnd::kAborted;
      if (!co_await watch.Wait(wait_ms)) co_return StreamEnd::kAborted;
    }
    AppendFrame(out, frame.bytes, chunked);
    first = false;
    if (frame.kind == FrameKind::kContent) ++content_sent;
  }
  if (chunked) out += "0\r\n\r\n";
  if (!co_await Flush(stream, out)) co_return StreamEnd::kAborted;
  co_return StreamEnd::kCompleted;
}

// Streams the answer and counts it in ProcessStreamStats(); returns whether the connection
// stays open. HTTP/1.0 clients get a close-delimited body instead of chunked encoding.
asio::awaitable<bool> StreamReply(beast::tcp_stream& stream, beast::flat_buffer& buffer,
                                  const Request& req, Protocol protocol, const std::string& request_id,
                                  const StreamPlan& plan, const MockMarkers& markers,
                                  const MockOptions& options) {
  StreamTracker tracker(ProcessStreamStats());
  PeerWatch watch(stream, buffer);
  const StreamEnd end = co_await WriteStream(stream, watch, req, protocol, request_id, plan, markers, options);
  co_await watch.Stop();
  tracker.End(end);
  if (end == StreamEnd::kDropped) {
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream.close();
  }
  co_return end == StreamEnd::kCompleted && req.version() >= 11 && req.keep_alive();
}

// Every endpoint the mock serves, in one place. The Gemini row is a prefix: the rest of the
// path is `{model}:{method}`, resolved by kGeminiMethods.
enum class Endpoint {
  kHealth,
  kStats,
  kResetPeak,
  kModels,
  kModel,
  kChatCompletions,
  kMessages,
  kCountMessageTokens,
  kGeminiModel,
  kGenerateContent,
  kStreamGenerateContent,
  kCountGeminiTokens,
  kEmbeddings,
  kImageSynthesis,
  kVideoSynthesis,
  kMediaTask,
  kCancelMediaTask,
  kMediaFile,
  kMediaTaskList,
  kDeployments,
  kSetDeploymentFault,
  kClearDeploymentFault,
  kNotFound,
};

struct Route {
  http::verb method;
  std::string_view path;
  bool prefix;  // the path continues with an id
  Endpoint endpoint;
};

constexpr Route kRoutes[] = {
    {http::verb::get, "/healthz", false, Endpoint::kHealth},
    {http::verb::get, "/mock/stats", false, Endpoint::kStats},
    {http::verb::post, "/mock/stats/reset-peak", false, Endpoint::kResetPeak},
    {http::verb::get, "/v1/models", false, Endpoint::kModels},
    {http::verb::get, "/v1/models/", true, Endpoint::kModel},
    {http::verb::post, "/v1/chat/completions", false, Endpoint::kChatCompletions},
    {http::verb::post, "/v1/messages", false, Endpoint::kMessages},
    {http::verb::post, "/v1/embeddings", false, Endpoint::kEmbeddings},
    {http::verb::post, "/v1/messages/count_tokens", false, Endpoint::kCountMessageTokens},
    {http::verb::post, "/v1beta/models/", true, Endpoint::kGeminiModel},
    {http::verb::post, "/api/v1/services/aigc/text2image/image-synthesis", false, Endpoint::kImageSynthesis},
    {http::verb::post, "/api/v1/services/aigc/video-generation/video-synthesis", false, Endpoint::kVideoSynthesis},
    {http::verb::get, "/api/v1/tasks/", true, Endpoint::kMediaTask},
    {http::verb::post, "/api/v1/tasks/", true, Endpoint::kCancelMediaTask},  // {id}/cancel
    {http::verb::get, "/mock/dashscope/files/", true, Endpoint::kMediaFile},
    {http::verb::get, "/mock/dashscope/tasks", false, Endpoint::kMediaTaskList},
    {http::verb::get, "/mock/deployments", false, Endpoint::kDeployments},
    {http::verb::put, "/mock/deployments/", true, Endpoint::kSetDeploymentFault},
    {http::verb::delete_, "/mock/deployments/", true, Endpoint::kClearDeploymentFault},
};

constexpr std::pair<std::string_view, Endpoint> kGeminiMethods[] = {
    {"generateContent", Endpoint::kGenerateContent},
    {"streamGenerateContent", Endpoint::kStreamGenerateContent},
    {"countTokens", Endpoint::kCountGeminiTokens},
};

struct RouteMatch {
  Endpoint endpoint = Endpoint::kNotFound;
  std::string_view id;  // the model id of `/v1/models/{id}` and `/v1beta/models/{id}:method`, a task id
};

RouteMatch MatchRoute(http::verb method, std::string_view path) {
  for (const Route& route : kRoutes) {
    if (route.method != method) continue;
    if (!route.prefix) {
      if (path == route.path) return RouteMatch{route.endpoint, {}};
      continue;
    }
    if (!path.starts_with(route.path) || path.size() == route.path.size()) continue;
    const std::string_view rest = path.substr(route.path.size());
    if (route.endpoint == Endpoint::kCancelMediaTask) {
      constexpr std::string_view kCancel = "/cancel";
      if (!rest.ends_with(kCancel) || rest.size() == kCancel.size()) return {};
      return RouteMatch{route.endpoint, rest.substr(0, rest.size() - kCancel.size())};
    }
    if (route.endpoint == Endpoint::kMediaTask && rest.find('/') != std::string_view::npos) return {};
    if (route.endpoint != Endpoint::kGeminiModel) return RouteMatch{route.endpoint, rest};
    const std::size_t colon = rest.rfind(':');
    if (colon == std::string_view::npos || colon == 0) return {};
    for (const auto& [name, endpoint] : kGeminiMethods) {
      if (rest.substr(colon + 1) == name) return RouteMatch{endpoint, rest.substr(0, colon)};
    }
    return {};
  }
  return {};
}

// The planned answer of a completion endpoint (chat, messages, generateContent).
std::variant<Reply, RequestError> PlanCompletion(const RouteMatch& route, const Request& req,
                                                 std::string_view target, const MockOptions& options) {
  switch (route.endpoint) {
    case Endpoint::kChatCompletions:
      return PlanChatReply(req.body(), options.reply_words);
    case Endpoint::kMessages:
      return PlanMessagesReply(req.body(), options.reply_words);
    case Endpoint::kGenerateContent:
    case Endpoint::kStreamGenerateContent: {
      const GeminiOptions gemini{options.reply_words, options.gemini_cache_min_tokens};
      std::variant<Reply, RequestError> planned = PlanGenerateContent(route.id, req.body(), gemini);
      if (Reply* reply = std::get_if<Reply>(&planned)) {
        reply->stream = route.endpoint == Endpoint::kStreamGenerateContent;
        reply->gemini_sse = QueryParam(target, "alt") == "sse";
      }
      return planned;
    }
    default:
      return RequestError{404, "not a completion endpoint", {}, {}};
  }
}

bool IsCompletion(Endpoint endpoint) {
  return endpoint == Endpoint::kChatCompletions || endpoint == Endpoint::kMessages ||
         endpoint == Endpoint::kGenerateContent || endpoint == Endpoint::kStreamGenerateContent;
}

// Plans and answers a completion request: its error, the forced status, a stream or the
// complete body. Returns whether the connection stays open.
asio::awaitable<bool> AnswerCompletion(beast::tcp_stream& stream, beast::flat_buffer& buffer,
                                       const Request& req, const std::string& request_id,
                                       Protocol protocol, RouteMatch route, ServerState& state) {
  const MockOptions& options = state.options;
  std::variant<Reply, RequestError> planned = PlanCompletion(route, req, View(req.target()), options);
  Answer answer;
  if (const RequestError* error = std::get_if<RequestError>(&planned)) {
    answer = ErrorAnswer(protocol, *error, request_id);
    co_return co_await Respond(stream, req, protocol, request_id, answer);
  }
  Reply& reply = std::get<Reply>(planned);
  const MockMarkers& markers = reply.markers;
  // With drop-after as well, a streamed answer starts and the status comes as an error event.
  const bool error_mid_stream = reply.stream && markers.drop_after.has_value();
  if (markers.status >= 400 && !error_mid_stream) {
    co_await Sleep(markers.delay_ms);
    answer = ErrorAnswer(protocol, ForcedStatusError(markers.status), request_id);
    co_return co_await Respond(stream, req, protocol, request_id, answer);
  }
  reply.usage.cache = state.cache.Resolve(CodecFor(protocol).name, reply.cache);
  if (reply.stream) {
    const StreamPlan plan = CodecFor(protocol).stream_plan(reply, ForcedStatusError(markers.status));
    co_return co_await StreamReply(stream, buffer, req, protocol, request_id, plan, markers, options);
  }
  co_await Sleep(std::int64_t{options.latency_ms} + markers.delay_ms);
  answer.content_type = CodecFor(protocol).json_content_type;
  answer.body = CodecFor(protocol).sync_body(reply);
  co_return co_await Respond(stream, req, protocol, request_id, answer);
}

// Every other answer, at once: key and header checks, operations routes, token counts, 404.
Answer ImmediateAnswer(const Request& req, std::string_view path, Protocol protocol,
                       const RouteMatch& route, const std::string& request_id) {
  switch (route.endpoint) {
    case Endpoint::kHealth:
      return Answer{200, "text/plain; charset=utf-8", "ok"};
    case Endpoint::kStats:
      return Answer{200, "application/json", StreamStatsBody(ProcessStreamStats().Snapshot())};
    case Endpoint::kResetPeak:
      ProcessStreamStats().ResetPeak();
      return Answer{200, "application/json", StreamStatsBody(ProcessStreamStats().Snapshot())};
    case Endpoint::kModels:
      return Answer{200, "application/json", ModelListBody()};
    case Endpoint::kModel:
      if (std::optional<std::string> model = ModelBody(route.id)) {
        return Answer{200, "application/json", std::move(*model)};
      }
      return ErrorAnswer(protocol,
                         RequestError{404, "The model '" + std::string(route.id) + "' does not exist",
                                      "model", "model_not_found"},
                         request_id);
    case Endpoint::kCountMessageTokens: {
      std::variant<std::int64_t, RequestError> counted = CountMessageTokens(req.body());
      if (const RequestError* error = std::get_if<RequestError>(&counted)) {
        return ErrorAnswer(protocol, *error, request_id);
      }
      return Answer{200, "application/json", MessageTokenCountBody(std::get<std::int64_t>(counted))};
    }
    case Endpoint::kEmbeddings: {
      std::variant<std::string, RequestError> answered = EmbeddingsBody(req.body());
      if (const RequestError* error = std::get_if<RequestError>(&answered)) {
        return ErrorAnswer(protocol, *error, request_id);
      }
      return Answer{200, "application/json", std::move(std::get<std::string>(answered))};
    }
    case Endpoint::kCountGeminiTokens: {
      std::variant<std::int64_t, RequestError> counted = CountGeminiTokens(route.id, req.body());
      if (const RequestError* error = std::get_if<RequestError>(&counted)) {
        return ErrorAnswer(protocol, *error, request_id);
      }
      return Answer{200, "application/json; charset=UTF-8",
                    GeminiTokenCountBody(std::get<std::int64_t>(counted))};
    }
    default:
      return ErrorAnswer(protocol,
                         RequestError{404,
                                      "Invalid URL (" + std::string(View(req.method_string())) + " " +
                                          std::string(path) + ")",
                                      {},
                                      {}},
                         request_id);
  }
}

bool IsMedia(Endpoint endpoint) {
  return endpoint == Endpoint::kImageSynthesis || endpoint == Endpoint::kVideoSynthesis ||
         endpoint == Endpoint::kMediaTask || endpoint == Endpoint::kCancelMediaTask ||
         endpoint == Endpoint::kMediaFile || endpoint == Endpoint::kMediaTaskList;
}

// DashScope's async media endpoints and the result files, at the steady clock's now.
Answer MediaAnswer(const Request& req, std::string_view path, const RouteMatch& route,
                   const std::string& request_id, ServerState& state) {
  DashScopeTasks& tasks = *state.media_tasks;
  const auto now = std::chrono::steady_clock::now();
  DashScopeAnswer answered;
  switch (route.endpoint) {
    case Endpoint::kImageSynthesis:
    case Endpoint::kVideoSynthesis: {
      const MediaKind kind = route.endpoint == Endpoint::kImageSynthesis ? MediaKind::kImage : MediaKind::kVideo;
      answered = tasks.Submit(kind, req.body(), View(req["X-DashScope-Async"]), View(req[http::field::host]),
                              request_id, now);
      break;
    }
    case Endpoint::kMediaTask:
      answered = tasks.Get(route.id, request_id, now);
      break;
    case Endpoint::kCancelMediaTask:
      answered = tasks.Cancel(route.id, request_id, now);
      break;
    case Endpoint::kMediaTaskList:
      answered = tasks.List(now);
      break;
    default:
      if (std::optional<DashScopeAnswer> file = tasks.File(path, now)) {
        answered = std::move(*file);
      } else {
        return Answer{404, "text/plain; charset=utf-8", "not found"};
      }
  }
  Answer answer;
  answer.status = static_cast<unsigned>(answered.status);
  answer.content_type = answered.content_type;
  answer.body = std::move(answered.body);
  return answer;
}

// The control endpoint: GET /mock/deployments, PUT and DELETE /mock/deployments/{name}.
Answer ControlAnswer(const Request& req, const RouteMatch& route, ServerState& state) {
  if (route.endpoint == Endpoint::kSetDeploymentFault) {
    if (std::optional<std::string> error = state.faults.Set(route.id, req.body())) {
      return Answer{400, "application/json",
                    boost::json::serialize(boost::json::object{{"error", *error}})};
    }
  } else if (route.endpoint == Endpoint::kClearDeploymentFault) {
    state.faults.Clear(route.id);
  }
  return Answer{200, "application/json", state.faults.Body()};
}

bool IsControl(Endpoint endpoint) {
  return endpoint == Endpoint::kDeployments || endpoint == Endpoint::kSetDeploymentFault ||
         endpoint == Endpoint::kClearDeploymentFault;
}

// Routes one request; returns whether the connection stays open.
asio::awaitable<bool> HandleRequest(beast::tcp_stream& stream, beast::flat_buffer& buffer,
                                    const Request& req, ServerState& state) {
  const std::string request_id = "req_" + RandomHex(24);
  const std::string_view target = View(req.target());
  // /d/{deployment}/… is deployment {deployment}'s base URL; the rest routes as usual.
  const auto [deployment, path] = SplitDeployment(target.substr(0, target.find('?')));
  const Protocol protocol = ProtocolOf(path);
  const RouteMatch route = MatchRoute(req.method(), path);

  if (IsControl(route.endpoint)) {
    Answer control = ControlAnswer(req, route, state);
    co_return co_await Respond(stream, req, protocol, request_id, control);
  }
  if (IsCompletion(route.endpoint) || route.endpoint == Endpoint::kEmbeddings) {
    const FaultDecision fault = state.faults.Next(deployment);
    co_await Sleep(fault.stall_ms);
    if (fault.status >= 400) {
      Answer failed = ErrorAnswer(protocol, ForcedStatusError(fault.status), request_id);
      const std::string_view retry_after = fault.retry_after;
      co_return co_await Respond(stream, req, protocol, request_id, failed, retry_after);
    }
  }

  const Codec& codec = CodecFor(protocol);
  std::optional<KeyFailure> key_failure;
  if (!state.options.api_key.empty() &&
      (path.starts_with("/v1/") || path.starts_with("/v1beta/") || path.starts_with("/api/v1/"))) {
    key_failure = codec.check_key(req, target, state.options.api_key);
  }
  Answer answer;
  if (key_failure) {
    answer = ErrorAnswer(protocol, key_failure->error, request_id, key_failure->reason);
  } else if (!codec.required_header.empty() && route.endpoint != Endpoint::kNotFound &&
             req[codec.required_header].empty()) {
    answer = ErrorAnswer(protocol,
                         RequestError{400, std::string(codec.required_header) + ": header is required", {}, {}},
                         request_id);
  } else if (IsCompletion(route.endpoint)) {
    co_return co_await AnswerCompletion(stream, buffer, req, request_id, protocol, route, state);
  } else if (IsMedia(route.endpoint)) {
    answer = MediaAnswer(req, path, route, request_id, state);
  } else {
    answer = ImmediateAnswer(req, path, protocol, route, request_id);
  }
  co_return co_await Respond(stream, req, protocol, request_id, answer);
}

bool IsMalformedRequest(const beast::error_code& ec) {
  static const auto& http_category = make_error_code(http::error::bad_method).category();
  return ec.category() == http_category && ec != http::error::end_of_stream &&
         ec != http::error::partial_message;
}

asio::awaitable<void> ServeConnection(tcp::socket socket, std::shared_ptr<ServerState> state) {
  const MockOptions* options = &state->options;
  static const std::string kTooLarge = "Request body too large; the limit is 8 MiB.";
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(kMaxHeaderBytes);
    parser.body_limit(kMaxBodyBytes);

    stream.expires_after(std::chrono::seconds(options->idle_timeout_s));
    auto [header_ec, header_bytes] =
        co_await http::async_read_header(stream, buffer, parser, kNoThrow);
    if (header_ec == http::error::body_limit) {
      const std::string_view target = View(parser.get().target());
      co_await RejectAndClose(stream, ProtocolOf(target.substr(0, target.find('?'))), 413, kTooLarge);
      co_return;
    }
    if (header_ec) {
      if (IsMalformedRequest(header_ec)) {
        const std::string message = "Malformed HTTP request: " + header_ec.message();
        co_await RejectAndClose(stream, Protocol::kOpenAi, 400, message);
      }
      break;
    }

    if (!parser.is_done()) {
      const Request& head = parser.get();
      if (head.version() >= 11 && beast::iequals(head[http::field::expect], "100-continue")) {
        http::response<http::empty_body> proceed{http::status::continue_, 11};
        stream.expires_after(kIoTimeout);
        auto [continue_ec, continue_bytes] = co_await http::async_write(stream, proceed, kNoThrow);
        if (continue_ec) break;
      }
      stream.expires_after(kIoTimeout);
      auto [body_ec, body_bytes] = co_await http::async_read(stream, buffer, parser, kNoThrow);
      if (body_ec == http::error::body_limit) {
        const std::string_view target = View(parser.get().target());
        co_await RejectAndClose(stream, ProtocolOf(target.substr(0, target.find('?'))), 413, kTooLarge);
        co_return;
      }
      if (body_ec) {
        if (IsMalformedRequest(body_ec)) {
          const std::string message = "Malformed HTTP request: " + body_ec.message();
          co_await RejectAndClose(stream, Protocol::kOpenAi, 400, message);
        }
        break;
      }
    }

    if (!co_await HandleRequest(stream, buffer, parser.get(), *state)) break;
  }
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

// Accepts on one context and hands connections round-robin to the others; each context
// runs on its own thread, so a connection never needs a strand.
asio::awaitable<void> AcceptConnections(tcp::acceptor& acceptor,
                                        std::vector<std::unique_ptr<asio::io_context>>& contexts,
                                        std::shared_ptr<ServerState> state) {
  std::size_t next = 0;
  while (acceptor.is_open()) {
    asio::io_context& context = *contexts[next++ % contexts.size()];
    tcp::socket socket(context);
    auto [ec] = co_await acceptor.async_accept(socket, kNoThrow);
    if (ec == asio::error::operation_aborted) co_return;
    if (ec) {
      // Typically out of file descriptors: pause instead of spinning on the error.
      co_await Sleep(10);
      continue;
    }
    beast::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    asio::co_spawn(context, ServeConnection(std::move(socket), state), ReportFailure);
  }
}

std::string HostForUrl(const std::string& host) {
  return host.find(':') != std::string::npos ? "[" + host + "]" : host;
}

}  // namespace

int RunMockProvider(const MockOptions& mock_options) {
  auto state = std::make_shared<ServerState>();
  state->options = mock_options;
  state->media_tasks = std::make_unique<DashScopeTasks>(DashScopeOptions{
      std::int64_t{mock_options.task_seconds} * 1000, mock_options.task_fail_percent});
  const MockOptions* options = &state->options;
  const std::size_t thread_count = static_cast<std::size_t>(std::max(1, options->threads));
  std::vector<std::unique_ptr<asio::io_context>> contexts;
  for (std::size_t i = 0; i < thread_count; ++i) {
    contexts.push_back(std::make_unique<asio::io_context>(1));
  }
  {
    std::vector<asio::executor_work_guard<asio::io_context::executor_type>> keep_running;
    for (auto& context : contexts) keep_running.push_back(asio::make_work_guard(*context));

    beast::error_code ec;
    tcp::endpoint endpoint;
    const asio::ip::address address = asio::ip::make_address(options->host, ec);
    if (!ec) {
      endpoint = tcp::endpoint(address, options->port);
    } else {
      tcp::resolver resolver(*contexts[0]);
      auto results = resolver.resolve(options->host, std::to_string(options->port), ec);
      if (ec || results.empty()) {
        std::cerr << "mock-provider: cannot resolve host " << options->host << ": "
                  << ec.message() << '\n';
        return 1;
      }
      endpoint = results.begin()->endpoint();
    }

    tcp::acceptor acceptor(*contexts[0]);
    acceptor.open(endpoint.protocol(), ec);
    if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor.bind(endpoint, ec);
    if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      std::cerr << "mock-provider: cannot listen on " << HostForUrl(options->host) << ':'
                << options->port << ": " << ec.message() << '\n';
      return 1;
    }
    std::cout << "mock-provider listening on http://" << HostForUrl(options->host) << ':'
              << acceptor.local_endpoint().port() << std::endl;

    asio::signal_set signals(*contexts[0], SIGINT, SIGTERM);
    signals.async_wait([&](const beast::error_code& error, int) {
      if (error) return;
      beast::error_code ignored;
      acceptor.close(ignored);
      for (auto& context : contexts) context->stop();
    });
    asio::co_spawn(*contexts[0], AcceptConnections(acceptor, contexts, state), ReportFailure);

    std::vector<std::thread> threads;
    for (std::size_t i = 1; i < contexts.size(); ++i) {
      threads.emplace_back([&context = *contexts[i]] { context.run(); });
    }
    contexts[0]->run();
    for (auto& context : contexts) context->stop();
    for (auto& thread : threads) thread.join();
  }
  // The first context goes first: its accept loop may hold a socket of another context.
  for (auto& context : contexts) context.reset();
  return 0;
}

}  // namespace nexusflow::mock
