// POST /v1/embeddings: parse, route (a model with the "embedding" capability), admit (rate
// limit on the estimate, hold on the upper bound at the input price), embed on the
// connector, settle on the upstream's usage, answer in the caller's encoding.
#include <boost/asio/use_awaitable.hpp>

#include "absl/strings/str_cat.h"
#include "gateway/gateway.h"
#include "gateway/protocols/openai_embeddings.h"
#include "services/billing-ledger/pricing.h"

namespace nexusflow::gateway {
namespace net = boost::asio;

namespace {

// The HTTP answer to a failed Embed call.
HttpError EmbedFailure(const grpc::Status& s) {
  switch (s.error_code()) {
    case grpc::INVALID_ARGUMENT: return HttpError(400, s.error_message());
    case grpc::FAILED_PRECONDITION: return HttpError(400, s.error_message(), "model", "model_not_supported");
    case grpc::RESOURCE_EXHAUSTED: return HttpError(429, s.error_message());
    case grpc::DEADLINE_EXCEEDED: return HttpError(504, s.error_message());
    default: return HttpError(502, absl::StrCat("The provider connector failed: ", s.error_message()));
  }
}

}  // namespace

net::awaitable<void> Gateway::HandleEmbeddings(HttpExchange& ex, auth::v1::Identity& identity, RequestLog& log) {
  const ApiProtocol protocol = ApiProtocol::kOpenAI;
  openai::ParsedEmbeddings parsed;
  HttpError error;
  if (!openai::ParseEmbeddingsRequest(ex.request().body, &parsed, &error))
    co_return co_await SendError(ex, protocol, error, log);
  llm::v1::EmbedRequest& request = parsed.request;
  request.set_request_id(log.request_id);
  log.model = request.model();

  auto model = catalog_.Resolve(request.model(), llm::v1::PROTOCOL_OPENAI, "embedding");
  if (!model.ok()) {
    HttpError e = HttpErrorFrom(model.status());
    if (model.status().code() == absl::StatusCode::kNotFound)
      e = HttpError(404, std::string(model.status().message()), "model", "model_not_found");
    if (model.status().code() == absl::StatusCode::kFailedPrecondition)
      e = HttpError(400, std::string(model.status().message()), "model", "model_not_supported");
    co_return co_await SendError(ex, protocol, e, log);
  }
  if (auto denied = ModelNotAllowed(identity, model->id())) co_return co_await SendError(ex, protocol, *denied, log);

  Admission admission;
  admission.identity = &identity;
  admission.model = &*model;
  admission.protocol = protocol;
  admission.estimated_tokens = openai::EmbeddingTokenEstimate(request);
  admission.hold_nano_usd = billing::MaxCostNanoUsd(openai::EmbeddingTokenBound(request), 0, model->price());
  if (!co_await Admit(admission, ex, log)) co_return;

  connector::v1::EmbedCall call;
  *call.mutable_request() = request;
  *call.mutable_candidates() = model->deployments();
  llm::v1::EmbedResponse response;
  auto deadline = std::chrono::system_clock::now() +
                  std::chrono::milliseconds(config_.provider_connector.request_timeout_ms + 30000);
  grpc::Status s = co_await path_.Embed(call, &response, deadline);
  if (!s.ok()) {
    // Nothing was produced: nothing is charged.
    path_.ReleaseLease(admission.lease_id, 0);
    path_.ReleaseHold(admission.hold_id);
    HttpError failure = EmbedFailure(s);
    co_return co_await SendError(ex, protocol, failure, log, admission.headers);
  }
  log.deployment = response.deployment_id();
  if (!response.has_usage() || response.usage().input_tokens() <= 0)
    response.mutable_usage()->set_input_tokens(openai::EmbeddingTokenEstimate(request));

  billing::v1::SettleRequest settle;
  settle.set_request_id(log.request_id);
  settle.set_hold_id(admission.hold_id);
  settle.set_account_id(identity.account_id());
  settle.set_key_id(identity.key_id());
  settle.set_model(model->id());
  settle.set_protocol(llm::v1::PROTOCOL_OPENAI);
  *settle.mutable_usage() = response.usage();
  *settle.mutable_price() = model->price();
  settle.set_deployment_id(response.deployment_id());
  log.input_tokens = response.usage().input_tokens();
  co_await SettleCharge(settle, log, /*recorded=*/false);
  path_.ReleaseLease(admission.lease_id, log.input_tokens);

  HeaderList headers = admission.headers;
  AddRequestId(headers, log.request_id);
  co_await ex.Send(200, "application/json", openai::EmbeddingsBody(response, model->id(), parsed.base64),
                   std::move(headers));
}

}  // namespace nexusflow::gateway
