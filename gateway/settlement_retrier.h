#pragma once
// Settlements that billing did not acknowledge at once are retried here, in order and
// with backoff, until they are: a charge is never dropped while the process runs.
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <thread>

#include <grpcpp/client_context.h>

#include "nexusflow/billing/v1/billing.grpc.pb.h"

namespace nexusflow::gateway {

struct SettlementRetrier {
  explicit SettlementRetrier(billing::v1::BillingLedgerService::Stub* stub) : stub(stub) {
    thread = std::thread([this] { Loop(); });
  }
  ~SettlementRetrier() {
    {
      std::lock_guard<std::mutex> lock(mu);
      stop = true;
    }
    cv.notify_all();
    thread.join();
  }
  void Add(billing::v1::SettleRequest req) {
    std::lock_guard<std::mutex> lock(mu);
    queue.push_back(std::move(req));
    cv.notify_all();
  }
  void Loop() {
    std::unique_lock<std::mutex> lock(mu);
    int backoff_ms = 100;
    while (true) {
      cv.wait(lock, [this] { return stop || !queue.empty(); });
      if (queue.empty()) return;
      auto req = queue.front();
      lock.unlock();
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
      billing::v1::SettleResponse resp;
      bool ok = stub->Settle(&ctx, req, &resp).ok();
      lock.lock();
      if (ok) {
        queue.pop_front();
        backoff_ms = 100;
      } else {
        // Keep trying (also on the way out: a charge is never dropped while we run).
        cv.wait_for(lock, std::chrono::milliseconds(backoff_ms));
        backoff_ms = std::min(backoff_ms * 2, 5000);
        if (stop && backoff_ms >= 5000) {
          fprintf(stderr, "nexusflow: giving up settling %zu requests at shutdown (first %s)\n",
                  queue.size(), queue.front().request_id().c_str());
          return;
        }
      }
    }
  }
  billing::v1::BillingLedgerService::Stub* stub;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<billing::v1::SettleRequest> queue;
  bool stop = false;
  std::thread thread;
};


}  // namespace nexusflow::gateway
