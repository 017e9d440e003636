#include "prompt_cache.h"

#include <algorithm>

namespace nexusflow::mock {

namespace {

std::uint64_t Scoped(std::uint64_t key, std::string_view scope) {
  for (unsigned char c : scope) key = (key ^ c) * 0x100000001b3ULL;
  return key;
}

}  // namespace

CacheUsage PromptCache::Resolve(std::string_view scope, const CachePlan& plan) {
  CacheUsage usage;
  if (!plan.requested) return usage;
  std::int64_t target = 0;
  for (const CacheProbe& write : plan.writes) target = std::max(target, write.tokens);

  std::lock_guard<std::mutex> lock(mutex_);
  for (const CacheProbe& lookup : plan.lookups) {
    if (lookup.tokens > usage.read && keys_.contains(Scoped(lookup.key, scope))) usage.read = lookup.tokens;
  }
  if (plan.assume_hit) usage.read = std::max(usage.read, target);
  usage.write = std::max<std::int64_t>(0, target - usage.read);
  if (keys_.size() + plan.writes.size() > kMaxKeys) keys_.clear();
  for (const CacheProbe& write : plan.writes) {
    if (write.tokens > 0) keys_.insert(Scoped(write.key, scope));
  }
  return usage;
}

}  // namespace nexusflow::mock
