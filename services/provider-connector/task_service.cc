#include "services/provider-connector/task_service.h"

#include <curl/curl.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "libs/common/ids.h"
#include "libs/metrics/metrics.h"
#include "libs/store/postgres.h"
#include "services/provider-connector/dashscope_task.h"

namespace nexusflow::connector {
namespace json = boost::json;

namespace {

struct Families {
  prometheus::Family<prometheus::Counter>& tasks;
  prometheus::Family<prometheus::Gauge>& depth;
  prometheus::Gauge& oldest;
  prometheus::Family<prometheus::Histogram>& poll;
};

Families& Metrics() {
  static auto& depth = prometheus::BuildGauge()
                           .Name("nexusflow_connector_task_queue_depth")
                           .Help("Live media tasks by status (queued, running), across replicas")
                           .Register(MetricsRegistry());
  static auto& oldest_family = prometheus::BuildGauge()
                                   .Name("nexusflow_connector_task_oldest_queued_age_seconds")
                                   .Help("Age of the oldest queued media task; 0 when none waits")
                                   .Register(MetricsRegistry());
  static Families f{
      prometheus::BuildCounter()
          .Name("nexusflow_connector_tasks_total")
          .Help("Media tasks by model and status: created (queued) and ended (succeeded, failed, canceled)")
          .Register(MetricsRegistry()),
      depth, oldest_family.Add({}),
      prometheus::BuildHistogram()
          .Name("nexusflow_connector_task_poll_seconds")
          .Help("Upstream calls of media tasks (submit, poll, cancel), by provider and call")
          .Register(MetricsRegistry())};
  return f;
}

void CountTask(const std::string& model, std::string_view status) {
  Metrics().tasks.Add({{"model", model}, {"status", std::string(status)}}).Increment();
}

prometheus::Histogram& PollHistogram(const std::string& provider, const char* call) {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {0.001, 0.005, 0.01, 0.05, 0.1,
                                                                    0.25,  0.5,   1,    2.5,  5, 10};
  return Metrics().poll.Add({{"provider", provider}, {"call", call}}, kBuckets);
}

v1::TaskStatus ToProtoStatus(TaskStatus s) {
  switch (s) {
    case TaskStatus::kQueued: return v1::TASK_STATUS_QUEUED;
    case TaskStatus::kRunning: return v1::TASK_STATUS_RUNNING;
    case TaskStatus::kSucceeded: return v1::TASK_STATUS_SUCCEEDED;
    case TaskStatus::kFailed: return v1::TASK_STATUS_FAILED;
    case TaskStatus::kCanceled: return v1::TASK_STATUS_CANCELED;
  }
  return v1::TASK_STATUS_UNSPECIFIED;
}

void SetTimestamp(google::protobuf::Timestamp* out, absl::Time t) {
  const int64_t us = absl::ToUnixMicros(t);
  out->set_seconds(us / 1'000'000);
  out->set_nanos(static_cast<int32_t>(us % 1'000'000) * 1000);
}

// What a task carries beyond the caller's parameters: where it may run and what it costs.
// Stored as the task's request: {"params":{…}, "deployments":[…], "price":{…}, "request_id"}.
struct TaskPlan {
  json::object params;
  struct Deployment {
    std::string id, provider, upstream_model;
  };
  std::vector<Deployment> deployments;
  llm::v1::Price price;
  std::string request_id;
};

std::string EncodePlan(const v1::CreateTaskRequest& req, const json::object& params) {
  json::array deployments;
  for (const auto& d : req.candidates())
    deployments.push_back(json::object{{"id", d.id()}, {"provider", d.provider()}, {"upstream_model", d.upstream_model()}});
  const auto& p = req.price();
  json::object price{{"image", p.image_nano_usd()}, {"video_second", p.video_second_nano_usd()},
                     {"input", p.input_nano_usd_per_mtok()}, {"output", p.output_nano_usd_per_mtok()}};
  return json::serialize(json::object{{"params", params},
                                      {"deployments", std::move(deployments)},
                                      {"price", std::move(price)},
                                      {"request_id", req.request_id()}});
}

int64_t IntAt(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v && v->is_int64() ? v->get_int64() : 0;
}

std::string StrAt(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->get_string()) : "";
}

absl::StatusOr<TaskPlan> DecodePlan(const std::string& text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return absl::DataLossError("the task's stored request is not JSON");
  const json::object& o = v.get_object();
  TaskPlan plan;
  if (const json::value* p = o.if_contains("params"); p && p->is_object()) plan.params = p->get_object();
  if (const json::value* d = o.if_contains("deployments"); d && d->is_array()) {
    for (const json::value& x : d->get_array()) {
      if (!x.is_object()) continue;
      const json::object& dep = x.get_object();
      plan.deployments.push_back({StrAt(dep, "id"), StrAt(dep, "provider"), StrAt(dep, "upstream_model")});
    }
  }
  if (const json::value* p = o.if_contains("price"); p && p->is_object()) {
    const json::object& price = p->get_object();
    plan.price.set_image_nano_usd(IntAt(price, "image"));
    plan.price.set_video_second_nano_usd(IntAt(price, "video_second"));
    plan.price.set_input_nano_usd_per_mtok(IntAt(price, "input"));
    plan.price.set_output_nano_usd_per_mtok(IntAt(price, "output"));
  }
  plan.request_id = StrAt(o, "request_id");
  return plan;
}

// The caller's parameters of a stored task, for the public object.
std::string ParamsOf(const Task& task) {
  boost::system::error_code ec;
  json::value v = json::parse(task.request, ec);
  if (ec || !v.is_object()) return "{}";
  const json::value* p = v.get_object().if_contains("params");
  return p ? json::serialize(*p) : "{}";
}

// A blocking HTTP client of one worker thread: its own connections, kept alive.
class MediaHttp {
 public:
  explicit MediaHttp(long connect_timeout_ms) : connect_timeout_ms_(connect_timeout_ms) {
    curl_ = curl_easy_init();
  }
  ~MediaHttp() { curl_easy_cleanup(curl_); }
  MediaHttp(const MediaHttp&) = delete;

