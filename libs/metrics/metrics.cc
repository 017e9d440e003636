#include "libs/metrics/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/histogram.h>
#include <prometheus/text_serializer.h>

#include <chrono>
#include <mutex>
#include <type_traits>
#include <unordered_map>

#include "libs/common/status_map.h"

namespace nexusflow {

std::shared_ptr<prometheus::Registry> SharedMetricsRegistry() {
  static auto registry = std::make_shared<prometheus::Registry>();
  return registry;
}

prometheus::Registry& MetricsRegistry() { return *SharedMetricsRegistry(); }

namespace {

// The registry's families and the lock-free histograms, collected together.
class AllMetrics : public prometheus::Collectable {
 public:
  void Add(std::shared_ptr<LatencyHistogramFamily> family) {
    std::lock_guard<std::mutex> lock(mu_);
    extras_.push_back(std::move(family));
  }
  std::vector<prometheus::MetricFamily> Collect() const override {
    auto out = MetricsRegistry().Collect();
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& e : extras_)
      for (auto& f : e->Collect()) out.push_back(std::move(f));
    return out;
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<LatencyHistogramFamily>> extras_;
};

std::shared_ptr<AllMetrics> All() {
  static auto all = std::make_shared<AllMetrics>();
  return all;
}

}  // namespace

LatencyHistogramFamily& NewLatencyHistogram(const std::string& name, const std::string& help) {
  std::vector<double> bounds(LatencyBuckets().begin(), LatencyBuckets().end());
  auto family = std::make_shared<LatencyHistogramFamily>(name, help, std::move(bounds));
  All()->Add(family);
  return *family;  // owned by All() for the life of the process
}

std::string SerializeMetrics() {
  prometheus::TextSerializer serializer;
  return serializer.Serialize(All()->Collect());
}

void StartMetricsListener(const std::string& address) {
  static std::mutex mu;
  static std::vector<std::unique_ptr<prometheus::Exposer>> exposers;
  std::lock_guard<std::mutex> lock(mu);
  auto exposer = std::make_unique<prometheus::Exposer>(address);
  exposer->RegisterCollectable(All());
  exposers.push_back(std::move(exposer));
}

const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
      0.1,    0.25,    0.5,    1,     2.5,    5,     10,   30,    60,  120};
  return kBuckets;
}

namespace {

struct RpcFamilies {
  prometheus::Family<prometheus::Counter>& handled;
  LatencyHistogramFamily& seconds;
};

RpcFamilies& Families() {
  static RpcFamilies families{
      prometheus::BuildCounter()
          .Name("nexusflow_grpc_server_handled_total")
          .Help("RPCs completed by this process's gRPC server, by method and status code")
          .Register(MetricsRegistry()),
      NewLatencyHistogram("nexusflow_grpc_server_handling_seconds",
                          "Time from receiving an RPC to sending its status")};
  return families;
}

class RpcMetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit RpcMetricsInterceptor(grpc::experimental::ServerRpcInfo* info)
      : start_(std::chrono::steady_clock::now()) {
    // "/nexusflow.auth.v1.AuthService/Authenticate"
    std::string full = info->method() ? info->method() : "";
    auto slash = full.rfind('/');
    if (slash != std::string::npos && slash > 0) {
      service_ = full.substr(1, slash - 1);
      method_ = full.substr(slash + 1);
    } else {
      service_ = "unknown";
      method_ = full;
    }
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      grpc::Status status = methods->GetSendStatus();
      double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
      RecordRpc(service_, method_, status.error_code(), seconds);
    }
    methods->Proceed();
  }

 private:
  std::chrono::steady_clock::time_point start_;
  std::string service_;
  std::string method_;
};

class RpcMetricsInterceptorFactory
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new RpcMetricsInterceptor(info);
  }
};

}  // namespace

namespace {

// The series of any family for some label values, created by `make` on this thread's
// first use and cached per thread after.
template <class Series, class Family, class Make>
Series& CachedSeries(Family& family, LabelValues labels, Make make) {
  thread_local std::unordered_map<std::string, void*> cache;
  std::string key(reinterpret_cast<const char*>(&family), sizeof(void*));
  for (const auto& [name, value] : labels) {
    key.push_back('\x1f');
    key.append(value);
  }
  void*& slot = cache[key];
  if (!slot) {
    prometheus::Labels map;
    for (const auto& [name, value] : labels) map.emplace(name, std::string(value));
    slot = &make(map);
  }
  return *static_cast<Series*>(slot);
}

}  // namespace

prometheus::Counter& CounterFor(prometheus::Family<prometheus::Counter>& family, LabelValues labels) {
  return CachedSeries<prometheus::Counter>(
      family, labels, [&](const prometheus::Labels& l) -> auto& { return family.Add(l); });
}

prometheus::Histogram& HistogramFor(prometheus::Family<prometheus::Histogram>& family,
                                    LabelValues labels) {
  return CachedSeries<prometheus::Histogram>(family, labels,
                                             [&](const prometheus::Labels& l) -> auto& {
                                               return family.Add(l, LatencyBuckets());
                                             });
}

LatencyHistogramFamily::Series& HistogramFor(LatencyHistogramFamily& family, LabelValues labels) {
  return CachedSeries<LatencyHistogramFamily::Series>(
      family, labels, [&](const prometheus::Labels& l) -> auto& { return family.Get(l); });
}

void RecordRpc(const std::string& service, const std::string& method, grpc::StatusCode code,
               double seconds) {
  auto& f = Families();
  CounterFor(f.handled, {{"service", service}, {"method", method}, {"code", GrpcCodeName(code)}})
      .Increment();
  HistogramFor(f.seconds, {{"service", service}, {"method", method}}).Observe(seconds);
}

RpcRecorder::RpcRecorder(std::string service, std::string method)
    : service_(std::move(service)), method_(std::move(method)) {
  auto& f = Families();
  ok_ = &f.handled.Add({{"service", service_}, {"method", method_}, {"code", "OK"}});
  seconds_ = &f.seconds.Get({{"service", service_}, {"method", method_}});
}

void RpcRecorder::Record(grpc::StatusCode code, double seconds) {
  if (code != grpc::OK) return RecordRpc(service_, method_, code, seconds);
  ok_->Increment();
  seconds_->Observe(seconds);
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeRpcMetricsInterceptorFactory() {
  Families();
  return std::make_unique<RpcMetricsInterceptorFactory>();
}

}  // namespace nexusflow
