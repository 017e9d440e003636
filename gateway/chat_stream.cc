#include "gateway/chat_stream.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace nexusflow::gateway {
namespace net = boost::asio;

ChatStream::ChatStream(net::any_io_executor executor)
    : executor_(std::move(executor)), wake_(executor_) {
  wake_.expires_at(std::chrono::steady_clock::time_point::max());
}

bool ChatStream::Push(Chunk chunk) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return false;
    size_t size = chunk.ByteSizeLong();
    watermark_.Add(size);
    sizes_.push_back(size);
    queue_.push_back(std::move(chunk));
    wake = std::exchange(waiting_, false);
  }
  if (wake) Wake();
  return true;
}

void ChatStream::Finish(grpc::Status status) {
  bool wake = false;
  std::function<void()> drop_cancel, drop_drain;  // may own the producer: released unlocked
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    finished_ = true;
    status_ = std::move(status);
    drop_cancel.swap(on_cancel_);
    drop_drain.swap(on_drain_);
    wake = std::exchange(waiting_, false);
  }
  if (wake) Wake();
}

bool ChatStream::cancelled() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cancelled_;
}

void ChatStream::SetOnCancel(std::function<void()> fn) {
  std::lock_guard<std::mutex> lock(mu_);
  on_cancel_ = std::move(fn);
}

bool ChatStream::full() {
  std::lock_guard<std::mutex> lock(mu_);
  return !cancelled_ && watermark_.Full();
}

void ChatStream::SetOnDrain(std::function<void()> fn) {
  std::lock_guard<std::mutex> lock(mu_);
  on_drain_ = std::move(fn);
}

net::awaitable<bool> ChatStream::Next(Chunk* out) {
  while (true) {
    std::function<void()> drain;
    bool wait = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!queue_.empty()) {
        *out = std::move(queue_.front());
        queue_.pop_front();
        if (watermark_.Remove(sizes_.front())) drain = on_drain_;
        sizes_.pop_front();
      } else if (finished_) {
        co_return false;
      } else {
        waiting_ = wait = true;
      }
    }
    if (!wait) {
      if (drain) drain();  // the producer was paused: it may go on
      co_return true;
    }
    (void)co_await wake_.async_wait(net::as_tuple(net::use_awaitable));
  }
}

grpc::Status ChatStream::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return status_;
}

void ChatStream::Cancel() {
  std::function<void()> fn;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (cancelled_) return;
    cancelled_ = true;
    fn = std::move(on_cancel_);
  }
  if (fn) fn();
}

void ChatStream::Wake() {
  // The consumer is suspended on wake_ (it set waiting_ before suspending on this same
  // executor), so cancelling the timer resumes it.
  if (executor_.target<net::io_context::executor_type>() &&
      executor_.target<net::io_context::executor_type>()->running_in_this_thread()) {
    wake_.cancel();
    return;
  }
  net::post(executor_, [self = shared_from_this()] { self->wake_.cancel(); });
}

}  // namespace nexusflow::gateway
