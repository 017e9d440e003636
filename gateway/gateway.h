#pragma once
// The edge: routes HTTP requests (one route table) to protocol handlers, authenticates
// from the headers before a body is read, orchestrates a chat request across the
// services (auth → routing → rate-limiter ‖ billing → connector → settle) as one
// coroutine on its connection's loop, serves the admin API and the ops endpoints, and
// writes one access-log line a request.
#include <boost/json.hpp>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/thread_pool.hpp>

#include "gateway/backends.h"
#include "gateway/http_server.h"
#include "gateway/protocols/renderer.h"
#include "gateway/request_path.h"
#include "gateway/settlement_outbox.h"
#include "libs/config/config.h"

namespace nexusflow::gateway {

// What a request did, for the access log and the metrics.
struct RequestLog {
  std::string request_id;
  std::string route;
  std::string model;
  std::string account_id;
  std::string key_id;
  std::string key_prefix;  // the key's first 10 characters, as the admin API shows them
  std::string deployment;
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
  int64_t cost_nano_usd = -1;
  std::string error;
  // Chat requests, for the per-model metrics: the catalog's model id (not what the caller
  // wrote, so the label stays bounded), the caller's protocol, whether it streamed, and
  // seconds from reading the request to the first output written (-1: none).
  std::string chat_model;
  const char* chat_protocol = "";
  bool stream = false;
  double first_output_seconds = -1;
  std::chrono::steady_clock::time_point start;
};

// Adds the request id under both names clients read: x-request-id and request-id.
void AddRequestId(HeaderList& headers, const std::string& request_id);

// A key limited to some models may not use (or count tokens for) the others: 403.
std::optional<HttpError> ModelNotAllowed(const auth::v1::Identity& identity, const std::string& model);

// A whole response built by synchronous code (admin API, usage, balance, models), which
// the request's coroutine then sends.
class ResponseWriter {
 public:
  void Send(int status, std::string_view content_type, std::string_view body,
            const HeaderList& headers = {}) {
    if (sent) return;
    sent = true;
    this->status = status;
    this->content_type = std::string(content_type);
    this->body = std::string(body);
    this->headers = headers;
  }
  bool sent = false;
  int status = 500;
  std::string content_type;
  std::string body;
  HeaderList headers;
};

class Gateway {
 public:
  Gateway(const Config& config, Backends backends, LocalServices local = {});
  ~Gateway();

  // Opens the settlement outbox (settling what a previous process left) and starts the
  // caches' watches. The HTTP server is separate (see handler()).
  absl::Status Start();
  void Stop();
  // Ready once the catalog and the revocation watch are live, and until draining.
  bool ready() const;
  void SetDraining() { draining_ = true; }
  AsyncHandler handler();
  // The body of an error the HTTP server answers itself, in the path's protocol.
  ErrorBodyFn error_body();

  struct Route;

 private:
  boost::asio::awaitable<void> Serve(HttpExchange& ex);
  boost::asio::awaitable<void> Dispatch(HttpExchange& ex, RequestLog& log);
  boost::asio::awaitable<void> Refuse(HttpExchange& ex, const Route* route, RequestLog& log);
  boost::asio::awaitable<void> DispatchOther(HttpExchange& ex, const Route& route,
                                             std::optional<auth::v1::Identity> identity,
                                             RequestLog& log);
  boost::asio::awaitable<void> HandleOpenAiChat(HttpExchange& ex, auth::v1::Identity& identity,
                                                RequestLog& log);
  void HandleModels(const HttpRequest& req, const auth::v1::Identity& identity,
                    ResponseWriter& w, RequestLog& log);
  boost::asio::awaitable<void> HandleAnthropicMessages(HttpExchange& ex, auth::v1::Identity& identity,
                                                       RequestLog& log);
  void HandleAnthropicCountTokens(const HttpRequest& req, const auth::v1::Identity& identity,
                                  ResponseWriter& w, RequestLog& log);
  // POST /v1beta/models/{model}:generateContent | :streamGenerateContent | :countTokens
  boost::asio::awaitable<void> HandleGemini(HttpExchange& ex, auth::v1::Identity& identity,
                                            RequestLog& log);
  void HandleGeminiModels(const HttpRequest& req, const auth::v1::Identity& identity,
                          ResponseWriter& w, RequestLog& log);
  void HandleBalance(const auth::v1::Identity& identity, ResponseWriter& w, RequestLog& log);
  void HandleUsage(const HttpRequest& req, const auth::v1::Identity& identity,
                   ResponseWriter& w, RequestLog& log);
  // What an admin call did, for its audit line: the action ("key.create"), the id it acted
  // on, and its parameters (never a secret).
  struct AuditEntry {
    std::string action;
    std::string target;
    boost::json::object details;
  };
  void HandleAdmin(const HttpRequest& req, ResponseWriter& w, RequestLog& log);
  void HandleAdminRoute(const HttpRequest& req, ResponseWriter& w, RequestLog& log, AuditEntry& audit);
  // One JSON line on stdout ("log":"audit"): who, what, when, the outcome.
  void WriteAudit(const HttpRequest& req, const RequestLog& log, std::string_view who,
                  const AuditEntry& entry, int status) const;
  // The admin key check, from the headers alone.
  std::optional<HttpError> CheckAdminKey(const HttpRequest& req) const;

