// libcurl's multi-socket interface on Asio (the shape of curl's docs/examples/asiohiper.cpp):
// curl says which sockets to watch and when to time out; the loop's reactor waits, and
// curl_multi_socket_action does the I/O. Every Multi is touched only on its loop thread.
#include "services/provider-connector/http_client.h"

#include <curl/curl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <atomic>
#include <chrono>
#include <future>
#include <unordered_map>

#include "libs/loop/event_loops.h"

namespace nexusflow::connector {
namespace net = boost::asio;

namespace {

constexpr int kLoopBits = 8;  // a call id carries its loop's index in the low bits

struct CurlGlobal {
  CurlGlobal() { curl_global_init(CURL_GLOBAL_ALL); }
};

struct Transfer {
  uint64_t id;
  std::shared_ptr<HttpCall> call;
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  char error[CURL_ERROR_SIZE] = {0};
  bool aborted = false;
  std::unique_ptr<net::steady_timer> first_byte_timer = nullptr;  // armed until the first header line
  bool first_byte_timed_out = false;
};

// One socket curl asked us to watch.
struct Socket {
  Socket(net::io_context& io, curl_socket_t fd, bool owned) : desc(io, fd), fd(fd), owned(owned) {}
  net::posix::stream_descriptor desc;
  curl_socket_t fd;
  bool owned;          // opened through OpenSocket (closed through CloseSocket)
  int want = 0;        // CURL_POLL_IN / OUT / INOUT
  bool reading = false;  // a wait is armed
  bool writing = false;
  bool gone = false;   // released: late wait completions are ignored
};

size_t OnWrite(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  if (!t->call->on_body) return size * n;
  long status = 0;
  curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
  switch (t->call->on_body(status, std::string_view(data, size * n))) {
    case BodyAction::kContinue:
      return size * n;
    case BodyAction::kPause:
      return CURL_WRITEFUNC_PAUSE;
    case BodyAction::kAbort:
      break;
  }
  t->aborted = true;
  return 0;  // aborts the transfer
}

// The first header line arrived: the first-byte limit is met.
size_t OnHeader(char*, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  if (t->first_byte_timer) {
    t->first_byte_timer->cancel();
    t->first_byte_timer.reset();
  }
  return size * n;
}

}  // namespace

class HttpClient::Multi : public std::enable_shared_from_this<Multi> {
 public:
  Multi(net::io_context& io, long max_per_host) : io_(io), timer_(io) {
    multi_ = curl_multi_init();
    curl_multi_setopt(multi_, CURLMOPT_MAX_HOST_CONNECTIONS, max_per_host);
    curl_multi_setopt(multi_, CURLMOPT_MAXCONNECTS, max_per_host * 4);
    curl_multi_setopt(multi_, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &Multi::OnSocket);
    curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
    curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, &Multi::OnTimer);
    curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
  }

  net::io_context& io() { return io_; }

