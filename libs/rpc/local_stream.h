#pragma once
// A blocking stream for tests and tools: the producer pushes (any thread), the consumer
// blocks in Next. (The gateway's own end of a stream is gateway/chat_stream.h, which
// suspends a coroutine instead of a thread.)
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>

#include "libs/rpc/stream_writer.h"

namespace nexusflow {

template <class T>
class LocalStream : public StreamSink<T> {
 public:
  bool Push(T message) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (cancelled_ || finished_) return false;
      watermark_.Add(message.ByteSizeLong());
      queue_.push_back(std::move(message));
    }
    cv_.notify_one();  // after unlocking, so the reader does not wake into a held lock
    return true;
  }

  void Finish(grpc::Status status) override {
    std::function<void()> drop;  // may own the producer: released outside the lock
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (finished_) return;
      finished_ = true;
      status_ = std::move(status);
      drop.swap(on_cancel_);
      on_drain_ = nullptr;
    }
    cv_.notify_one();
  }

  bool cancelled() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return cancelled_;
  }

  void SetOnCancel(std::function<void()> fn) override {
    std::lock_guard<std::mutex> lock(mu_);
    on_cancel_ = std::move(fn);
  }

  bool full() override {
    std::lock_guard<std::mutex> lock(mu_);
    return watermark_.Full();
  }

  void SetOnDrain(std::function<void()> fn) override {
    std::lock_guard<std::mutex> lock(mu_);
    on_drain_ = std::move(fn);
  }

  // The next message; false at the end of the stream (then see status()).
  bool Next(T* out) {
    std::function<void()> drain;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return !queue_.empty() || finished_; });
      if (queue_.empty()) return false;
      *out = std::move(queue_.front());
      queue_.pop_front();
      if (watermark_.Remove(out->ByteSizeLong())) drain = on_drain_;
    }
    if (drain) drain();
    return true;
  }

  // Waits for the end of the stream and returns its status.
  grpc::Status Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return finished_; });
    return status_;
  }

  // The consumer goes away: the producer is told once.
  void Cancel() {
    std::function<void()> fn;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (cancelled_) return;
      cancelled_ = true;
      fn = std::move(on_cancel_);
    }
    if (fn) fn();
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<T> queue_;
  bool finished_ = false;
  bool cancelled_ = false;
  grpc::Status status_;
  std::function<void()> on_cancel_;
  std::function<void()> on_drain_;
  Watermark watermark_{kStreamBufferBytes};
};

}  // namespace nexusflow
