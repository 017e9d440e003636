#include "services/provider-connector/candidate_order.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace nexusflow::connector {

CandidateOrder OrderCandidates(const std::vector<CandidateView>& candidates, std::mt19937_64& rng) {
  CandidateOrder out;
  bool any_available = false;
  for (const auto& c : candidates) any_available |= c.available && !c.blocked;
  out.panic = !any_available;
  std::uniform_real_distribution<double> uniform(1e-12, 1.0);
  // (priority, key) per eligible candidate; a higher key goes first within a tier.
  std::vector<std::pair<std::pair<int, double>, int>> keyed;
  for (int i = 0; i < static_cast<int>(candidates.size()); ++i) {
    const auto& c = candidates[i];
    if (c.blocked || (any_available && !c.available)) continue;
    double u = uniform(rng);
    // u^(1/w) is in (0, 1]; a standby (weight 0) gets a key below every weighted one.
    double key = c.weight > 0 ? std::pow(u, 1.0 / c.weight) : u - 2.0;
    keyed.push_back({{c.priority, key}, i});
  }
  std::sort(keyed.begin(), keyed.end(), [](const auto& a, const auto& b) {
    if (a.first.first != b.first.first) return a.first.first < b.first.first;
    return a.first.second > b.first.second;
  });
  for (const auto& k : keyed) out.indexes.push_back(k.second);
  return out;
}

}  // namespace nexusflow::connector
