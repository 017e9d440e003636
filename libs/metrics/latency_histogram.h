#pragma once
// A histogram family whose observations take no lock (per-bucket atomic counters), for
// latencies observed on every request by many threads at once; prometheus-cpp's own
// Histogram serialises each series behind a mutex. Exposed like any histogram.
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/labels.h>
#include <prometheus/metric_family.h>

namespace nexusflow {

class LatencyHistogramFamily : public prometheus::Collectable {
 public:
  class Series {
   public:
    void Observe(double seconds);

   private:
    friend class LatencyHistogramFamily;
    Series(prometheus::Labels labels, const std::vector<double>& bounds);
    prometheus::Labels labels_;
    const std::vector<double>& bounds_;
    std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // per bucket, +Inf last
    std::atomic<uint64_t> sum_nanos_{0};
  };

  LatencyHistogramFamily(std::string name, std::string help, std::vector<double> bounds);
  // The series for `labels`, created on first use; the reference stays valid.
  Series& Get(const prometheus::Labels& labels);
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  std::string name_;
  std::string help_;
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Series>> series_;
};

}  // namespace nexusflow
