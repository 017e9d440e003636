#pragma once
// HTTP for tests that start real processes: a plain GET, and one request with a JSON body
// and a bearer key.
#include <curl/curl.h>
#include <strings.h>

#include <functional>
#include <string>

namespace nexusflow::testing {

inline size_t AppendToString(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

inline std::string HttpGet(const std::string& url) {
  std::string body;
  CURL* c = curl_easy_init();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, AppendToString);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 5L);
  curl_easy_perform(c);
  curl_easy_cleanup(c);
  return body;
}

struct HttpResult {
  long status = 0;
  std::string body;
  std::string request_id;  // the answer's x-request-id
  CURLcode code = CURLE_OK;
};

// One request with a JSON body ("" sends none) and, unless `bearer` is empty, an
// Authorization header; `on_data` (optional) sees the body so far as it arrives.
inline HttpResult HttpRequest(const std::string& method, const std::string& url,
                              const std::string& body, const std::string& bearer = "",
                              long timeout_s = 60,
                              std::function<void(const std::string&)> on_data = nullptr) {
  HttpResult r;
  struct Sink {
    HttpResult* r;
    std::function<void(const std::string&)>* on_data;
  } sink{&r, &on_data};
  CURL* c = curl_easy_init();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
  curl_slist* headers = nullptr;
  if (!bearer.empty()) headers = curl_slist_append(headers, ("Authorization: Bearer " + bearer).c_str());
  headers = curl_slist_append(headers, "Content-Type: application/json");
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  if (!body.empty()) curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
  curl_easy_setopt(
      c, CURLOPT_WRITEFUNCTION, +[](char* data, size_t size, size_t n, void* out) -> size_t {
        auto* s = static_cast<Sink*>(out);
        s->r->body.append(data, size * n);
        if (*s->on_data) (*s->on_data)(s->r->body);
        return size * n;
      });
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(
      c, CURLOPT_HEADERFUNCTION, +[](char* data, size_t size, size_t n, void* out) -> size_t {
        std::string line(data, size * n);
        static const std::string kName = "x-request-id:";
        if (line.size() > kName.size() &&
            strncasecmp(line.c_str(), kName.c_str(), kName.size()) == 0) {
          std::string v = line.substr(kName.size());
          while (!v.empty() && v.front() == ' ') v.erase(v.begin());
          while (!v.empty() && (v.back() == '\r' || v.back() == '\n' || v.back() == ' ')) v.pop_back();
          static_cast<HttpResult*>(out)->request_id = v;
        }
        return size * n;
      });
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout_s);
  r.code = curl_easy_perform(c);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(c);
  return r;
}

}  // namespace nexusflow::testing