  // Authenticates the request's key (any of the accepted headers) from the cache or
  // auth. On failure sends the error in `protocol` and returns nullopt.
  boost::asio::awaitable<std::optional<auth::v1::Identity>> Authenticate(
      HttpExchange& ex, ApiProtocol protocol, RequestLog& log);
  void SendError(ResponseWriter& w, ApiProtocol protocol, const HttpError& error,
                 RequestLog& log, HeaderList headers = {});
  void SendJson(ResponseWriter& w, int status, const std::string& body, RequestLog& log);
  boost::asio::awaitable<void> SendError(HttpExchange& ex, ApiProtocol protocol,
                                         const HttpError& error, RequestLog& log,
                                         HeaderList headers = {});

  // Admission of a request that costs money: a rate-limit lease (on `estimated_tokens`)
  // and a billing hold (of `hold_nano_usd`), asked in parallel. Admit answers the caller
  // itself when refused (429 naming the limit, 402, 503) and returns false, with nothing
  // left held; admitted, the lease, the hold and the rate-limit headers are filled in.
  struct Admission {
    const auth::v1::Identity* identity = nullptr;
    const routing::v1::Model* model = nullptr;
    ApiProtocol protocol = ApiProtocol::kOpenAI;
    int64_t estimated_tokens = 0;
    int64_t hold_nano_usd = 0;
    std::string lease_id;
    std::string hold_id;
    HeaderList headers;
  };
  boost::asio::awaitable<bool> Admit(Admission& admission, HttpExchange& ex, RequestLog& log);

  // POST /v1/embeddings (OpenAI).
  boost::asio::awaitable<void> HandleEmbeddings(HttpExchange& ex, auth::v1::Identity& identity,
                                                RequestLog& log);
  // POST /v1/images/generations (OpenAI), on the task pipeline: waits for the task within
  // gateway.image_wait_seconds.
  boost::asio::awaitable<void> HandleImages(HttpExchange& ex, auth::v1::Identity& identity, RequestLog& log);
  // /v1/tasks: POST (create), GET (list); /v1/tasks/{id}: GET; /v1/tasks/{id}/cancel: POST.
  boost::asio::awaitable<void> HandleTasks(HttpExchange& ex, auth::v1::Identity& identity, RequestLog& log);
  // Resolves a media model, admits it (rate limit, and a hold of its most costly outcome)
  // and creates its task. Answers the caller itself and returns nullopt on any failure.
  struct MediaJob;
  boost::asio::awaitable<std::optional<connector::v1::Task>> CreateMediaTask(
      MediaJob& job, HttpExchange& ex, RequestLog& log);
  // Commits a charge (a few quick tries), else hands it to the outbox, which keeps it
  // until billing takes it. `recorded`: the outbox already holds an entry for it.
  boost::asio::awaitable<void> SettleCharge(const billing::v1::SettleRequest& req, RequestLog& log,
                                            bool recorded);

  // The orchestration of one chat request, shared by every protocol.
  struct ChatJob;
  boost::asio::awaitable<void> RunChat(ChatJob& job, HttpExchange& ex, RequestLog& log);
  boost::asio::awaitable<bool> AdmitChat(ChatJob& job, HttpExchange& ex, RequestLog& log);
  boost::asio::awaitable<void> FailBeforeOutput(ChatJob& job, ChatCall& chat,
                                                connector::v1::ChatChunk& chunk, bool got,
                                                HttpExchange& ex, RequestLog& log);
  boost::asio::awaitable<void> AnswerWhole(ChatJob& job, ChatCall& chat, connector::v1::ChatChunk& chunk,
                                           HttpExchange& ex, RequestLog& log);
  boost::asio::awaitable<void> AnswerStream(ChatJob& job, ChatCall& chat, connector::v1::ChatChunk& chunk,
                                            HttpExchange& ex, RequestLog& log);
  boost::asio::awaitable<void> SettleWhatArrived(ChatJob& job, ChatAnswer& answer, RequestLog& log);
  // Gives back the lease and the hold of a chat that is not charged.
  void Undo(const ChatJob& job);
  boost::asio::awaitable<void> Settle(ChatJob& job, const ChatAnswer& answer, RequestLog& log);
  static billing::v1::SettleRequest SettleTemplate(const ChatJob& job, const ChatAnswer& answer);
  // Before a stream sends output: the outbox's allowance covers all the output text sent
  // with it (write-ahead), so a gateway killed now still charges what the client got.
  boost::asio::awaitable<void> RecordOutput(ChatJob& job, const ChatAnswer& answer);

  Config config_;
  Backends backends_;
  RequestPath path_;
  AuthCache auth_cache_;
  CatalogCache catalog_;
  std::atomic<bool> draining_{false};
  std::unique_ptr<SettlementOutbox> outbox_;  // opened by Start
  std::atomic<bool> outbox_flushed_{false};   // waited for once, when draining
  // Synchronous work off the loops: the admin API and other rare calls.
  boost::asio::thread_pool blocking_{2};
};

}  // namespace nexusflow::gateway
