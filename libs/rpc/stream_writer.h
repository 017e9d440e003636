#pragma once
// A server-streaming reactor fed from any thread: producers Push messages and Finish;
// the reactor writes them in order, one in flight at a time (gRPC's flow control).
// Owned by shared_ptr: the reactor keeps itself alive until gRPC calls OnDone, and
// producers may keep pushing after a cancel (Push then returns false).
#include <algorithm>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>

#include <grpcpp/support/server_callback.h>

namespace nexusflow {

// Where a producer sends a stream of messages: a gRPC call (QueuedWriter) or, between
// targets that share a process, a queue read directly by the consumer.
//
// Flow control: a sink holds a bounded number of bytes. Once full() has answered true,
// the producer should stop producing; the sink calls the drain callback once when its
// consumer has taken it below half (the low watermark), and the producer resumes.
template <class T>
class StreamSink {
 public:
  virtual ~StreamSink() = default;
  // Queues a message; false once the consumer has gone away or the stream finished.
  virtual bool Push(T message) = 0;
  // Ends the stream with `status` after every queued message.
  virtual void Finish(grpc::Status status) = 0;
  virtual bool cancelled() const = 0;
  // Called once when the consumer goes away.
  virtual void SetOnCancel(std::function<void()> fn) = 0;
  // More is queued than the consumer's buffer allows; the drain callback will follow.
  virtual bool full() = 0;
  // Called (on any thread) each time the sink drains below its low watermark after
  // full() answered true.
  virtual void SetOnDrain(std::function<void()> fn) = 0;
};

// The byte accounting behind full() and the drain callback (callers hold their lock).
class Watermark {
 public:
  explicit Watermark(size_t high_bytes) : high_(high_bytes) {}
  void Add(size_t bytes) { queued_ += bytes; }
  // True when the producer must now wait for a drain.
  bool Full() {
    if (queued_ <= high_) return false;
    waiting_ = true;
    return true;
  }
  // True when this removal must wake a waiting producer.
  bool Remove(size_t bytes) {
    queued_ -= std::min(queued_, bytes);
    if (!waiting_ || queued_ > high_ / 2) return false;
    waiting_ = false;
    return true;
  }
  size_t queued() const { return queued_; }

 private:
  size_t high_;
  size_t queued_ = 0;
  bool waiting_ = false;
};

// The per-stream buffer of a chat stream between services, in bytes (high watermark).
constexpr size_t kStreamBufferBytes = 64 << 10;

template <class T>
class QueuedWriter : public grpc::ServerWriteReactor<T>,
                     public StreamSink<T>,
                     public std::enable_shared_from_this<QueuedWriter<T>> {
 public:
  static std::shared_ptr<QueuedWriter> Create() {
    auto w = std::shared_ptr<QueuedWriter>(new QueuedWriter());
    w->self_ = w;
    return w;
  }

  // Queues a message; false once the call is cancelled or finished.
  bool Push(T message) override {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    if (cancelled_ || finish_requested_) return false;
    watermark_.Add(message.ByteSizeLong());
    queue_.push_back(std::move(message));
    MaybeStartLocked();
    return true;
  }

  // Ends the call with `status` after every queued message is written.
  void Finish(grpc::Status status) override {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    if (finish_requested_) return;
    finish_requested_ = true;
    status_ = std::move(status);
    MaybeStartLocked();
  }

  bool cancelled() const override {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    return cancelled_;
  }

  // Called once, on gRPC's thread, when the client goes away.
  void SetOnCancel(std::function<void()> fn) override {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    on_cancel_ = std::move(fn);
  }

  bool full() override {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    return !cancelled_ && watermark_.Full();
  }

  void SetOnDrain(std::function<void()> fn) override {
    std::lock_guard<std::recursive_mutex> lock(mu_);
    on_drain_ = std::move(fn);
  }

 private:
  QueuedWriter() = default;

  void MaybeStartLocked() {
    if (writing_ || finished_) return;
    if (!queue_.empty() && !cancelled_) {
      in_flight_ = std::move(queue_.front());
      queue_.pop_front();
      // Counted out once gRPC takes it: its own window bounds what is in flight.
      drained_ |= watermark_.Remove(in_flight_.ByteSizeLong());
      writing_ = true;
      this->StartWrite(&in_flight_);
      return;
    }
    if (finish_requested_ || cancelled_) {
      finished_ = true;
      this->grpc::ServerWriteReactor<T>::Finish(cancelled_ ? grpc::Status::CANCELLED : status_);
    }
  }

  void OnWriteDone(bool ok) override {
    std::function<void()> drain;
    {
      std::lock_guard<std::recursive_mutex> lock(mu_);
      writing_ = false;
      if (!ok) cancelled_ = true;
      MaybeStartLocked();
      if (drained_ && on_drain_) drain = on_drain_;
      drained_ = false;
    }
    if (drain) drain();
  }

  void OnCancel() override {
    std::function<void()> fn;
    {
      std::lock_guard<std::recursive_mutex> lock(mu_);
      cancelled_ = true;
      fn = std::move(on_cancel_);
      MaybeStartLocked();
    }
    if (fn) fn();
  }

  void OnDone() override {
    std::shared_ptr<QueuedWriter> keep;
    {
      std::lock_guard<std::recursive_mutex> lock(mu_);
      on_cancel_ = nullptr;  // it may own whoever owns this writer
      on_drain_ = nullptr;
      keep.swap(self_);
    }
  }

  mutable std::recursive_mutex mu_;
  std::deque<T> queue_;
  T in_flight_;
  bool writing_ = false;
  bool finish_requested_ = false;
  bool finished_ = false;
  bool cancelled_ = false;
  grpc::Status status_;
  std::function<void()> on_cancel_;
  std::function<void()> on_drain_;
  Watermark watermark_{kStreamBufferBytes};
  bool drained_ = false;  // a drain is due to the producer
  std::shared_ptr<QueuedWriter> self_;
};

}  // namespace nexusflow
