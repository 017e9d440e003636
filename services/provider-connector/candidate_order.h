#pragma once
// The order in which one request tries its candidate deployments: pure logic on an
// injected random source.
//
// Candidates that are available (circuit closed, or a probe is due) come first, by
// priority tier (lower first); inside a tier in weighted random order (Efraimidis–Spirakis
// keys), so the first deployment of a tier is chosen with probability weight / sum of the
// tier's available weights, and whichever fails first is replaced the same way by the
// rest. A weight of 0 is a standby: tried only after the weighted ones of its tier.
// Unavailable candidates are left out, unless none is available: then every candidate
// not held back by an upstream's retry-after is tried in the same order ("panic": an
// ejection steers traffic away; it does not refuse a request that has no other way).
#include <random>
#include <vector>

namespace nexusflow::connector {

struct CandidateView {
  int priority = 0;
  int weight = 1;
  bool available = true;  // the circuit lets a request through now
  bool blocked = false;   // an upstream's retry-after forbids it now
};

struct CandidateOrder {
  std::vector<int> indexes;  // into the candidates, in the order to try
  bool panic = false;        // no candidate was available: these are ejected ones
};

CandidateOrder OrderCandidates(const std::vector<CandidateView>& candidates, std::mt19937_64& rng);

}  // namespace nexusflow::connector
