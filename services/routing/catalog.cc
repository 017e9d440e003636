#include "services/routing/catalog.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "libs/common/ids.h"

namespace nexusflow::routing {

std::string ProtocolName(llm::v1::Protocol protocol) {
  switch (protocol) {
    case llm::v1::PROTOCOL_OPENAI: return "openai";
    case llm::v1::PROTOCOL_ANTHROPIC: return "anthropic";
    case llm::v1::PROTOCOL_GEMINI: return "gemini";
    case llm::v1::PROTOCOL_DASHSCOPE: return "dashscope";
    default: return "unspecified";
  }
}

llm::v1::Protocol ProtocolFromName(const std::string& name) {
  if (name == "openai") return llm::v1::PROTOCOL_OPENAI;
  if (name == "anthropic") return llm::v1::PROTOCOL_ANTHROPIC;
  if (name == "gemini") return llm::v1::PROTOCOL_GEMINI;
  if (name == "dashscope") return llm::v1::PROTOCOL_DASHSCOPE;
  return llm::v1::PROTOCOL_UNSPECIFIED;
}

Catalog::Catalog(const pb::CatalogSnapshot& snapshot) : snapshot_(snapshot) {
  for (int i = 0; i < snapshot_.models_size(); ++i) index_[snapshot_.models(i).id()] = i;
}

pb::CatalogSnapshot Catalog::SnapshotFromConfig(const Config::Routing& config, int64_t version) {
  pb::CatalogSnapshot snap;
  snap.set_version(version);
  int64_t created = UnixNow();
  for (const auto& m : config.models) {
    auto* out = snap.add_models();
    out->set_id(m.id);
    out->set_owned_by(m.owned_by.empty() ? "nexusflow" : m.owned_by);
    out->set_created_unix(created);
    for (const auto& p : m.protocols) out->add_supported_protocols(ProtocolFromName(p));
    for (const auto& c : m.capabilities) out->add_capabilities(c);
    out->set_context_window(m.context_window);
    out->set_max_output_tokens(m.max_output_tokens);
    auto* price = out->mutable_price();
    price->set_input_nano_usd_per_mtok(m.price.input);
    price->set_output_nano_usd_per_mtok(m.price.output);
    price->set_cache_read_nano_usd_per_mtok(m.price.cache_read);
    price->set_cache_write_nano_usd_per_mtok(m.price.cache_write);
    price->set_cache_write_1h_nano_usd_per_mtok(m.price.cache_write_1h);
    price->set_image_nano_usd(m.price.image);
    price->set_video_second_nano_usd(m.price.video_second);
    for (const auto& d : m.deployments) {
      auto* dep = out->add_deployments();
      dep->set_id(absl::StrCat(m.id, "@", d.provider));
      dep->set_provider(d.provider);
      dep->set_upstream_model(d.upstream_model);
      dep->set_weight(d.weight);
      dep->set_priority(d.priority);
      dep->set_healthy(true);
    }
  }
  return snap;
}

std::vector<std::string> InterfaceNames(const pb::Model& m) {
  std::vector<std::string> out;
  bool media = false;
  for (const auto& c : m.capabilities()) {
    if (c == "embedding") out.push_back("openai:embeddings");
    if (c == "image") out.push_back("openai:image-generations");
    media = media || c == "embedding" || c == "image" || c == "video";
  }
  for (const auto& c : m.capabilities())
    if (c == "image" || c == "video") {
      out.push_back("nexusflow:tasks");
      break;
    }
  if (!media)
    for (int p : m.supported_protocols()) out.push_back(ProtocolName(static_cast<llm::v1::Protocol>(p)));
  return out;
}

const pb::Model* Catalog::Find(const std::string& model) const {
  auto it = index_.find(model);
  return it == index_.end() ? nullptr : &snapshot_.models(it->second);
}

absl::StatusOr<pb::Model> Catalog::Resolve(const std::string& model, llm::v1::Protocol protocol,
                                           const std::string& capability) const {
  const pb::Model* m = Find(model);
  if (!m) return absl::NotFoundError(absl::StrCat("The model `", model, "` does not exist."));
  if (protocol != llm::v1::PROTOCOL_UNSPECIFIED &&
      std::find(m->supported_protocols().begin(), m->supported_protocols().end(), protocol) ==
          m->supported_protocols().end()) {
    std::vector<std::string> offered = InterfaceNames(*m);
    return absl::FailedPreconditionError(absl::StrCat(
        "The model `", model, "` is not offered on the ", ProtocolName(protocol),
        " protocol; it is offered on: ", offered.empty() ? "none" : absl::StrJoin(offered, ", "), "."));
  }
  if (!capability.empty() &&
      std::find(m->capabilities().begin(), m->capabilities().end(), capability) ==
          m->capabilities().end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("The model `", model, "` does not support ", capability, "."));
  }
  pb::Model out = *m;
  std::vector<pb::Deployment> deps(out.deployments().begin(), out.deployments().end());
  thread_local std::mt19937_64 rng{std::random_device{}()};
  // Weighted random order (Efraimidis–Spirakis keys), then stable by health and priority.
  std::vector<std::pair<double, pb::Deployment>> keyed;
  for (auto& d : deps) {
    double w = std::max(1, d.weight());
    double u = std::uniform_real_distribution<double>(1e-12, 1.0)(rng);
    keyed.emplace_back(-std::pow(u, 1.0 / w), std::move(d));
  }
  std::sort(keyed.begin(), keyed.end(), [](const auto& a, const auto& b) {
    if (a.second.healthy() != b.second.healthy()) return a.second.healthy();
    if (a.second.priority() != b.second.priority())
      return a.second.priority() < b.second.priority();
    return a.first < b.first;
  });
  out.clear_deployments();
  for (auto& [k, d] : keyed) *out.add_deployments() = std::move(d);
  return out;
}

}  // namespace nexusflow::routing
