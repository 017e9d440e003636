#pragma once
// A server-streaming reactor fed from any thread: producers Push messages and Finish;
// the reactor writes them in order, one in flight at a time (gRPC's flow control).
// Owned by shared_ptr: the reactor keeps itself alive until gRPC calls OnDone, and
// producers may keep pushing after a cancel (Push then returns false).
#include <deque>
#include <functional>
#include <memory>
#include <mutex>

#include <grpcpp/support/server_callback.h>

namespace nexusflow {

// Where a producer sends a stream of messages: a gRPC call (QueuedWriter) or, between
// targets that share a process, a LocalStream read directly by the consumer.
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
};

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

 private:
  QueuedWriter() = default;

  void MaybeStartLocked() {
    if (writing_ || finished_) return;
    if (!queue_.empty() && !cancelled_) {
      in_flight_ = std::move(queue_.front());
      queue_.pop_front();
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
    std::lock_guard<std::recursive_mutex> lock(mu_);
    writing_ = false;
    if (!ok) cancelled_ = true;
    MaybeStartLocked();
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
  std::shared_ptr<QueuedWriter> self_;
};

}  // namespace nexusflow
