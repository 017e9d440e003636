#include "gateway/chat_stream.h"

#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace nexusflow::gateway {
namespace net = boost::asio;

ChatStream::ChatStream(net::any_io_executor executor) : executor_(std::move(executor)) {}

void ChatStream::WakeLocked(std::function<void()>& out) { out.swap(waiter_); }

bool ChatStream::Push(Chunk chunk) {
  std::function<void()> wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return false;
    size_t size = chunk.ByteSizeLong();
    watermark_.Add(size);
    sizes_.push_back(size);
    queue_.push_back(std::move(chunk));
    WakeLocked(wake);
  }
  if (wake) net::post(executor_, std::move(wake));
  return true;
}

void ChatStream::Finish(grpc::Status status) {
  std::function<void()> wake;
  std::function<void()> drop_cancel, drop_drain;  // may own the producer: released unlocked
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    finished_ = true;
    status_ = std::move(status);
    drop_cancel.swap(on_cancel_);
    drop_drain.swap(on_drain_);
    WakeLocked(wake);
  }
  if (wake) net::post(executor_, std::move(wake));
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

net::awaitable<void> ChatStream::Wait() {
  co_await net::async_initiate<decltype(net::use_awaitable), void()>(
      [this](auto handler) {
        // std::function copies: the coroutine's handler can only move.
        auto h = std::make_shared<decltype(handler)>(std::move(handler));
        std::function<void()> resume = [h] { (*h)(); };
        bool ready;
        {
          std::lock_guard<std::mutex> lock(mu_);
          ready = !queue_.empty() || finished_;
          if (!ready) waiter_ = std::move(resume);
        }
        if (ready) net::post(executor_, std::move(resume));
      },
      net::use_awaitable);
}

net::awaitable<bool> ChatStream::Next(Chunk* out) {
  while (true) {
    std::function<void()> drain;
    bool empty = false;
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
        empty = true;
      }
    }
    if (!empty) {
      if (drain) drain();  // the producer was paused: it may go on
      co_return true;
    }
    co_await Wait();
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

}  // namespace nexusflow::gateway
