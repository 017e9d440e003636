#pragma once
// The model catalog: models, deployments, prices, protocols and capabilities, built from
// the routing section of the config. Pure logic, shared by RoutingService and the
// gateway's local copy of the catalog.
#include <memory>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "libs/config/config.h"
#include "nexusflow/routing/v1/routing.pb.h"

namespace nexusflow::routing {

namespace pb = ::nexusflow::routing::v1;

class Catalog {
 public:
  Catalog() = default;
  explicit Catalog(const pb::CatalogSnapshot& snapshot);
  static pb::CatalogSnapshot SnapshotFromConfig(const Config::Routing& config, int64_t version);

  // The model with deployments ordered to try: by priority, then a weighted random order
  // among equal priority (so load spreads by weight), unhealthy ones last.
  // NOT_FOUND: unknown model. FAILED_PRECONDITION: protocol or capability not offered.
  absl::StatusOr<pb::Model> Resolve(const std::string& model, llm::v1::Protocol protocol,
                                    const std::string& capability) const;
  const pb::Model* Find(const std::string& model) const;
  const pb::CatalogSnapshot& snapshot() const { return snapshot_; }

 private:
  pb::CatalogSnapshot snapshot_;
  std::unordered_map<std::string, int> index_;
};

std::string ProtocolName(llm::v1::Protocol protocol);

// The interfaces a model answers on, as /v1/models lists them: its chat protocols
// ("openai", "anthropic", "gemini"), or for embedding and media models the interface by
// name ("openai:embeddings", "openai:image-generations", "nexusflow:tasks").
std::vector<std::string> InterfaceNames(const pb::Model& model);
llm::v1::Protocol ProtocolFromName(const std::string& name);

}  // namespace nexusflow::routing