  struct Reply {
    long status = 0;
    std::string body;
    std::string content_type;
    std::string transport_error;  // empty on a complete HTTP exchange
  };

  Reply Call(const std::string& url, const std::vector<std::string>& headers, const std::string* post_body,
             long timeout_ms, size_t max_bytes = 1 << 20) {
    Reply reply;
    curl_easy_reset(curl_);
    curl_easy_setopt(curl_, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl_, CURLOPT_CONNECTTIMEOUT_MS, connect_timeout_ms_);
    curl_easy_setopt(curl_, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(curl_, CURLOPT_NOSIGNAL, 1L);
    struct curl_slist* list = nullptr;
    for (const auto& h : headers) list = curl_slist_append(list, h.c_str());
    curl_easy_setopt(curl_, CURLOPT_HTTPHEADER, list);
    if (post_body) {
      curl_easy_setopt(curl_, CURLOPT_POST, 1L);
      curl_easy_setopt(curl_, CURLOPT_POSTFIELDS, post_body->data());
      curl_easy_setopt(curl_, CURLOPT_POSTFIELDSIZE, static_cast<long>(post_body->size()));
    }
    Sink sink{&reply.body, max_bytes, false};
    curl_easy_setopt(curl_, CURLOPT_WRITEFUNCTION, &MediaHttp::Write);
    curl_easy_setopt(curl_, CURLOPT_WRITEDATA, &sink);
    CURLcode rc = curl_easy_perform(curl_);
    curl_slist_free_all(list);
    if (sink.overflow) {
      reply.transport_error = "the answer is larger than allowed";
    } else if (rc != CURLE_OK) {
      reply.transport_error = curl_easy_strerror(rc);
    } else {
      curl_easy_getinfo(curl_, CURLINFO_RESPONSE_CODE, &reply.status);
      char* type = nullptr;
      curl_easy_getinfo(curl_, CURLINFO_CONTENT_TYPE, &type);
      if (type) reply.content_type = type;
    }
    return reply;
  }

 private:
  struct Sink {
    std::string* out;
    size_t max;
    bool overflow;
  };
  static size_t Write(char* data, size_t size, size_t n, void* user) {
    auto* sink = static_cast<Sink*>(user);
    if (sink->out->size() + size * n > sink->max) {
      sink->overflow = true;
      return 0;
    }
    sink->out->append(data, size * n);
    return size * n;
  }

  CURL* curl_;
  long connect_timeout_ms_;
};

constexpr long kUpstreamCallTimeoutMs = 30000;
constexpr int kMaxSubmitRounds = 5;  // every deployment refused this often: the task fails
constexpr size_t kMaxContentBytes = 32 << 20;

std::string WorkerName(int index) {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return absl::StrCat(host, ":", getpid(), ":", index, ":", NewId("", 4));
}

}  // namespace

v1::Task ToProto(const Task& t) {
  v1::Task out;
  out.set_id(t.id);
  out.set_account_id(t.account_id);
  out.set_key_id(t.key_id);
  out.set_model(t.model);
  out.set_kind(std::string(TaskKindName(t.kind)));
  out.set_status(ToProtoStatus(t.status));
  out.set_params_json(ParamsOf(t));
  out.set_hold_id(t.hold_id);
  SetTimestamp(out.mutable_created_at(), t.created_at);
  SetTimestamp(out.mutable_updated_at(), t.updated_at);
  if (auto plan = DecodePlan(t.request); plan.ok()) out.set_request_id(plan->request_id);
  if (t.status == TaskStatus::kSucceeded && !t.result.empty()) {
    boost::system::error_code ec;
    json::value v = json::parse(t.result, ec);
    if (!ec && v.is_object()) {
      const json::object& r = v.get_object();
      if (const json::value* urls = r.if_contains("urls"); urls && urls->is_array())
        for (const json::value& u : urls->get_array())
          if (u.is_string()) out.mutable_result()->add_urls(std::string(u.get_string()));
      if (int64_t expires = IntAt(r, "expires_at"); expires > 0)
        out.mutable_result()->mutable_expires_at()->set_seconds(expires);
    }
  }
  if (t.status == TaskStatus::kFailed || (t.status == TaskStatus::kCanceled && !t.error_code.empty())) {
    out.mutable_error()->set_code(t.error_code);
    out.mutable_error()->set_message(t.error_message);
  }
  if (IsFinal(t.status)) {
    out.mutable_usage()->set_image_count(t.usage.images);
    if (t.kind == TaskKind::kVideo && t.usage.seconds > 0) {
      out.mutable_usage()->set_video_count(1);
      out.mutable_usage()->set_video_duration_seconds(static_cast<double>(t.usage.seconds));
    }
  }
  return out;
}

std::string TaskService::TaskIdFor(std::string_view request_id) {
  return absl::StrCat("task_", HexEncode(Sha256(request_id)).substr(0, 24));
}

// ---------------------------------------------------------------------------------------
// One worker thread: the tasks it holds, each with when it is next due.

class TaskService::Worker {
 public:
  Worker(TaskService& service, int index)
      : s_(service), cfg_(service.config_.media), name_(WorkerName(index)),
        http_(service.config_.connect_timeout_ms) {}