  void Add(uint64_t id, std::shared_ptr<HttpCall> call) {
    if (shut_) {
      // Not inline: the caller may hold a lock its on_done takes.
      net::post(io_, [call] {
        if (call->on_done) call->on_done(0, "cancelled", false);
      });
      return;
    }
    auto* t = new Transfer{id, std::move(call)};
    // A handle of a finished transfer, reset, when there is one: no allocation and
    // zeroing of a new one per call.
    if (idle_easy_.empty()) {
      t->easy = curl_easy_init();
    } else {
      t->easy = idle_easy_.back();
      idle_easy_.pop_back();
    }
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
    // No CURLOPT_PIPEWAIT: with it, a call that finds the upstream's first connection still
    // connecting is parked until that connection proves able to multiplex, and one that
    // turns out HTTP/1.1 never does: the parked calls then start only when some other call
    // on this loop ends, which for a stream can be minutes. Without it they open
    // connections of their own; HTTP/2 connections are still shared once established.
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, &Multi::OpenSocket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, this);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, &Multi::CloseSocket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, this);
    if (t->call->first_byte_timeout_ms > 0) {
      curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, OnHeader);
      curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
      t->first_byte_timer = std::make_unique<net::steady_timer>(io_);
      t->first_byte_timer->expires_after(std::chrono::milliseconds(t->call->first_byte_timeout_ms));
      // By id: the transfer may be gone when the wait ends.
      t->first_byte_timer->async_wait([self = shared_from_this(), id](boost::system::error_code ec) {
        if (!ec) self->FirstByteTimeout(id);
      });
    }
    active_[id] = t;
    curl_multi_add_handle(multi_, e);  // arms the timer: the transfer starts from the loop
  }

  void Cancel(uint64_t id) {
    auto it = active_.find(id);
    if (it == active_.end()) return;
    it->second->aborted = true;
    Complete(it->second, CURLE_ABORTED_BY_CALLBACK);
  }

  void FirstByteTimeout(uint64_t id) {
    auto it = active_.find(id);
    if (it == active_.end() || !it->second->first_byte_timer) return;
    it->second->first_byte_timed_out = true;
    Complete(it->second, CURLE_OPERATION_TIMEDOUT);
  }

  void Resume(uint64_t id) {
    auto it = active_.find(id);
    if (it == active_.end()) return;
    curl_easy_pause(it->second->easy, CURLPAUSE_CONT);  // may deliver the held bytes now
    CheckDone();
  }

  // Ends every call and lets go of curl; on the loop thread, or with the loop stopped.
  void Shutdown() {
    if (shut_) return;
    shut_ = true;
    while (!active_.empty()) {
      Transfer* t = active_.begin()->second;
      t->aborted = true;
      Complete(t, CURLE_ABORTED_BY_CALLBACK);
    }
    timer_.cancel();
    for (CURL* e : idle_easy_) curl_easy_cleanup(e);
    idle_easy_.clear();
    curl_multi_cleanup(multi_);
    multi_ = nullptr;
    for (auto& [fd, s] : sockets_) Release(*s);
    sockets_.clear();
  }

 private:
  static int OnSocket(CURL*, curl_socket_t fd, int what, void* userp, void*) {
    auto* self = static_cast<Multi*>(userp);
    auto it = self->sockets_.find(fd);
    if (what == CURL_POLL_REMOVE) {
      if (it == self->sockets_.end()) return 0;
      it->second->want = 0;
      if (it->second->owned) {
        boost::system::error_code ec;
        it->second->desc.cancel(ec);  // kept until CloseSocket
      } else {
        self->Release(*it->second);  // curl's own socket (e.g. the resolver's): not ours to close
        self->sockets_.erase(it);
      }
      return 0;
    }
    if (it == self->sockets_.end())
      it = self->sockets_.emplace(fd, std::make_shared<Socket>(self->io_, fd, false)).first;
    it->second->want = what;
    self->Arm(it->second);
    return 0;
  }

  // curl's timer, with as few re-arms as correctness allows (each re-arm of the earliest
  // timer is a timerfd syscall): "now" is a post; a later time than the armed one keeps
  // the armed one (an early socket_action is harmless, curl asks again); -1 is ignored
  // for the same reason.
  static int OnTimer(CURLM*, long timeout_ms, void* userp) {
    auto* self = static_cast<Multi*>(userp);
    if (timeout_ms < 0) return 0;
    if (timeout_ms == 0) {
      net::post(self->io_, [self = self->shared_from_this()] {
        if (!self->shut_) self->Action(CURL_SOCKET_TIMEOUT, 0);
      });
      return 0;
    }
    auto when = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    if (self->timer_armed_ && when >= self->timer_.expiry()) return 0;
    self->timer_armed_ = true;
    self->timer_.expires_at(when);
    self->timer_.async_wait([self = self->shared_from_this()](boost::system::error_code ec) {
      if (ec) return;  // re-armed or shut down
      self->timer_armed_ = false;
      if (!self->shut_) self->Action(CURL_SOCKET_TIMEOUT, 0);
    });
    return 0;
  }

  static curl_socket_t OpenSocket(void* userp, curlsocktype purpose, curl_sockaddr* address) {
    auto* self = static_cast<Multi*>(userp);
    if (purpose != CURLSOCKTYPE_IPCXN) return CURL_SOCKET_BAD;
    curl_socket_t fd = ::socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
    if (fd == CURL_SOCKET_BAD) return fd;
    self->sockets_[fd] = std::make_shared<Socket>(self->io_, fd, true);
    return fd;
  }

  static int CloseSocket(void* userp, curl_socket_t fd) {
    auto* self = static_cast<Multi*>(userp);
    if (auto it = self->sockets_.find(fd); it != self->sockets_.end()) {
      self->Release(*it->second);
      self->sockets_.erase(it);
    }
    return ::close(fd);
  }

  // Stops watching a socket and hands its descriptor back without closing it.
  void Release(Socket& s) {
    s.gone = true;
    boost::system::error_code ec;
    s.desc.cancel(ec);
    (void)s.desc.release();
  }

  void Arm(const std::shared_ptr<Socket>& s) {
    if (s->gone) return;
    if ((s->want & CURL_POLL_IN) && !s->reading) {
      s->reading = true;
      s->desc.async_wait(net::posix::descriptor_base::wait_read,
                         [self = shared_from_this(), s](boost::system::error_code ec) {
                           s->reading = false;
                           self->Ready(s, CURL_POLL_IN, ec);
                         });
    }
    if ((s->want & CURL_POLL_OUT) && !s->writing) {
      s->writing = true;
      s->desc.async_wait(net::posix::descriptor_base::wait_write,
                         [self = shared_from_this(), s](boost::system::error_code ec) {
                           s->writing = false;
                           self->Ready(s, CURL_POLL_OUT, ec);
                         });
    }
  }

  void Ready(const std::shared_ptr<Socket>& s, int direction, boost::system::error_code ec) {
    if (s->gone || shut_ || ec == net::error::operation_aborted) return;
    if (!(s->want & direction)) return;  // curl lost interest meanwhile
    int ev = ec ? CURL_CSELECT_ERR : (direction == CURL_POLL_IN ? CURL_CSELECT_IN : CURL_CSELECT_OUT);
    Action(s->fd, ev);
    Arm(s);
  }

  void Action(curl_socket_t fd, int ev) {
    int running = 0;
    curl_multi_socket_action(multi_, fd, ev, &running);
    CheckDone();
  }

  void CheckDone() {
    if (!multi_) return;
    int queued = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi_, &queued)) {
      if (msg->msg != CURLMSG_DONE) continue;
      Transfer* t = nullptr;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &t);
      if (t) Complete(t, msg->data.result);
    }
  }

  void Complete(Transfer* t, int curl_code) {
    long status = 0;
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
    std::string error;
    bool timed_out = curl_code == CURLE_OPERATION_TIMEDOUT;
    if (curl_code != CURLE_OK)
      error = t->aborted ? "cancelled" : (t->error[0] ? t->error : curl_easy_strerror(CURLcode(curl_code)));
    if (t->first_byte_timed_out)
      error = "no response within " + std::to_string(t->call->first_byte_timeout_ms) + " ms";
    for (auto [name, out] : {std::pair{"Retry-After", &t->call->retry_after},
                             std::pair{"retry-after-ms", &t->call->retry_after_ms}}) {
      curl_header* h = nullptr;
      if (status > 0 && curl_easy_header(t->easy, name, 0, CURLH_HEADER, -1, &h) == CURLHE_OK && h)
        *out = h->value;
    }
    curl_multi_remove_handle(multi_, t->easy);
    if (!shut_ && idle_easy_.size() < kIdleEasyHandles) {
      curl_easy_reset(t->easy);
      idle_easy_.push_back(t->easy);
    } else {
      curl_easy_cleanup(t->easy);
    }
    curl_slist_free_all(t->headers);
    auto call = std::move(t->call);
    active_.erase(t->id);
    delete t;
    if (call->on_done) call->on_done(status, error, timed_out);
  }

  net::io_context& io_;
  net::steady_timer timer_;
  CURLM* multi_ = nullptr;
  bool shut_ = false;
  bool timer_armed_ = false;
  std::unordered_map<curl_socket_t, std::shared_ptr<Socket>> sockets_;
  std::unordered_map<uint64_t, Transfer*> active_;
  static constexpr size_t kIdleEasyHandles = 256;
  std::vector<CURL*> idle_easy_;  // reset handles of finished transfers, for the next ones
};

