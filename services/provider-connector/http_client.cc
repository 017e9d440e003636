#include "services/provider-connector/http_client.h"

#include <curl/curl.h>

namespace nexusflow::connector {

struct HttpClient::Transfer {
  uint64_t id;
  std::shared_ptr<HttpCall> call;
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  char error[CURL_ERROR_SIZE] = {0};
  bool aborted = false;
};

namespace {

size_t OnWrite(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<HttpClient::Transfer*>(user);
  long status = 0;
  curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
  if (t->call->on_body && !t->call->on_body(status, std::string_view(data, size * n))) {
    t->aborted = true;
    return 0;  // aborts the transfer
  }
  return size * n;
}

struct CurlGlobal {
  CurlGlobal() { curl_global_init(CURL_GLOBAL_ALL); }
};

}  // namespace

HttpClient::HttpClient(long max_connections_per_host) : max_per_host_(max_connections_per_host) {
  static CurlGlobal global;
  CURLM* multi = curl_multi_init();
  curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, max_per_host_);
  curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, max_per_host_ * 4);
  curl_multi_setopt(multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
  multi_ = multi;
  thread_ = std::thread([this] { Loop(); });
}

HttpClient::~HttpClient() {
  stop_ = true;
  curl_multi_wakeup(static_cast<CURLM*>(multi_));
  thread_.join();
  for (auto& [id, t] : active_) Complete(t, CURLE_ABORTED_BY_CALLBACK);
  curl_multi_cleanup(static_cast<CURLM*>(multi_));
}

uint64_t HttpClient::Start(std::shared_ptr<HttpCall> call) {
  uint64_t id = next_id_++;
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.emplace_back(id, std::move(call));
  }
  curl_multi_wakeup(static_cast<CURLM*>(multi_));
  return id;
}

void HttpClient::Cancel(uint64_t id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancels_.push_back(id);
  }
  curl_multi_wakeup(static_cast<CURLM*>(multi_));
}

void HttpClient::Complete(Transfer* t, int curl_code) {
  CURLM* multi = static_cast<CURLM*>(multi_);
  long status = 0;
  curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
  std::string error;
  bool timed_out = curl_code == CURLE_OPERATION_TIMEDOUT;
  if (curl_code != CURLE_OK) {
    error = t->aborted ? "cancelled" : (t->error[0] ? t->error : curl_easy_strerror(CURLcode(curl_code)));
  }
  curl_multi_remove_handle(multi, t->easy);
  curl_easy_cleanup(t->easy);
  curl_slist_free_all(t->headers);
  auto call = std::move(t->call);
  active_.erase(t->id);
  delete t;
  if (call->on_done) call->on_done(status, error, timed_out);
}

void HttpClient::Loop() {
  CURLM* multi = static_cast<CURLM*>(multi_);
  while (!stop_) {
    std::vector<std::pair<uint64_t, std::shared_ptr<HttpCall>>> pending;
    std::vector<uint64_t> cancels;
    {
      std::lock_guard<std::mutex> lock(mu_);
      pending.swap(pending_);
      cancels.swap(cancels_);
    }
    for (auto& [id, call] : pending) {
      auto* t = new Transfer{id, std::move(call)};
      t->easy = curl_easy_init();
      CURL* e = t->easy;
      curl_easy_setopt(e, CURLOPT_URL, t->call->url.c_str());
      for (const auto& h : t->call->headers) t->headers = curl_slist_append(t->headers, h.c_str());
      t->headers = curl_slist_append(t->headers, "Expect:");
      curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
      if (!t->call->get) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, t->call->body.data());
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(t->call->body.size()));
      }
      curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, OnWrite);
      curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
      curl_easy_setopt(e, CURLOPT_PRIVATE, t);
      curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->error);
      curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, t->call->connect_timeout_ms);
      curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, t->call->timeout_ms);
      curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
      curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
      curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
      curl_easy_setopt(e, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_2TLS);
      curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
      curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
      curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
      active_[id] = t;
      curl_multi_add_handle(multi, e);
    }
    for (uint64_t id : cancels) {
      auto it = active_.find(id);
      if (it == active_.end()) continue;
      it->second->aborted = true;
      Complete(it->second, CURLE_ABORTED_BY_CALLBACK);
    }
    int running = 0;
    curl_multi_perform(multi, &running);
    int queued = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi, &queued)) {
      if (msg->msg != CURLMSG_DONE) continue;
      Transfer* t = nullptr;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &t);
      if (t) Complete(t, msg->data.result);
    }
    curl_multi_poll(multi, nullptr, 0, 1000, nullptr);
  }
}

}  // namespace nexusflow::connector
