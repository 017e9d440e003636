#include "faults.h"

#include <boost/json.hpp>

namespace nexusflow::mock {

namespace json = boost::json;

std::pair<std::string_view, std::string_view> SplitDeployment(std::string_view path) {
  constexpr std::string_view kPrefix = "/d/";
  if (path.starts_with(kPrefix)) {
    std::string_view rest = path.substr(kPrefix.size());
    std::size_t slash = rest.find('/');
    if (slash != std::string_view::npos && slash > 0) return {rest.substr(0, slash), rest.substr(slash)};
  }
  return {"default", path};
}

FaultDecision DeploymentFaults::Next(std::string_view name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = deployments_.find(name);
  if (it == deployments_.end()) it = deployments_.emplace(std::string(name), Deployment{}).first;
  Deployment& d = it->second;
  ++d.requests;
  FaultDecision out;
  if (!d.fault) return out;
  const std::uint64_t k = ++d.since_set;
  const std::uint64_t p = static_cast<std::uint64_t>(d.fault->percent);
  if (k * p / 100 == (k - 1) * p / 100) return out;  // not this one
  out.status = d.fault->status;
  out.stall_ms = d.fault->stall_ms;
  out.retry_after = d.fault->retry_after;
  if (out.status >= 400) ++d.failed;
  if (out.stall_ms > 0) ++d.stalled;
  return out;
}

std::optional<std::string> DeploymentFaults::Set(std::string_view name, std::string_view body) {
  boost::system::error_code ec;
  json::value v = json::parse(body.empty() ? std::string_view("{}") : body, ec);
  if (ec || !v.is_object()) return "the body must be a JSON object";
  Fault f;
  const json::object& o = v.as_object();
  for (const auto& [key, value] : o) {
    if (key == "retry_after") {
      if (!value.is_string() && !value.is_int64()) return "'retry_after' must be a string or an integer";
      f.retry_after = value.is_string() ? std::string(value.as_string()) : std::to_string(value.as_int64());
      continue;
    }
    if (!value.is_int64()) return "'" + std::string(key) + "' must be an integer";
    const std::int64_t n = value.as_int64();
    if (key == "percent") {
      if (n < 0 || n > 100) return "'percent' must be 0–100";
      f.percent = static_cast<int>(n);
    } else if (key == "status") {
      if (n != 0 && (n < 400 || n > 599)) return "'status' must be 0 or 400–599";
      f.status = static_cast<int>(n);
    } else if (key == "stall_ms") {
      if (n < 0 || n > 600000) return "'stall_ms' must be 0–600000";
      f.stall_ms = n;
    } else {
      return "unknown field '" + std::string(key) + "'";
    }
  }
  if (f.status == 0 && f.stall_ms == 0) return "a fault needs a 'status', a 'stall_ms' or both";
  std::lock_guard<std::mutex> lock(mu_);
  auto it = deployments_.find(name);
  if (it == deployments_.end()) it = deployments_.emplace(std::string(name), Deployment{}).first;
  it->second.fault = f;
  it->second.since_set = 0;
  return std::nullopt;
}

void DeploymentFaults::Clear(std::string_view name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = deployments_.find(name);
  if (it == deployments_.end()) it = deployments_.emplace(std::string(name), Deployment{}).first;
  it->second.fault.reset();
  it->second.since_set = 0;
}

std::string DeploymentFaults::Body() const {
  std::lock_guard<std::mutex> lock(mu_);
  json::array list;
  for (const auto& [name, d] : deployments_) {
    json::value fault = nullptr;
    if (d.fault) {
      fault = json::object{{"percent", d.fault->percent},
                           {"status", d.fault->status},
                           {"stall_ms", d.fault->stall_ms},
                           {"retry_after", d.fault->retry_after}};
    }
    list.push_back(json::object{{"name", name},
                                {"fault", std::move(fault)},
                                {"requests", d.requests},
                                {"failed", d.failed},
                                {"stalled", d.stalled}});
  }
  return json::serialize(json::object{{"deployments", std::move(list)}});
}

}  // namespace nexusflow::mock