  const std::string& name() const { return name_; }

  // Claims what it may, steps every task that is due; returns when it next has work.
  absl::Time Turn() {
    absl::Time now = absl::Now();
    const size_t cap = static_cast<size_t>(std::max(1, cfg_.max_in_flight / std::max(1, cfg_.workers)));
    while (active_.size() < cap && !s_.stopping_) {
      auto claimed = s_.store_->ClaimNext(name_, Lease(), now, cfg_.max_per_key);
      if (!claimed.ok()) {
        LogOnce(absl::StrCat("media worker: claim failed: ", claimed.status().ToString()));
        break;
      }
      if (!claimed->has_value()) break;
      Active a;
      a.task = std::move(**claimed);
      a.next = now;
      active_[a.task.id] = std::move(a);
    }
    absl::Time next = now + absl::Seconds(1);  // look for new tasks (other replicas') at least this often
    for (auto it = active_.begin(); it != active_.end() && !s_.stopping_;) {
      if (it->second.next <= absl::Now()) {
        if (Step(it->second)) {
          it = active_.erase(it);
          continue;
        }
      }
      next = std::min(next, it->second.next);
      ++it;
    }
    return next;
  }

 private:
  struct Active {
    Task task;
    absl::Time next;
    int polls = 0;           // polls of the upstream job so far
    int submit_rounds = 0;   // rounds of every deployment refusing the submission
    int failures = 0;        // consecutive failed upstream or billing calls
    std::optional<TaskPlan> plan;  // the stored request, decoded once
  };

  absl::Duration Lease() const { return absl::Seconds(cfg_.lease_seconds); }

  void LogOnce(const std::string& line) {
    if (line == last_log_) return;
    last_log_ = line;
    std::fprintf(stderr, "%s\n", line.c_str());
  }

