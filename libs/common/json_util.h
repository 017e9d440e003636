#pragma once
// Small accessors over Boost.JSON values that never throw.
#include <optional>
#include <string>
#include <string_view>

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

namespace nexusflow {

const boost::json::value* JsonField(const boost::json::value& v, std::string_view key);
// Objects are looked up in place (a json::object would otherwise convert to a temporary
// json::value, and the pointer returned would dangle).
const boost::json::value* JsonField(const boost::json::object& o, std::string_view key);
std::optional<std::string> JsonString(const boost::json::value& v, std::string_view key);
// `d` as an integer when it is one and fits an int64 (2.0 from a JavaScript client);
// nullopt for fractions, infinities, NaN and out-of-range values, which must never reach
// a cast.
std::optional<int64_t> WholeNumber(double d);
std::optional<int64_t> JsonInt(const boost::json::value& v, std::string_view key);
std::optional<double> JsonNumber(const boost::json::value& v, std::string_view key);
std::optional<bool> JsonBool(const boost::json::value& v, std::string_view key);

}  // namespace nexusflow