namespace {
std::atomic<uint64_t> next_call{1};
}

HttpClient::HttpClient(EventLoops& loops, long max_connections_per_host) : loops_(loops) {
  static CurlGlobal global;
  // The cap is the process's: each loop's pool gets its share.
  long per_loop = std::max(1L, (max_connections_per_host + loops.size() - 1) / loops.size());
  for (int i = 0; i < loops.size(); ++i)
    multis_.push_back(std::make_shared<Multi>(loops.at(i), per_loop));
}

HttpClient::~HttpClient() {
  for (auto& m : multis_) {
    // On its loop when that still runs; a stopped loop touches nothing any more.
    auto done = std::make_shared<std::promise<void>>();
    auto f = done->get_future();
    net::post(m->io(), [m, done] {
      m->Shutdown();
      done->set_value();
    });
    if (m->io().stopped() || f.wait_for(std::chrono::seconds(5)) != std::future_status::ready)
      m->Shutdown();
  }
}

uint64_t HttpClient::Start(std::shared_ptr<HttpCall> call) {
  int loop = loops_.CurrentOrNext();
  uint64_t id = (next_call.fetch_add(1, std::memory_order_relaxed) << kLoopBits) | static_cast<uint64_t>(loop);
  auto& m = multis_[loop];
  if (loops_.CurrentIndex() == loop) {
    m->Add(id, std::move(call));
  } else {
    net::post(m->io(), [m, id, call = std::move(call)]() mutable { m->Add(id, std::move(call)); });
  }
  return id;
}

void HttpClient::Cancel(uint64_t id) {
  auto& m = multis_[id & ((1u << kLoopBits) - 1)];
  net::post(m->io(), [m, id] { m->Cancel(id); });
}

void HttpClient::Resume(uint64_t id) {
  auto& m = multis_[id & ((1u << kLoopBits) - 1)];
  net::post(m->io(), [m, id] { m->Resume(id); });
}

}  // namespace nexusflow::connector