  // Backoff after a failed call: 1 s doubling to 30 s.
  absl::Time RetryAt(Active& a) {
    a.failures = std::min(a.failures + 1, 5);
    return absl::Now() + absl::Seconds(1 << a.failures) / 2;
  }

  // One step of a task; true when this worker is done with it.
  bool Step(Active& a) {
    const absl::Time now = absl::Now();
    // Keep the lease well ahead, and see a cancel request or a task someone else ended.
    if (a.task.lease_expires_at - now < Lease() / 2) {
      auto renewed = s_.store_->RenewLease(a.task.id, name_, Lease(), now);
      if (!renewed.ok()) {
        if (absl::IsFailedPrecondition(renewed.status()) || absl::IsNotFound(renewed.status())) return true;
        a.next = RetryAt(a);
        return false;
      }
      a.task = std::move(*renewed);
    } else if (auto fresh = s_.store_->Get(a.task.account_id, a.task.id); fresh.ok()) {
      if (IsFinal(fresh->status) || fresh->lease_owner != name_) return true;
      a.task.cancel_requested = fresh->cancel_requested;
    }
    if (!a.plan) {
      auto plan = DecodePlan(a.task.request);
      if (!plan.ok()) return Fail(a, "internal_error", std::string(plan.status().message()));
      a.plan = std::move(*plan);
    }
    const TaskPlan& plan = *a.plan;
    if (a.task.cancel_requested) return CancelNow(a, plan);
    if (now - a.task.created_at > absl::Seconds(cfg_.task_timeout_seconds))
      return Fail(a, "upstream_timeout", "The provider did not finish the task in time.");
    if (a.task.upstream_job_id.empty()) return Submit(a, plan);
    return Poll(a, plan);
  }

  const ProviderConfig* Provider(const std::string& name) const {
    auto it = s_.config_.providers.find(name);
    return it == s_.config_.providers.end() ? nullptr : &it->second;
  }

  std::vector<std::string> Headers(const ProviderConfig& p, bool async) const {
    std::vector<std::string> h = {"Content-Type: application/json", "Accept: application/json"};
    if (!p.api_key.empty()) h.push_back("Authorization: Bearer " + p.api_key);
    if (async) h.push_back("X-DashScope-Async: enable");
    return h;
  }

  int SubmittedTo(const std::string& deployment) const {
    int n = 0;
    for (const auto& [id, other] : active_)
      if (other.task.deployment == deployment && !other.task.upstream_job_id.empty()) ++n;
    return n;
  }

  bool Submit(Active& a, const TaskPlan& plan) {
    const MediaKind kind = a.task.kind == TaskKind::kVideo ? MediaKind::kVideo : MediaKind::kImage;
    bool busy = false;
    std::string last_error = "no deployment can run this task";
    for (const auto& d : plan.deployments) {
      const ProviderConfig* p = Provider(d.provider);
      if (!p || p->kind != "dashscope") {
        last_error = absl::StrCat(d.provider, ": not a DashScope provider, which media tasks need");
        continue;
      }
      if (SubmittedTo(d.id) >= cfg_.max_per_deployment) {
        busy = true;
        continue;
      }
      auto body = BuildDashScopeSubmit(kind, d.upstream_model, json::serialize(plan.params));
      if (!body.ok()) return Fail(a, "invalid_request", std::string(body.status().message()));
      const auto start = std::chrono::steady_clock::now();
      MediaHttp::Reply r = http_.Call(p->base_url + std::string(DashScopeSubmitPath(kind)), Headers(*p, true),
                                      &*body, kUpstreamCallTimeoutMs);
      PollHistogram(d.provider, "submit")
          .Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      if (r.transport_error.empty() && r.status >= 200 && r.status < 300) {
        auto job = ParseDashScopeSubmitted(r.body);
        if (!job.ok()) {
          last_error = std::string(job.status().message());
          continue;
        }
        auto running = s_.store_->RecordSubmitted(a.task.id, name_, *job, d.id, absl::Now());
        if (!running.ok()) {
          // The lease is gone (this worker stalled past it): whoever holds it now resubmits.
          LogOnce(absl::StrCat("media worker: recording the submission of ", a.task.id, ": ",
                               running.status().ToString()));
          return true;
        }
        a.task = std::move(*running);
        a.failures = 0;
        a.next = absl::Now() + absl::Milliseconds(cfg_.poll_min_ms);
        return false;
      }
      if (r.transport_error.empty() && r.status >= 400 && r.status < 500 && r.status != 408 && r.status != 429) {
        // The upstream refuses the task itself: another deployment would too.
        return Fail(a, "invalid_request", absl::StrCat("The provider rejected the task: ", UpstreamMessage(r)));
      }
      last_error = r.transport_error.empty() ? absl::StrCat(d.provider, ": HTTP ", r.status, ": ", UpstreamMessage(r))
                                             : absl::StrCat(d.provider, ": ", r.transport_error);
    }
    if (busy) {  // wait for room, without counting it as a failure
      a.next = absl::Now() + absl::Seconds(1);
      return false;
    }
    if (++a.submit_rounds >= kMaxSubmitRounds) return Fail(a, "upstream_unavailable", last_error);
    a.next = RetryAt(a);
    return false;
  }

