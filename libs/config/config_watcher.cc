#include "libs/config/config_watcher.h"

#include <sys/stat.h>

#include <cstdio>

#include "absl/strings/str_cat.h"

namespace nexusflow {

ConfigWatcher::ConfigWatcher(std::string path, std::chrono::milliseconds interval,
                             std::function<void(const Config&)> on_change)
    : path_(std::move(path)), on_change_(std::move(on_change)) {
  thread_ = std::thread([this, interval] {
    std::string seen = Stamp();
    std::unique_lock<std::mutex> lock(mu_);
    while (!cv_.wait_for(lock, interval, [this] { return stop_; })) {
      std::string now = Stamp();
      if (now == seen) continue;
      seen = now;
      auto config = LoadConfig(path_);
      if (!config.ok()) {
        fprintf(stderr, "nexusflow: config change ignored: %s\n",
                std::string(config.status().message()).c_str());
        continue;
      }
      fprintf(stderr, "nexusflow: config reloaded from %s\n", path_.c_str());
      on_change_(*config);
    }
  });
}

ConfigWatcher::~ConfigWatcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

std::string ConfigWatcher::Stamp() const {
  struct stat st {};
  if (stat(path_.c_str(), &st) != 0) return "";
  return absl::StrCat(st.st_mtim.tv_sec, ".", st.st_mtim.tv_nsec, ":", st.st_size, ":", st.st_ino);
}

}  // namespace nexusflow
