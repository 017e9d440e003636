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

#include "chat.h"
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

Answer ErrorAnswer(const OpenAiError& error) {
  return Answer{static_cast<unsigned>(error.status), "application/json", ErrorBody(error)};
}

// Writes `answer`; returns whether the connection stays open.
//
// GCC 12 miscompiles temporaries with destructors inside a co_await expression (they may be
// freed twice), so the coroutines here only ever co_await calls whose arguments are named
// objects or trivially destructible values.
asio::awaitable<bool> Respond(beast::tcp_stream& stream, const Request& req,
                              const std::string& request_id, Answer& answer) {
  http::response<http::string_body> res;
  res.version(req.version());
  res.result(answer.status);
  res.set(http::field::content_type, answer.content_type);
  res.set("x-request-id", request_id);
  if (answer.status == 429) res.set(http::field::retry_after, "1");
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
asio::awaitable<void> RejectAndClose(beast::tcp_stream& stream, unsigned status,
                                     const std::string& message) {
  http::response<http::string_body> res;
  res.version(11);
  res.result(status);
  res.set(http::field::content_type, "application/json");
  res.set("x-request-id", "req_" + RandomHex(24));
  res.keep_alive(false);
  res.body() = ErrorBody(OpenAiError{static_cast<int>(status), message, {}, {}});
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

// Writes the SSE frames of `reply`. Frames produced at the same instant share one write;
// before every wait the pending bytes are flushed, so a client sees each delayed chunk when
// it is produced.
asio::awaitable<StreamEnd> WriteStream(beast::tcp_stream& stream, PeerWatch& watch,
                                       const Request& req, const std::string& request_id,
                                       const ChatReply& reply, const MockOptions& options) {
  const bool chunked = req.version() >= 11;
  const bool keep_alive = chunked && req.keep_alive();
  std::string out = chunked ? "HTTP/1.1 200 OK\r\n" : "HTTP/1.0 200 OK\r\n";
  out += "Content-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\nx-request-id: ";
  out += request_id;
  out += "\r\n";
  if (chunked) out += "Transfer-Encoding: chunked\r\n";
  if (!keep_alive) out += "Connection: close\r\n";
  out += "\r\n";

  const std::int64_t chunk_delay_ms =
      reply.markers.chunk_delay_ms.value_or(std::int64_t{options.chunk_delay_ms});
  const std::vector<SseFrame> frames = ChatStreamFrames(reply, NewResponseIds());
  const std::optional<int>& drop_after = reply.markers.drop_after;
  int content_sent = 0;
  for (const SseFrame& frame : frames) {
    if (drop_after && ((frame.kind == FrameKind::kContent && content_sent >= *drop_after) ||
                       frame.kind == FrameKind::kFinish)) {
      co_await Flush(stream, out);
      co_return StreamEnd::kDropped;
    }
    std::int64_t wait_ms = 0;
    if (frame.kind == FrameKind::kFirst) {
      wait_ms = options.ttft_ms + reply.markers.delay_ms;
    } else if (frame.kind == FrameKind::kContent) {
      wait_ms = chunk_delay_ms;
    }
    if (wait_ms > 0) {
      if (!co_await Flush(stream, out)) co_return StreamEnd::kAborted;
      if (!co_await watch.Wait(wait_ms)) co_return StreamEnd::kAborted;
    }
    AppendFrame(out, frame.bytes, chunked);
    if (frame.kind == FrameKind::kContent) ++content_sent;
  }
  if (chunked) out += "0\r\n\r\n";
  if (!co_await Flush(stream, out)) co_return StreamEnd::kAborted;
  co_return StreamEnd::kCompleted;
}

// Streams the answer as SSE and counts it in ProcessStreamStats(); returns whether the
// connection stays open. HTTP/1.0 clients get a close-delimited body instead of chunked
// encoding.
asio::awaitable<bool> StreamChat(beast::tcp_stream& stream, beast::flat_buffer& buffer,
                                 const Request& req, const std::string& request_id,
                                 const ChatReply& reply, const MockOptions& options) {
  StreamTracker tracker(ProcessStreamStats());
  PeerWatch watch(stream, buffer);
  const StreamEnd end = co_await WriteStream(stream, watch, req, request_id, reply, options);
  co_await watch.Stop();
  tracker.End(end);
  if (end == StreamEnd::kDropped) {
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream.close();
  }
  co_return end == StreamEnd::kCompleted && req.version() >= 11 && req.keep_alive();
}

// Every route but chat: answered at once.
Answer RouteImmediate(const Request& req, std::string_view path) {
  const bool is_get = req.method() == http::verb::get;
  if (path == "/healthz" && is_get) return Answer{200, "text/plain; charset=utf-8", "ok"};
  if (path == "/mock/stats" && is_get) {
    return Answer{200, "application/json", StreamStatsBody(ProcessStreamStats().Snapshot())};
  }
  if (path == "/v1/models" && is_get) return Answer{200, "application/json", ModelListBody()};
  constexpr std::string_view kModelPrefix = "/v1/models/";
  if (path.starts_with(kModelPrefix) && is_get) {
    const std::string_view id = path.substr(kModelPrefix.size());
    if (std::optional<std::string> model = ModelBody(id)) {
      return Answer{200, "application/json", std::move(*model)};
    }
    return ErrorAnswer(OpenAiError{404, "The model '" + std::string(id) + "' does not exist",
                                   "model", "model_not_found"});
  }
  return ErrorAnswer(OpenAiError{
      404, "Invalid URL (" + std::string(View(req.method_string())) + " " + std::string(path) + ")",
      {}, {}});
}

// A 401 answer when the server wants a key and `req` lacks it.
std::optional<Answer> CheckApiKey(const Request& req, const MockOptions& options) {
  if (options.api_key.empty()) return std::nullopt;
  const std::string_view authorization = View(req[http::field::authorization]);
  if (authorization.empty()) {
    return ErrorAnswer(OpenAiError{
        401,
        "You didn't provide an API key. You need to provide your API key in an Authorization "
        "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        {},
        {}});
  }
  constexpr std::string_view kBearer = "Bearer ";
  if (!authorization.starts_with(kBearer) ||
      authorization.substr(kBearer.size()) != options.api_key) {
    return ErrorAnswer(ErrorForStatus(401, "Incorrect API key provided."));
  }
  return std::nullopt;
}

// Routes one request; returns whether the connection stays open.
asio::awaitable<bool> HandleRequest(beast::tcp_stream& stream, beast::flat_buffer& buffer,
                                    const Request& req, const MockOptions& options) {
  const std::string request_id = "req_" + RandomHex(24);
  const std::string_view target = View(req.target());
  const std::string_view path = target.substr(0, target.find('?'));

  Answer answer;
  std::optional<Answer> unauthorized;
  if (path.starts_with("/v1/")) unauthorized = CheckApiKey(req, options);
  if (unauthorized) {
    answer = std::move(*unauthorized);
  } else if (path == "/v1/chat/completions" && req.method() == http::verb::post) {
    std::variant<ChatReply, OpenAiError> planned = PlanChatReply(req.body(), options.reply_words);
    if (const OpenAiError* error = std::get_if<OpenAiError>(&planned)) {
      answer = ErrorAnswer(*error);
    } else {
      const ChatReply& reply = std::get<ChatReply>(planned);
      if (reply.markers.status >= 400) {
        co_await Sleep(reply.markers.delay_ms);
        const std::string status = std::to_string(reply.markers.status);
        answer = ErrorAnswer(ErrorForStatus(
            reply.markers.status,
            "mock-provider: status " + status + " forced by [mock:status=" + status + "]"));
      } else if (reply.stream) {
        co_return co_await StreamChat(stream, buffer, req, request_id, reply, options);
      } else {
        co_await Sleep(std::int64_t{options.latency_ms} + reply.markers.delay_ms);
        answer.body = ChatCompletionBody(reply, NewResponseIds());
      }
    }
  } else {
    answer = RouteImmediate(req, path);
  }
  co_return co_await Respond(stream, req, request_id, answer);
}

bool IsMalformedRequest(const beast::error_code& ec) {
  static const auto& http_category = make_error_code(http::error::bad_method).category();
  return ec.category() == http_category && ec != http::error::end_of_stream &&
         ec != http::error::partial_message;
}

asio::awaitable<void> ServeConnection(tcp::socket socket,
                                      std::shared_ptr<const MockOptions> options) {
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
      co_await RejectAndClose(stream, 413, kTooLarge);
      co_return;
    }
    if (header_ec) {
      if (IsMalformedRequest(header_ec)) {
        const std::string message = "Malformed HTTP request: " + header_ec.message();
        co_await RejectAndClose(stream, 400, message);
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
        co_await RejectAndClose(stream, 413, kTooLarge);
        co_return;
      }
      if (body_ec) {
        if (IsMalformedRequest(body_ec)) {
          const std::string message = "Malformed HTTP request: " + body_ec.message();
          co_await RejectAndClose(stream, 400, message);
        }
        break;
      }
    }

    if (!co_await HandleRequest(stream, buffer, parser.get(), *options)) break;
  }
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

// Accepts on one context and hands connections round-robin to the others; each context
// runs on its own thread, so a connection never needs a strand.
asio::awaitable<void> AcceptConnections(tcp::acceptor& acceptor,
                                        std::vector<std::unique_ptr<asio::io_context>>& contexts,
                                        std::shared_ptr<const MockOptions> options) {
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
    asio::co_spawn(context, ServeConnection(std::move(socket), options), ReportFailure);
  }
}

std::string HostForUrl(const std::string& host) {
  return host.find(':') != std::string::npos ? "[" + host + "]" : host;
}

}  // namespace

int RunMockProvider(const MockOptions& mock_options) {
  auto options = std::make_shared<const MockOptions>(mock_options);
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
    asio::co_spawn(*contexts[0], AcceptConnections(acceptor, contexts, options), ReportFailure);

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
