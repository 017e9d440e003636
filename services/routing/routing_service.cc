#include "services/routing/routing_service.h"

#include <prometheus/counter.h>

#include "libs/rpc/internal_auth.h"
#include "libs/common/status_map.h"
#include "libs/metrics/metrics.h"

namespace nexusflow::routing {
namespace {

prometheus::Family<prometheus::Counter>& Resolutions() {
  static auto& family = prometheus::BuildCounter()
                            .Name("nexusflow_routing_resolutions_total")
                            .Help("Model resolutions by result")
                            .Register(MetricsRegistry());
  return family;
}

}  // namespace

RoutingService::RoutingService(const Config::Routing& config) {
  for (const char* r : {"ok", "not_found", "not_offered"}) Resolutions().Add({{"result", r}});
  Update(config);
}

std::shared_ptr<const Catalog> RoutingService::current() const {
  std::lock_guard<std::mutex> lock(mu_);
  return catalog_;
}

void RoutingService::Update(const Config::Routing& config) {
  std::lock_guard<std::mutex> lock(mu_);
  ++version_;
  catalog_ = std::make_shared<const Catalog>(Catalog::SnapshotFromConfig(config, version_));
  std::vector<std::shared_ptr<QueuedWriter<pb::CatalogSnapshot>>> live;
  for (auto& w : watchers_)
    if (w->Push(catalog_->snapshot())) live.push_back(w);
  watchers_.swap(live);
}

grpc::ServerUnaryReactor* RoutingService::Resolve(grpc::CallbackServerContext* ctx,
                                                  const pb::ResolveRequest* req,
                                                  pb::ResolveResponse* resp) {
  NF_REQUIRE_INTERNAL(ctx);
  auto model = current()->Resolve(req->model(), req->protocol(), req->capability());
  auto* reactor = ctx->DefaultReactor();
  if (!model.ok()) {
    Resolutions()
        .Add({{"result", model.status().code() == absl::StatusCode::kNotFound ? "not_found"
                                                                              : "not_offered"}})
        .Increment();
    reactor->Finish(ToGrpcStatus(model.status()));
    return reactor;
  }
  CounterFor(Resolutions(), {{"result", "ok"}}).Increment();
  *resp->mutable_model() = std::move(*model);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* RoutingService::ListModels(grpc::CallbackServerContext* ctx,
                                                     const pb::ListModelsRequest*,
                                                     pb::ListModelsResponse* resp) {
  NF_REQUIRE_INTERNAL(ctx);
  auto catalog = current();
  for (const auto& m : catalog->snapshot().models()) *resp->add_models() = m;
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerWriteReactor<pb::CatalogSnapshot>* RoutingService::WatchCatalog(
    grpc::CallbackServerContext* ctx, const pb::WatchCatalogRequest*) {
  NF_REQUIRE_INTERNAL_STREAM(ctx, pb::CatalogSnapshot);
  auto writer = QueuedWriter<pb::CatalogSnapshot>::Create();
  std::lock_guard<std::mutex> lock(mu_);
  writer->Push(catalog_->snapshot());
  watchers_.push_back(writer);
  return writer.get();
}

}  // namespace nexusflow::routing