  static std::string UpstreamMessage(const MediaHttp::Reply& r) {
    boost::system::error_code ec;
    json::value v = json::parse(r.body, ec);
    if (!ec && v.is_object()) {
      std::string m = StrAt(v.get_object(), "message");
      if (!m.empty()) return m;
    }
    return r.body.substr(0, 200);
  }

  const TaskPlan::Deployment* DeploymentOf(const Active& a, const TaskPlan& plan) const {
    for (const auto& d : plan.deployments)
      if (d.id == a.task.deployment) return &d;
    return nullptr;
  }

  // The upstream job's state; nullopt when the upstream did not answer usably (the caller
  // retries later).
  std::optional<DashScopePoll> FetchJob(const Active& a, const TaskPlan& plan) {
    const TaskPlan::Deployment* d = DeploymentOf(a, plan);
    const ProviderConfig* p = d ? Provider(d->provider) : nullptr;
    if (!p) return std::nullopt;
    const auto start = std::chrono::steady_clock::now();
    MediaHttp::Reply r = http_.Call(absl::StrCat(p->base_url, "/api/v1/tasks/", a.task.upstream_job_id),
                                    Headers(*p, false), nullptr, kUpstreamCallTimeoutMs);
    PollHistogram(d->provider, "poll")
        .Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    if (!r.transport_error.empty() || r.status != 200) return std::nullopt;
    auto poll = ParseDashScopePoll(r.body);
    if (!poll.ok()) return std::nullopt;
    return std::move(*poll);
  }

  bool Poll(Active& a, const TaskPlan& plan) {
    const TaskPlan::Deployment* d = DeploymentOf(a, plan);
    if (!d || !Provider(d->provider))
      return Fail(a, "internal_error", "the task's deployment is no longer configured");
    std::optional<DashScopePoll> poll = FetchJob(a, plan);
    if (!poll) {
      a.next = RetryAt(a);
      return false;
    }
    a.failures = 0;
    if (!poll->final) {
      ++a.polls;
      int64_t wait = static_cast<int64_t>(cfg_.poll_min_ms) << std::min(a.polls, 10);
      wait = std::min<int64_t>(wait, cfg_.poll_max_ms);
      wait = std::min<int64_t>(wait, cfg_.lease_seconds * 1000 / 3);
      a.next = absl::Now() + absl::Milliseconds(wait);
      return false;
    }
    if (poll->status == v1::TASK_STATUS_CANCELED) return CancelNow(a, plan);
    return EndAsUpstream(a, plan, *poll);
  }

  // The upstream job ended (succeeded or failed): settle what it produced (or release the
  // hold), then end the task the same way.
  bool EndAsUpstream(Active& a, const TaskPlan& plan, const DashScopePoll& job) {
    // Billed for what the upstream reports, never for more than was asked (the hold).
    TaskUsage usage;
    usage.images = job.usage.image_count();
    usage.seconds = static_cast<int64_t>(std::ceil(job.usage.video_duration_seconds()));
    if (int64_t asked = IntAt(plan.params, "n"); a.task.kind == TaskKind::kImage && asked > 0)
      usage.images = std::min(usage.images, asked);
    if (int64_t asked = IntAt(plan.params, "duration"); a.task.kind == TaskKind::kVideo && asked > 0)
      usage.seconds = std::min(usage.seconds, asked);
    if (job.status == v1::TASK_STATUS_SUCCEEDED) {
      if (!Charge(a, plan, usage)) return false;
      json::array urls;
      for (const auto& u : job.result.urls()) urls.push_back(json::string(u));
      const int64_t expires = absl::ToUnixSeconds(absl::Now() + absl::Hours(cfg_.result_ttl_hours));
      TaskOutcome outcome;
      outcome.status = TaskStatus::kSucceeded;
      outcome.result = json::serialize(json::object{{"urls", std::move(urls)}, {"expires_at", expires}});
      outcome.usage = usage;
      return End(a, outcome);
    }
    // Failed: what the upstream still reports as produced is billed, otherwise nothing.
    if (usage.images > 0 || usage.seconds > 0) {
      if (!Charge(a, plan, usage)) return false;
    } else if (!ReleaseHold(a)) {
      return false;
    }
    TaskOutcome outcome;
    outcome.status = TaskStatus::kFailed;
    outcome.error_code = job.error.code();
    outcome.error_message = job.error.message();
    outcome.usage = usage;
    return End(a, outcome);
  }

