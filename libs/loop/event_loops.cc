#include "libs/loop/event_loops.h"

#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <string>

namespace nexusflow {
namespace {
// The pool and index of the loop running this thread.
thread_local const EventLoops* current_pool = nullptr;
thread_local int current_index = -1;
}  // namespace

struct EventLoops::Loop {
  boost::asio::io_context io{1};  // one thread runs it: no locking inside Asio's queue
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard{io.get_executor()};
  std::thread thread;
};

EventLoops::EventLoops(int threads, const char* name, int nice) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 0; i < threads; ++i) loops_.push_back(std::make_unique<Loop>());
  for (int i = 0; i < threads; ++i) {
    Loop* loop = loops_[i].get();
    loop->thread = std::thread([this, loop, i, prefix = std::string(name), nice] {
      current_pool = this;
      current_index = i;
      std::string thread_name = prefix + std::to_string(i);
      pthread_setname_np(pthread_self(), thread_name.c_str());
      // Linux keeps a nice value per thread; raising it needs no privilege.
      if (nice > 0) (void)setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), nice);
      loop->io.run();
    });
  }
}

EventLoops::~EventLoops() { Stop(); }

boost::asio::io_context& EventLoops::at(int index) { return loops_.at(index)->io; }

int EventLoops::CurrentIndex() const { return current_pool == this ? current_index : -1; }

int EventLoops::CurrentOrNext() {
  int i = CurrentIndex();
  if (i >= 0) return i;
  return static_cast<int>(next_.fetch_add(1, std::memory_order_relaxed) % loops_.size());
}

void EventLoops::Stop() {
  for (auto& l : loops_) {
    l->guard.reset();
    l->io.stop();
  }
  for (auto& l : loops_)
    if (l->thread.joinable()) l->thread.join();
}

}  // namespace nexusflow
