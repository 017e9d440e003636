#pragma once
// One Prometheus registry per process. Every gRPC server counts its RPCs through the
// interceptor below; services register their own families once at start-up.
#include <memory>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include <grpcpp/support/server_interceptor.h>
#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "libs/metrics/latency_histogram.h"

namespace nexusflow {

prometheus::Registry& MetricsRegistry();
std::shared_ptr<prometheus::Registry> SharedMetricsRegistry();

// The registry in the Prometheus text exposition format.
std::string SerializeMetrics();

// Serves /metrics on `address` (host:port) until the process exits.
void StartMetricsListener(const std::string& address);

// Counts and times every RPC of the server it is installed on:
// nexusflow_grpc_server_handled_total{service,method,code},
// nexusflow_grpc_server_handling_seconds{service,method}.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeRpcMetricsInterceptorFactory();

// The series of a family for some label values, found once per thread: Family::Add takes
// the family's lock on every call, and a request path that counts a dozen things would
// queue its threads on those locks. Series are never removed, so the pointers stay good.
using LabelValues = std::initializer_list<std::pair<const char*, std::string_view>>;
prometheus::Counter& CounterFor(prometheus::Family<prometheus::Counter>& family, LabelValues labels);
prometheus::Histogram& HistogramFor(prometheus::Family<prometheus::Histogram>& family,
                                    LabelValues labels);
LatencyHistogramFamily::Series& HistogramFor(LatencyHistogramFamily& family, LabelValues labels);

// A lock-free latency histogram family, exposed on /metrics with the registry's families.
// Create them at start-up.
LatencyHistogramFamily& NewLatencyHistogram(const std::string& name, const std::string& help);

// Counts one call the way the interceptor does, for calls between targets of one process
// that skip gRPC (so dashboards see every call, however it travelled).
void RecordRpc(const std::string& service, const std::string& method, grpc::StatusCode code,
               double seconds);

// RecordRpc for one service method, with its OK series looked up once (the hot path
// pays an increment and an observation, not a label lookup).
class RpcRecorder {
 public:
  RpcRecorder(std::string service, std::string method);
  void Record(grpc::StatusCode code, double seconds);

 private:
  std::string service_;
  std::string method_;
  prometheus::Counter* ok_;
  LatencyHistogramFamily::Series* seconds_;
};

// Latency buckets (seconds) shared by request histograms.
const prometheus::Histogram::BucketBoundaries& LatencyBuckets();

}  // namespace nexusflow