  // Settles what the task produced (idempotent on the task id). False: billing did not
  // answer; the task is tried again later, its status unchanged.
  bool Charge(Active& a, const TaskPlan& plan, const TaskUsage& usage) {
    billing::v1::SettleRequest req;
    req.set_request_id(a.task.id);
    req.set_hold_id(a.task.hold_id);
    req.set_account_id(a.task.account_id);
    req.set_key_id(a.task.key_id);
    req.set_model(a.task.model);
    req.set_protocol(llm::v1::PROTOCOL_OPENAI);
    req.mutable_usage()->set_images(usage.images);
    req.mutable_usage()->set_video_seconds(usage.seconds);
    *req.mutable_price() = plan.price;
    req.set_deployment_id(a.task.deployment);
    billing::v1::SettleResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::Status st = s_.billing_->Settle(&ctx, req, &resp);
    if (!st.ok()) {
      LogOnce(absl::StrCat("media worker: settling ", a.task.id, ": ", st.error_message()));
      a.next = RetryAt(a);
      return false;
    }
    return true;
  }

  bool ReleaseHold(Active& a) {
    if (a.task.hold_id.empty()) return true;
    billing::v1::ReleaseHoldRequest req;
    req.set_hold_id(a.task.hold_id);
    billing::v1::ReleaseHoldResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::Status st = s_.billing_->ReleaseHold(&ctx, req, &resp);
    // A hold already closed (released before a crash, or expired) is fine.
    if (!st.ok() && st.error_code() != grpc::NOT_FOUND && st.error_code() != grpc::FAILED_PRECONDITION) {
      LogOnce(absl::StrCat("media worker: releasing the hold of ", a.task.id, ": ", st.error_message()));
      a.next = RetryAt(a);
      return false;
    }
    return true;
  }

  bool Fail(Active& a, std::string code, std::string message) {
    if (!ReleaseHold(a)) return false;
    TaskOutcome outcome;
    outcome.status = TaskStatus::kFailed;
    outcome.error_code = std::move(code);
    outcome.error_message = std::move(message);
    return End(a, outcome);
  }

  bool End(Active& a, const TaskOutcome& outcome) {
    auto t = s_.store_->Finish(a.task.id, name_, outcome, absl::Now());
    if (!t.ok()) {
      if (absl::IsFailedPrecondition(t.status()) || absl::IsNotFound(t.status())) return true;
      a.next = RetryAt(a);
      return false;
    }
    if (t->applied) CountTask(a.task.model, TaskStatusName(t->task.status));
    return true;
  }

  // The owner asked to cancel (or the upstream canceled): cancel the upstream job while it
  // may still be pending, release the hold, end `canceled`.
  bool CancelNow(Active& a, const TaskPlan& plan) {
    if (!a.task.upstream_job_id.empty() && DeploymentOf(a, plan)) {
      // A job that already ended is not canceled: it ends as the upstream says (a worker
      // may have settled it before it died, and a cancel would then leave a charged task
      // without its result). Until the upstream answers, the cancel waits.
      std::optional<DashScopePoll> job = FetchJob(a, plan);
      if (!job) {
        a.next = RetryAt(a);
        return false;
      }
      if (job->final && job->status != v1::TASK_STATUS_CANCELED) return EndAsUpstream(a, plan, *job);
    }
    if (!a.task.upstream_job_id.empty()) {
      const TaskPlan::Deployment* d = DeploymentOf(a, plan);
      if (const ProviderConfig* p = d ? Provider(d->provider) : nullptr) {
        const std::string empty;
        const auto start = std::chrono::steady_clock::now();
        http_.Call(absl::StrCat(p->base_url, "/api/v1/tasks/", a.task.upstream_job_id, "/cancel"),
                   Headers(*p, false), &empty, kUpstreamCallTimeoutMs);
        PollHistogram(d->provider, "cancel")
            .Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      }
    }
    if (!ReleaseHold(a)) return false;
    auto t = s_.store_->Cancel(a.task.id, name_, absl::Now());
    if (!t.ok()) {
      if (absl::IsFailedPrecondition(t.status()) || absl::IsNotFound(t.status())) return true;
      a.next = RetryAt(a);
      return false;
    }
    if (t->applied) CountTask(a.task.model, "canceled");
    return true;
  }

