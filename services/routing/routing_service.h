#pragma once
// RoutingService: answers model resolution and streams the catalog to the gateways.
#include <memory>
#include <mutex>
#include <vector>

#include "libs/rpc/stream_writer.h"
#include "nexusflow/routing/v1/routing.grpc.pb.h"
#include "services/routing/catalog.h"

namespace nexusflow::routing {

class RoutingService : public pb::RoutingService::CallbackService {
 public:
  explicit RoutingService(const Config::Routing& config);

  grpc::ServerUnaryReactor* Resolve(grpc::CallbackServerContext* ctx,
                                    const pb::ResolveRequest* req,
                                    pb::ResolveResponse* resp) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* ctx,
                                       const pb::ListModelsRequest* req,
                                       pb::ListModelsResponse* resp) override;
  grpc::ServerWriteReactor<pb::CatalogSnapshot>* WatchCatalog(
      grpc::CallbackServerContext* ctx, const pb::WatchCatalogRequest* req) override;

  // Replaces the catalog and pushes it to every watcher.
  void Update(const Config::Routing& config);

 private:
  std::shared_ptr<const Catalog> current() const;

  mutable std::mutex mu_;
  std::shared_ptr<const Catalog> catalog_;
  int64_t version_ = 0;
  std::vector<std::shared_ptr<QueuedWriter<pb::CatalogSnapshot>>> watchers_;
};

}  // namespace nexusflow::routing
