#pragma once
// The gateway's end of a chat stream: the connector (in this process, on this loop) or
// a gRPC call (split mode) pushes chunks; the request's coroutine awaits them. The queue
// is bounded by kStreamBufferBytes: past it the producer pauses (StreamSink::full) until
// the coroutine, which only reads while its client keeps up, drains it.
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "libs/rpc/stream_writer.h"
#include "nexusflow/connector/v1/connector.grpc.pb.h"

namespace nexusflow::gateway {

class ChatStream : public StreamSink<connector::v1::ChatChunk>,
                   public std::enable_shared_from_this<ChatStream> {
 public:
  using Chunk = connector::v1::ChatChunk;
  explicit ChatStream(boost::asio::any_io_executor executor);

  // Producer side, any thread. Chunks are taken until Finish, also after Cancel: what
  // had arrived is still read (and billed).
  bool Push(Chunk chunk) override;
  void Finish(grpc::Status status) override;
  bool cancelled() const override;
  void SetOnCancel(std::function<void()> fn) override;
  bool full() override;
  void SetOnDrain(std::function<void()> fn) override;

  // Consumer side, on the executor: the next chunk, or false at the end (see status()).
  boost::asio::awaitable<bool> Next(Chunk* out);
  grpc::Status status() const;
  // The consumer stops wanting more: the producer is told once (it cancels upstream).
  void Cancel();

 private:
  // Suspends the consumer until a producer has something (or nothing more) for it.
  boost::asio::awaitable<void> Wait();
  void WakeLocked(std::function<void()>& out);

  boost::asio::any_io_executor executor_;
  mutable std::mutex mu_;
  std::function<void()> waiter_;  // resumes the suspended consumer (posted to executor_)
  std::deque<Chunk> queue_;
  std::deque<size_t> sizes_;
  Watermark watermark_{kStreamBufferBytes};
  bool finished_ = false;
  bool cancelled_ = false;
  grpc::Status status_;
  std::function<void()> on_cancel_;
  std::function<void()> on_drain_;
};

}  // namespace nexusflow::gateway
