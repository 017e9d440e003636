// The mock's prompt cache: which prompt prefixes this process has already been asked to
// cache, so the first request with a marked prefix reports a cache write and later ones a
// cache read. Only the keys are kept (a hash of the model and the prefix), never the text.
// Each protocol has its own scope, as each vendor has its own cache: the same prefix sent
// once per protocol is written once per protocol.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string_view>
#include <unordered_set>

#include "reply.h"

namespace nexusflow::mock {

class PromptCache {
 public:
  // Beyond this many keys the cache forgets everything and starts over (a bound on memory
  // for long benchmark runs; a forgotten prefix is simply written again).
  static constexpr std::size_t kMaxKeys = 1 << 20;

  // Read = the longest lookup already known in `scope` (every write when `assume_hit`);
  // write = the longest write prefix minus what was read. Then remembers every write.
  // Thread-safe.
  CacheUsage Resolve(std::string_view scope, const CachePlan& plan);

 private:
  std::mutex mutex_;
  std::unordered_set<std::uint64_t> keys_;
};

}  // namespace nexusflow::mock
