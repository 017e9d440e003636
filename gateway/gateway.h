#pragma once
// The edge: routes HTTP requests to protocol handlers, orchestrates a chat request
// across the services (auth → routing → rate-limiter ‖ billing → connector → settle),
// serves the admin API and the ops endpoints, and writes one access-log line a request.
#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "gateway/backends.h"
#include "gateway/http_server.h"
#include "gateway/request_path.h"
#include "gateway/protocols/renderer.h"
#include "gateway/settlement_retrier.h"
#include "libs/config/config.h"

namespace nexusflow::gateway {

// What a request did, for the access log and the metrics.
struct RequestLog {
  std::string request_id;
  std::string route;
  std::string model;
  std::string account_id;
  std::string key_id;
  std::string deployment;
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
  int64_t cost_nano_usd = -1;
  std::string error;
};

class Gateway {
 public:
  Gateway(const Config& config, Backends backends, LocalServices local = {});
  ~Gateway();

  // Starts the caches' watches. The HTTP server is separate (see Handler()).
  void Start();
  void Stop();
  // Ready once the catalog and the revocation watch are live, and until draining.
  bool ready() const;
  void SetDraining() { draining_ = true; }
  Handler handler();

 private:
  void Handle(const HttpRequest& req, ResponseWriter& w, RequestLog& log);
  void HandleOpenAiChat(const HttpRequest& req, ResponseWriter& w, RequestLog& log);
  void HandleModels(const HttpRequest& req, ResponseWriter& w, RequestLog& log);
  void HandleBalance(const HttpRequest& req, ResponseWriter& w, RequestLog& log);
  void HandleUsage(const HttpRequest& req, ResponseWriter& w, RequestLog& log);
  void HandleAdmin(const HttpRequest& req, ResponseWriter& w, RequestLog& log);

  // Authenticates the request's key (any of the accepted headers). On failure writes the
  // error in `protocol` and returns nullopt.
  std::optional<auth::v1::Identity> Authenticate(const HttpRequest& req, ResponseWriter& w,
                                                 ApiProtocol protocol, RequestLog& log);
  void SendError(ResponseWriter& w, ApiProtocol protocol, const HttpError& error,
                 RequestLog& log, HeaderList headers = {});
  void SendJson(ResponseWriter& w, int status, const std::string& body, RequestLog& log);

  // The orchestration of one chat request, shared by every protocol.
  struct ChatJob;
  void RunChat(ChatJob& job, ResponseWriter& w, RequestLog& log);
  void Settle(ChatJob& job, const ChatAnswer& answer, RequestLog& log);

  Config config_;
  Backends backends_;
  RequestPath path_;
  AuthCache auth_cache_;
  CatalogCache catalog_;
  std::atomic<bool> draining_{false};
  std::unique_ptr<SettlementRetrier> retrier_;
};

}  // namespace nexusflow::gateway
