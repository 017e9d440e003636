#pragma once
// Reloads the configuration file when it changes (polling its modification time and
// size, which also follows a Kubernetes ConfigMap's symlink swap). A file that no longer
// validates is reported and ignored: the running configuration stays.
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "libs/config/config.h"

namespace nexusflow {

class ConfigWatcher {
 public:
  ConfigWatcher(std::string path, std::chrono::milliseconds interval,
                std::function<void(const Config&)> on_change);
  ~ConfigWatcher();

 private:
  std::string Stamp() const;

  std::string path_;
  std::function<void(const Config&)> on_change_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace nexusflow
