#pragma once
// A fixed pool of event loops: one Asio io_context per thread, each thread running only
// its own. A connection, and everything its request starts in this process (upstream
// transfers, stream deliveries, timers), stays on the loop that accepted it, so a
// request's work never changes threads. Code that runs on a loop thread finds its loop
// with Current().
#include <atomic>
#include <memory>
#include <thread>
#include <vector>

namespace boost::asio {
class io_context;
}  // namespace boost::asio

namespace nexusflow {

class EventLoops {
 public:
  // `threads` <= 0: one per hardware thread. The threads are named `name` and their index;
  // `nice` > 0 lowers their scheduling priority (a pool for work that must yield to the
  // others, such as the edge's slow clients).
  explicit EventLoops(int threads, const char* name = "nf-loop-", int nice = 0);
  ~EventLoops();  // stops and joins
  EventLoops(const EventLoops&) = delete;
  EventLoops& operator=(const EventLoops&) = delete;

  int size() const { return static_cast<int>(loops_.size()); }
  boost::asio::io_context& at(int index);
  // The index of the loop running the calling thread, or -1 off every loop (of any pool).
  int CurrentIndex() const;
  // The calling thread's loop when it is one of ours, else the next in turn.
  int CurrentOrNext();
  // Stops every loop (pending handlers are dropped) and joins the threads. Idempotent.
  void Stop();

 private:
  struct Loop;
  std::vector<std::unique_ptr<Loop>> loops_;
  std::atomic<unsigned> next_{0};
};

}  // namespace nexusflow
