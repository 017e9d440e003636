#include "libs/common/json_util.h"

#include <cmath>

#include <boost/json.hpp>

namespace nexusflow {

const boost::json::value* JsonField(const boost::json::value& v, std::string_view key) {
  const auto* obj = v.if_object();
  return obj ? JsonField(*obj, key) : nullptr;
}

const boost::json::value* JsonField(const boost::json::object& o, std::string_view key) {
  auto it = o.find(key);
  return it == o.end() ? nullptr : &it->value();
}

std::optional<std::string> JsonString(const boost::json::value& v, std::string_view key) {
  const auto* f = JsonField(v, key);
  if (!f || !f->is_string()) return std::nullopt;
  return std::string(f->get_string());
}

std::optional<int64_t> JsonInt(const boost::json::value& v, std::string_view key) {
  const auto* f = JsonField(v, key);
  if (!f) return std::nullopt;
  if (f->is_int64()) return f->get_int64();
  if (f->is_uint64() && f->get_uint64() <= static_cast<uint64_t>(INT64_MAX))
    return static_cast<int64_t>(f->get_uint64());
  if (f->is_double()) return WholeNumber(f->get_double());
  return std::nullopt;
}

std::optional<int64_t> WholeNumber(double d) {
  // [-2^63, 2^63): every double in it converts; its upper bound is not an int64.
  if (!(d >= -0x1p63 && d < 0x1p63) || d != std::trunc(d)) return std::nullopt;
  return static_cast<int64_t>(d);
}

std::optional<double> JsonNumber(const boost::json::value& v, std::string_view key) {
  const auto* f = JsonField(v, key);
  if (!f) return std::nullopt;
  if (f->is_double()) return f->get_double();
  if (f->is_int64()) return static_cast<double>(f->get_int64());
  if (f->is_uint64()) return static_cast<double>(f->get_uint64());
  return std::nullopt;
}

std::optional<bool> JsonBool(const boost::json::value& v, std::string_view key) {
  const auto* f = JsonField(v, key);
  if (!f || !f->is_bool()) return std::nullopt;
  return f->get_bool();
}

}  // namespace nexusflow
