#pragma once
// Bridges from callback APIs into the coroutines that serve requests: each resumes the
// coroutine on its own loop, whatever thread the callback ran on.
#include <memory>
#include <utility>

#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <grpcpp/support/status.h>

namespace nexusflow::gateway {

// Runs `start(done)`, where `start` begins a gRPC callback-API call that calls `done`
// with its status, and resumes with that status.
template <class Start>
boost::asio::awaitable<grpc::Status> AwaitGrpc(Start start) {
  namespace net = boost::asio;
  auto ex = co_await net::this_coro::executor;
  co_return co_await net::async_initiate<decltype(net::use_awaitable), void(grpc::Status)>(
      [ex, &start](auto handler) {
        // gRPC copies its callback; the coroutine's handler can only move.
        auto h = std::make_shared<decltype(handler)>(std::move(handler));
        start([ex, h](grpc::Status s) {
          net::post(ex, [h, s = std::move(s)]() mutable { (*h)(std::move(s)); });
        });
      },
      net::use_awaitable);
}

// Runs `fn` on `pool` (work that may block: admin calls, synchronous clients) and
// resumes on the calling loop afterwards.
template <class Fn>
boost::asio::awaitable<void> RunBlocking(boost::asio::thread_pool& pool, Fn& fn) {
  namespace net = boost::asio;
  auto ex = co_await net::this_coro::executor;
  co_await net::async_initiate<decltype(net::use_awaitable), void()>(
      [ex, &pool, &fn](auto handler) {
        net::post(pool, [ex, &fn, h = std::move(handler)]() mutable {
          fn();
          net::post(ex, std::move(h));
        });
      },
      net::use_awaitable);
}

}  // namespace nexusflow::gateway
