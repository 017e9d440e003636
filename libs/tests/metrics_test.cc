#include <gtest/gtest.h>

#include <prometheus/text_serializer.h>

#include <cmath>
#include <thread>
#include <vector>

#include "libs/metrics/metrics.h"

namespace nexusflow {
namespace {

TEST(LatencyHistogramTest, CountsAreCumulativeWithInfinityAndExact) {
  LatencyHistogramFamily family("test_seconds", "help", {0.001, 0.01, 0.1});
  auto& a = family.Get({{"route", "a"}});
  auto& b = family.Get({{"route", "b"}});
  EXPECT_EQ(&a, &family.Get({{"route", "a"}}));  // same labels, same series
  a.Observe(0.0005);  // ≤ 0.001
  a.Observe(0.001);   // bounds are inclusive
  a.Observe(0.05);
  a.Observe(5);       // +Inf only
  b.Observe(0.002);
  auto families = family.Collect();
  ASSERT_EQ(families.size(), 1u);
  ASSERT_EQ(families[0].metric.size(), 2u);
  const auto& h = families[0].metric[0].histogram;
  ASSERT_EQ(h.bucket.size(), 4u);
  EXPECT_EQ(h.bucket[0].cumulative_count, 2u);
  EXPECT_EQ(h.bucket[1].cumulative_count, 2u);
  EXPECT_EQ(h.bucket[2].cumulative_count, 3u);
  EXPECT_EQ(h.bucket[3].cumulative_count, 4u);
  EXPECT_TRUE(std::isinf(h.bucket[3].upper_bound));
  EXPECT_EQ(h.sample_count, 4u);
  EXPECT_NEAR(h.sample_sum, 5.0515, 1e-9);
  std::string text = prometheus::TextSerializer().Serialize(families);
  EXPECT_NE(text.find("# TYPE test_seconds histogram"), std::string::npos);
  EXPECT_NE(text.find("test_seconds_bucket{route=\"a\",le=\"+Inf\"} 4"), std::string::npos) << text;
  EXPECT_NE(text.find("test_seconds_count{route=\"b\"} 1"), std::string::npos) << text;
}

TEST(LatencyHistogramTest, ConcurrentObservationsAreAllCounted) {
  LatencyHistogramFamily family("concurrent_seconds", "help", {0.001});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      auto& s = HistogramFor(family, {{"k", "v"}});
      for (int i = 0; i < 100000; ++i) s.Observe(0.0001);
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(family.Collect()[0].metric[0].histogram.sample_count, 400000u);
}

TEST(MetricsTest, RecordedRpcsAppearOnTheProcessMetrics) {
  RpcRecorder recorder("nexusflow.test.v1.TestService", "Ping");
  recorder.Record(grpc::OK, 0.002);
  recorder.Record(grpc::NOT_FOUND, 0.001);
  std::string text = SerializeMetrics();
  EXPECT_NE(text.find("nexusflow_grpc_server_handled_total{code=\"OK\",method=\"Ping\",service=\"nexusflow.test.v1.TestService\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("nexusflow_grpc_server_handled_total{code=\"NOT_FOUND\",method=\"Ping\""), std::string::npos);
  EXPECT_NE(text.find("nexusflow_grpc_server_handling_seconds_count{method=\"Ping\",service=\"nexusflow.test.v1.TestService\"} 2"), std::string::npos) << text;
}

}  // namespace
}  // namespace nexusflow
