#include "libs/metrics/latency_histogram.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace nexusflow {

LatencyHistogramFamily::Series::Series(prometheus::Labels labels, const std::vector<double>& bounds)
    : labels_(std::move(labels)),
      bounds_(bounds),
      counts_(new std::atomic<uint64_t>[bounds.size() + 1]) {
  for (size_t i = 0; i <= bounds.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void LatencyHistogramFamily::Series::Observe(double seconds) {
  size_t bucket = std::lower_bound(bounds_.begin(), bounds_.end(), seconds) - bounds_.begin();
  counts_[bucket].fetch_add(1, std::memory_order_relaxed);
  if (seconds > 0)
    sum_nanos_.fetch_add(static_cast<uint64_t>(std::llround(seconds * 1e9)),
                         std::memory_order_relaxed);
}

LatencyHistogramFamily::LatencyHistogramFamily(std::string name, std::string help,
                                               std::vector<double> bounds)
    : name_(std::move(name)), help_(std::move(help)), bounds_(std::move(bounds)) {
  std::sort(bounds_.begin(), bounds_.end());
}

LatencyHistogramFamily::Series& LatencyHistogramFamily::Get(const prometheus::Labels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& s : series_)
    if (s->labels_ == labels) return *s;
  series_.push_back(std::unique_ptr<Series>(new Series(labels, bounds_)));
  return *series_.back();
}

std::vector<prometheus::MetricFamily> LatencyHistogramFamily::Collect() const {
  prometheus::MetricFamily family;
  family.name = name_;
  family.help = help_;
  family.type = prometheus::MetricType::Histogram;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& s : series_) {
    prometheus::ClientMetric m;
    for (const auto& [k, v] : s->labels_) m.label.push_back({k, v});
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= bounds_.size(); ++i) {
      cumulative += s->counts_[i].load(std::memory_order_relaxed);
      prometheus::ClientMetric::Bucket b;
      b.cumulative_count = cumulative;
      b.upper_bound = i < bounds_.size() ? bounds_[i] : std::numeric_limits<double>::infinity();
      m.histogram.bucket.push_back(b);
    }
    m.histogram.sample_count = cumulative;
    m.histogram.sample_sum = static_cast<double>(s->sum_nanos_.load(std::memory_order_relaxed)) / 1e9;
    family.metric.push_back(std::move(m));
  }
  return {std::move(family)};
}

}  // namespace nexusflow
