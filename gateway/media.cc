// Media on the task pipeline: `/v1/tasks` (create, read, list, cancel) and
// `POST /v1/images/generations`, which creates an image task and waits for it.
//
// Creating a task admits it like any request (a rate-limit lease for the request itself,
// and a hold of the most the task can cost: every image asked for, every second of video),
// then hands it to provider-connector, whose media workers run it and settle it when it ends
// (what the upstream reports it produced; nothing when it fails or is canceled). The lease
// ends with the HTTP request; the task's own concurrency is the connector's
// (media.max_per_key), never chat's. Reading a task never charges.
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gateway/async_call.h"
#include "gateway/gateway.h"
#include "gateway/protocols/media.h"
#include "services/billing-ledger/pricing.h"

namespace nexusflow::gateway {
namespace net = boost::asio;

struct Gateway::MediaJob {
  const auth::v1::Identity* identity = nullptr;
  ApiProtocol protocol = ApiProtocol::kNexusFlow;
  std::string model;
  boost::json::object fields;  // the body without "model" (the tasks API)
  media::MediaRequest request;
  bool images_api = false;     // parameters already validated as OpenAI image fields
};

namespace {

// Named constants: a string literal inside a co_await expression trips GCC 12.
constexpr std::string_view kJson = "application/json";

bool IsFinal(connector::v1::TaskStatus s) {
  return s == connector::v1::TASK_STATUS_SUCCEEDED || s == connector::v1::TASK_STATUS_FAILED ||
         s == connector::v1::TASK_STATUS_CANCELED;
}

HttpError TaskRpcFailure(const grpc::Status& s, const std::string& task_id) {
  switch (s.error_code()) {
    case grpc::NOT_FOUND: return HttpError(404, absl::StrCat("No task found with id '", task_id, "'."), "", "task_not_found");
    case grpc::INVALID_ARGUMENT: return HttpError(400, s.error_message());
    case grpc::DEADLINE_EXCEEDED: return HttpError(504, "The task service did not answer in time.");
    default: return HttpError(503, absl::StrCat("The task service is unavailable: ", s.error_message()));
  }
}

std::chrono::system_clock::time_point RpcDeadline(int seconds = 10) {
  return std::chrono::system_clock::now() + std::chrono::seconds(seconds);
}

// How long a task creation without an answer is asked again (a connector restarting).
constexpr std::chrono::seconds kCreateRetryWindow{10};

// Whether a failed CreateTask may still have made its task: the call may have reached a
// connector that died or whose answer was lost. Any other code is the connector's answer.
bool MayHaveCreatedTask(const grpc::Status& s) {
  switch (s.error_code()) {
    case grpc::UNAVAILABLE:
    case grpc::DEADLINE_EXCEEDED:
    case grpc::CANCELLED:
    case grpc::UNKNOWN:
      return true;
    default:
      return false;
  }
}

}  // namespace

net::awaitable<std::optional<connector::v1::Task>> Gateway::CreateMediaTask(MediaJob& job, HttpExchange& ex,
                                                                             RequestLog& log) {
  log.model = job.model;
  auto model = catalog_.Resolve(job.model, llm::v1::PROTOCOL_OPENAI, "");
  HttpError error;
  if (!model.ok()) {
    error = HttpErrorFrom(model.status());
    if (model.status().code() == absl::StatusCode::kNotFound)
      error = HttpError(404, std::string(model.status().message()), "model", "model_not_found");
    co_await SendError(ex, job.protocol, error, log);
    co_return std::nullopt;
  }
  const auto& caps = model->capabilities();
  const bool image = std::find(caps.begin(), caps.end(), "image") != caps.end();
  const bool video = std::find(caps.begin(), caps.end(), "video") != caps.end();
  if ((job.images_api && !image) || (!image && !video)) {
    error = HttpError(400,
                      absl::StrCat("The model `", job.model, "` does not generate ",
                                   job.images_api ? "images." : "images or video: the tasks API runs media models."),
                      "model", "model_not_supported");
    co_await SendError(ex, job.protocol, error, log);
    co_return std::nullopt;
  }
  if (!job.images_api && !media::ValidateParams(video ? "video" : "image", job.fields, &job.request, &error)) {
    co_await SendError(ex, job.protocol, error, log);
    co_return std::nullopt;
  }
  job.request.model = model->id();
  if (auto denied = ModelNotAllowed(*job.identity, model->id())) {
    co_await SendError(ex, job.protocol, *denied, log);
    co_return std::nullopt;
  }

  Admission admission;
  admission.identity = job.identity;
  admission.model = &*model;
  admission.protocol = job.protocol;
  admission.estimated_tokens = 0;
  admission.hold_nano_usd =
      billing::MaxMediaCostNanoUsd(job.request.images, job.request.video_seconds, model->price());
  if (!co_await Admit(admission, ex, log)) co_return std::nullopt;

  connector::v1::CreateTaskRequest req;
  req.set_request_id(log.request_id);
  req.set_account_id(job.identity->account_id());
  req.set_key_id(job.identity->key_id());
  req.set_model(model->id());
  req.set_kind(job.request.kind);
  req.set_params_json(boost::json::serialize(job.request.params));
  *req.mutable_candidates() = model->deployments();
  req.set_hold_id(admission.hold_id);
  *req.mutable_price() = model->price();
  // A creation the connector may have committed without answering (it died, or the answer
  // was lost) is asked again, waiting for a connector to be there: CreateTask is idempotent
  // on the request id, so the retry answers the task the first call made, or makes it.
  connector::v1::Task task;
  grpc::Status s;
  net::steady_timer pause(co_await net::this_coro::executor);
  std::optional<std::chrono::system_clock::time_point> give_up;  // set by the first failure
  for (;;) {
    grpc::ClientContext ctx;
    ctx.set_deadline(give_up ? *give_up : RpcDeadline());
    if (give_up) ctx.set_wait_for_ready(true);
    s = co_await AwaitGrpc([&](auto done) {
      backends_.connector->async()->CreateTask(&ctx, &req, &task, std::move(done));
    });
    if (s.ok() || !MayHaveCreatedTask(s)) break;
    if (!give_up) give_up = std::chrono::system_clock::now() + kCreateRetryWindow;
    if (std::chrono::system_clock::now() >= *give_up) break;
    pause.expires_after(std::chrono::milliseconds(200));
    co_await pause.async_wait(net::use_awaitable);
  }
  path_.ReleaseLease(admission.lease_id, 0);
  if (!s.ok()) {
    // The hold goes back now only when no task exists to settle it; when one may exist, it
    // settles the hold when it ends, and the hold expires otherwise.
    if (!MayHaveCreatedTask(s)) path_.ReleaseHold(admission.hold_id);
    error = TaskRpcFailure(s, "");
    co_await SendError(ex, job.protocol, error, log, admission.headers);
    co_return std::nullopt;
  }
  co_return task;
}

net::awaitable<void> Gateway::HandleTasks(HttpExchange& ex, auth::v1::Identity& identity, RequestLog& log) {
  const HttpRequest& req = ex.request();
  const ApiProtocol protocol = ApiProtocol::kNexusFlow;
  HeaderList headers;
  AddRequestId(headers, log.request_id);
  std::string_view rest = std::string_view(req.path).substr(std::string_view("/v1/tasks").size());
  HttpError error;

  if (rest.empty() || rest == "/") {
    if (req.method == "POST") {
      MediaJob job;
      job.identity = &identity;
      job.protocol = protocol;
      if (!media::ParseBody(req.body, &job.fields, &job.model, &error))
        co_return co_await SendError(ex, protocol, error, log);
      std::optional<connector::v1::Task> task = co_await CreateMediaTask(job, ex, log);
      if (!task) co_return;
      co_return co_await ex.Send(202, kJson, media::TaskBody(*task), std::move(headers));
    }
    if (req.method == "GET") {
      connector::v1::ListTasksRequest lreq;
      lreq.set_account_id(identity.account_id());
      int limit = 20;
      if (auto it = req.query.find("limit"); it != req.query.end() &&
                                             (!absl::SimpleAtoi(it->second, &limit) || limit < 1 || limit > 100)) {
        error = HttpError(400, "'limit' must be an integer from 1 to 100.", "limit");
        co_return co_await SendError(ex, protocol, error, log);
      }
      lreq.set_limit(limit);
      if (auto it = req.query.find("after"); it != req.query.end()) lreq.set_after(it->second);
      connector::v1::ListTasksResponse page;
      grpc::ClientContext ctx;
      ctx.set_deadline(RpcDeadline());
      grpc::Status s = co_await AwaitGrpc([&](auto done) {
        backends_.connector->async()->ListTasks(&ctx, &lreq, &page, std::move(done));
      });
      if (!s.ok()) {
        error = s.error_code() == grpc::INVALID_ARGUMENT ? HttpError(400, "'after' is not a cursor this API gave.", "after")
                                                         : TaskRpcFailure(s, "");
        co_return co_await SendError(ex, protocol, error, log);
      }
      co_return co_await ex.Send(200, kJson, media::TaskListBody(page), std::move(headers));
    }
    error = HttpError(405, absl::StrCat("Method ", req.method, " is not allowed on ", req.path, "."));
    co_return co_await SendError(ex, protocol, error, log);
  }

  // /v1/tasks/{id} and /v1/tasks/{id}/cancel
  rest.remove_prefix(1);
  const size_t slash = rest.find('/');
  const std::string id(rest.substr(0, slash));
  const std::string_view action = slash == std::string_view::npos ? "" : rest.substr(slash + 1);
  if (id.empty() || (!action.empty() && action != "cancel")) {
    error = HttpError(404, absl::StrCat("Unknown request URL: ", req.method, " ", req.path, "."), "", "unknown_url");
    co_return co_await SendError(ex, protocol, error, log);
  }
  const char* expected = action.empty() ? "GET" : "POST";
  if (req.method != expected) {
    HeaderList allow;
    allow.emplace_back("allow", expected);
    error = HttpError(405, absl::StrCat("Method ", req.method, " is not allowed on ", req.path, "."));
    co_return co_await SendError(ex, protocol, error, log, std::move(allow));
  }
  connector::v1::Task task;
  grpc::ClientContext ctx;
  ctx.set_deadline(RpcDeadline());
  grpc::Status s;
  if (action.empty()) {
    connector::v1::GetTaskRequest greq;
    greq.set_task_id(id);
    greq.set_account_id(identity.account_id());
    s = co_await AwaitGrpc([&](auto done) { backends_.connector->async()->GetTask(&ctx, &greq, &task, std::move(done)); });
  } else {
    connector::v1::CancelTaskRequest creq;
    creq.set_task_id(id);
    creq.set_account_id(identity.account_id());
    s = co_await AwaitGrpc([&](auto done) { backends_.connector->async()->CancelTask(&ctx, &creq, &task, std::move(done)); });
  }
  if (!s.ok()) {
    error = TaskRpcFailure(s, id);
    co_return co_await SendError(ex, protocol, error, log);
  }
  log.model = task.model();
  if (!action.empty() && (task.status() == connector::v1::TASK_STATUS_SUCCEEDED ||
                          task.status() == connector::v1::TASK_STATUS_FAILED)) {
    error = HttpError(409, absl::StrCat("The task has already ended (", task.status() == connector::v1::TASK_STATUS_SUCCEEDED ? "succeeded" : "failed", ")."),
                      "", "task_finished");
    co_return co_await SendError(ex, protocol, error, log);
  }
  co_return co_await ex.Send(200, kJson, media::TaskBody(task), std::move(headers));
}

net::awaitable<void> Gateway::HandleImages(HttpExchange& ex, auth::v1::Identity& identity, RequestLog& log) {
  const ApiProtocol protocol = ApiProtocol::kOpenAI;
  MediaJob job;
  job.identity = &identity;
  job.protocol = protocol;
  job.images_api = true;
  bool b64 = false;
  HttpError error;
  if (!media::ParseImagesRequest(ex.request().body, &job.request, &b64, &error))
    co_return co_await SendError(ex, protocol, error, log);
  job.model = job.request.model;
  std::optional<connector::v1::Task> created = co_await CreateMediaTask(job, ex, log);
  if (!created) co_return;
  connector::v1::Task task = std::move(*created);

  // Wait for the task: polls that back off from 200 ms to 2 s, within the deadline.
  net::steady_timer timer(co_await net::this_coro::executor);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(config_.gateway.image_wait_seconds);
  auto delay = std::chrono::milliseconds(200);
  while (!IsFinal(task.status())) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      // The task goes on and is charged when it ends; the caller polls it. A retry would
      // start (and pay for) another one: the SDKs are told not to.
      HeaderList h;
      h.emplace_back("x-should-retry", "false");
      h.emplace_back("x-nexusflow-task-id", task.id());
      error = HttpError(504,
                        absl::StrCat("The image is not ready yet. It is task ", task.id(), ": poll GET /v1/tasks/",
                                     task.id(), " for its result."),
                        "", "task_pending");
      co_return co_await SendError(ex, protocol, error, log, std::move(h));
    }
    timer.expires_after(std::min<std::chrono::steady_clock::duration>(delay, deadline - now));
    co_await timer.async_wait(net::use_awaitable);
    delay = std::min(delay * 3 / 2, std::chrono::milliseconds(2000));
    connector::v1::GetTaskRequest greq;
    greq.set_task_id(task.id());
    greq.set_account_id(identity.account_id());
    connector::v1::Task latest;
    grpc::ClientContext ctx;
    ctx.set_deadline(RpcDeadline());
    grpc::Status s = co_await AwaitGrpc([&](auto done) {
      backends_.connector->async()->GetTask(&ctx, &greq, &latest, std::move(done));
    });
    if (s.ok()) task = std::move(latest);  // otherwise ask again at the next turn
  }
  log.deployment = "";
  if (task.status() != connector::v1::TASK_STATUS_SUCCEEDED) {
    const std::string& code = task.error().code();
    if (code == "invalid_request") error = HttpError(400, task.error().message(), "prompt", "invalid_request");
    else if (code == "upstream_timeout") error = HttpError(504, task.error().message());
    else
      error = HttpError(502, absl::StrCat("The image generation failed",
                                          task.error().message().empty() ? "." : ": ", task.error().message()));
    co_return co_await SendError(ex, protocol, error, log);
  }
  std::vector<std::string> urls, images;
  if (!b64) {
    urls.assign(task.result().urls().begin(), task.result().urls().end());
  } else {
    for (int i = 0; i < task.result().urls_size(); ++i) {
      connector::v1::GetTaskContentRequest creq;
      creq.set_task_id(task.id());
      creq.set_account_id(identity.account_id());
      creq.set_index(i);
      connector::v1::TaskContent content;
      grpc::ClientContext ctx;
      ctx.set_deadline(RpcDeadline(60));
      grpc::Status s = co_await AwaitGrpc([&](auto done) {
        backends_.connector->async()->GetTaskContent(&ctx, &creq, &content, std::move(done));
      });
      if (!s.ok()) {
        // The images exist (and are charged): say where they are.
        error = HttpError(502, absl::StrCat("The images were generated but could not be fetched (",
                                            s.error_message(), "); they are in task ", task.id(), "."));
        co_return co_await SendError(ex, protocol, error, log);
      }
      images.push_back(absl::Base64Escape(content.data()));
    }
  }
  HeaderList headers;
  AddRequestId(headers, log.request_id);
  headers.emplace_back("x-nexusflow-task-id", task.id());
  co_await ex.Send(200, kJson, media::ImagesBody(task.created_at().seconds(), urls, images), std::move(headers));
}

}  // namespace nexusflow::gateway