  TaskService& s_;
  const Config::ProviderConnector::Media& cfg_;
  const std::string name_;
  MediaHttp http_;
  std::map<std::string, Active> active_;  // by task id
  std::string last_log_;
};

// ---------------------------------------------------------------------------------------

TaskService::TaskService(const Config::ProviderConnector& config, std::unique_ptr<TaskStore> store,
                         std::unique_ptr<billing::v1::BillingLedgerService::StubInterface> billing)
    : config_(config), store_(std::move(store)), billing_(std::move(billing)) {
  Metrics();
}

TaskService::~TaskService() {
  StopWorkers();
  rpc_pool_.join();
}

void TaskService::StartWorkers() {
  if (!workers_.empty()) return;
  for (int i = 0; i < config_.media.workers; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
  stats_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "nf-media-stats");
    std::unique_lock lock(mu_);
    while (!stopping_) {
      lock.unlock();
      if (auto stats = store_->QueueStats(); stats.ok()) {
        Metrics().depth.Add({{"status", "queued"}}).Set(static_cast<double>(stats->queued));
        Metrics().depth.Add({{"status", "running"}}).Set(static_cast<double>(stats->running));
        Metrics().oldest.Set(stats->oldest_queued_at
                                 ? absl::ToDoubleSeconds(absl::Now() - *stats->oldest_queued_at)
                                 : 0.0);
      }
      lock.lock();
      wake_.wait_for(lock, std::chrono::seconds(5), [this] { return stopping_.load(); });
    }
  });
}

void TaskService::StopWorkers() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
  if (stats_.joinable()) stats_.join();
}

void TaskService::Wake() {
  {
    std::lock_guard lock(mu_);
    ++wakeups_;
  }
  wake_.notify_all();
}

void TaskService::WorkerLoop(int index) {
  // Named so that per-thread CPU (top -H, /proc/PID/task) tells media from the event loops.
  pthread_setname_np(pthread_self(), absl::StrCat("nf-media-", index).c_str());
  Worker worker(*this, index);
  std::unique_lock lock(mu_);
  while (!stopping_) {
    const uint64_t seen = wakeups_;
    lock.unlock();
    const absl::Time next = worker.Turn();
    lock.lock();
    const auto wait = std::chrono::microseconds(std::max<int64_t>(0, absl::ToInt64Microseconds(next - absl::Now())));
    wake_.wait_for(lock, wait, [&] { return stopping_.load() || wakeups_ != seen; });
  }
}

void TaskService::Create(const v1::CreateTaskRequest& req, TaskDone done) {
  boost::asio::post(rpc_pool_, [this, req, done = std::move(done)] {
    if (req.request_id().empty() || req.account_id().empty() || req.model().empty())
      return done(absl::InvalidArgumentError("request_id, account_id and model are required"), {});
    auto kind = ParseTaskKind(req.kind());
    if (!kind) return done(absl::InvalidArgumentError("kind must be image or video"), {});
    boost::system::error_code ec;
    json::value params = json::parse(req.params_json(), ec);
    if (ec || !params.is_object()) return done(absl::InvalidArgumentError("params_json must be a JSON object"), {});
    if (req.candidates().empty()) return done(absl::InvalidArgumentError("no deployment to run the task on"), {});
    NewTask fresh;
    fresh.id = TaskIdFor(absl::StrCat(req.account_id(), "/", req.request_id()));
    fresh.account_id = req.account_id();
    fresh.key_id = req.key_id();
    fresh.model = req.model();
    fresh.kind = *kind;
    fresh.request = EncodePlan(req, params.get_object());
    fresh.hold_id = req.hold_id();
    auto task = store_->Create(fresh, absl::Now());
    if (absl::IsAlreadyExists(task.status())) {
      // The same request again (a retried RPC): the task it created.
      task = store_->Get(req.account_id(), fresh.id);
      if (!task.ok()) return done(task.status(), {});
      return done(absl::OkStatus(), ToProto(*task));
    }
    if (!task.ok()) return done(task.status(), {});
    CountTask(req.model(), "queued");
    Wake();
    done(absl::OkStatus(), ToProto(*task));
  });
}

void TaskService::Get(const v1::GetTaskRequest& req, TaskDone done) {
  boost::asio::post(rpc_pool_, [this, req, done = std::move(done)] {
    auto task = store_->Get(req.account_id(), req.task_id());
    if (!task.ok()) return done(task.status(), {});
    done(absl::OkStatus(), ToProto(*task));
  });
}

void TaskService::List(const v1::ListTasksRequest& req,
                       std::function<void(const absl::Status&, v1::ListTasksResponse)> done) {
  boost::asio::post(rpc_pool_, [this, req, done = std::move(done)] {
    const int limit = req.limit() == 0 ? 20 : req.limit();
    auto page = store_->List(req.account_id(), limit, req.after());
    if (!page.ok()) return done(page.status(), {});
    v1::ListTasksResponse out;
    for (const Task& t : page->tasks) *out.add_tasks() = ToProto(t);
    out.set_has_more(!page->next_cursor.empty());
    out.set_next_cursor(page->next_cursor);
    done(absl::OkStatus(), std::move(out));
  });
}

void TaskService::Cancel(const v1::CancelTaskRequest& req, TaskDone done) {
  boost::asio::post(rpc_pool_, [this, req, done = std::move(done)] {
    auto t = store_->RequestCancel(req.account_id(), req.task_id(), absl::Now());
    if (!t.ok()) return done(t.status(), {});
    if (t->applied) {
      // Canceled before any worker took it: nothing ran, the hold goes back now (an
      // unreachable billing lets it expire instead).
      CountTask(t->task.model, "canceled");
      if (!t->task.hold_id.empty()) {
        billing::v1::ReleaseHoldRequest release;
        release.set_hold_id(t->task.hold_id);
        billing::v1::ReleaseHoldResponse resp;
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
        grpc::Status st = billing_->ReleaseHold(&ctx, release, &resp);
        if (!st.ok())
          std::fprintf(stderr, "task %s: releasing its hold: %s\n", t->task.id.c_str(), st.error_message().c_str());
      }
    } else if (!IsFinal(t->task.status)) {
      Wake();  // its worker acts on the request at its next step
    }
    done(absl::OkStatus(), ToProto(t->task));
  });
}

void TaskService::Content(const v1::GetTaskContentRequest& req,
                          std::function<void(const absl::Status&, v1::TaskContent)> done) {
  boost::asio::post(rpc_pool_, [this, req, done = std::move(done)] {
    auto task = store_->Get(req.account_id(), req.task_id());
    if (!task.ok()) return done(task.status(), {});
    v1::Task t = ToProto(*task);
    if (t.status() != v1::TASK_STATUS_SUCCEEDED)
      return done(absl::FailedPreconditionError("the task has no result yet"), {});
    if (req.index() < 0 || req.index() >= t.result().urls_size())
      return done(absl::OutOfRangeError("no result with that index"), {});
    // Result URLs are signed by the provider: fetched as they are, without credentials.
    MediaHttp http(config_.connect_timeout_ms);
    MediaHttp::Reply r = http.Call(t.result().urls(req.index()), {}, nullptr, kUpstreamCallTimeoutMs, kMaxContentBytes);
    if (!r.transport_error.empty())
      return done(absl::UnavailableError(absl::StrCat("fetching the result: ", r.transport_error)), {});
    if (r.status != 200)
      return done(absl::UnavailableError(absl::StrCat("fetching the result: HTTP ", r.status)), {});
    v1::TaskContent content;
    content.set_data(std::move(r.body));
    content.set_content_type(r.content_type);
    done(absl::OkStatus(), std::move(content));
  });
}

absl::StatusOr<std::unique_ptr<TaskStore>> OpenTaskStore(const std::string& location) {
  if (IsPostgresUrl(location)) return OpenPostgresTaskStore(location);
  return OpenSqliteTaskStore(location);
}

}  // namespace nexusflow::connector
