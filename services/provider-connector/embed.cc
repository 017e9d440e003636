#include "services/provider-connector/embed.h"

#include <cmath>

#include <boost/json.hpp>

#include "absl/strings/str_cat.h"

namespace nexusflow::connector {
namespace json = boost::json;

std::string BuildOpenAiEmbedBody(const llm::v1::EmbedRequest& request, std::string_view upstream_model) {
  json::array input;
  for (const auto& in : request.inputs()) {
    if (in.has_tokens()) {
      json::array ids;
      for (int64_t id : in.tokens().ids()) ids.push_back(id);
      input.push_back(std::move(ids));
    } else {
      input.push_back(json::string(in.text()));
    }
  }
  json::object body{{"model", upstream_model}, {"input", std::move(input)}, {"encoding_format", "float"}};
  if (request.has_dimensions()) body["dimensions"] = request.dimensions();
  if (!request.user().empty()) body["user"] = request.user();
  return json::serialize(body);
}

absl::StatusOr<llm::v1::EmbedResponse> ParseOpenAiEmbedResponse(std::string_view body, int expected_inputs) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec || !v.is_object()) return absl::InternalError("the upstream's embeddings answer is not a JSON object");
  const json::object& o = v.get_object();
  const json::value* data = o.if_contains("data");
  if (!data || !data->is_array()) return absl::InternalError("the upstream's embeddings answer has no data array");
  llm::v1::EmbedResponse out;
  out.mutable_embeddings()->Reserve(expected_inputs);
  for (int i = 0; i < expected_inputs; ++i) out.add_embeddings()->set_index(i);
  std::vector<bool> seen(static_cast<size_t>(expected_inputs));
  for (const json::value& item : data->get_array()) {
    const json::object* e = item.if_object();
    const json::value* index = e ? e->if_contains("index") : nullptr;
    const json::value* values = e ? e->if_contains("embedding") : nullptr;
    if (!index || !index->is_number() || !values || !values->is_array())
      return absl::InternalError("an embedding of the upstream's answer lacks its index or values");
    int64_t i = index->to_number<int64_t>(ec);
    if (ec || i < 0 || i >= expected_inputs || seen[static_cast<size_t>(i)])
      return absl::InternalError(absl::StrCat("the upstream answered an embedding for index ", i, " of ", expected_inputs));
    seen[static_cast<size_t>(i)] = true;
    auto* dst = out.mutable_embeddings(static_cast<int>(i))->mutable_values();
    dst->Reserve(static_cast<int>(values->get_array().size()));
    for (const json::value& x : values->get_array()) {
      if (!x.is_number()) return absl::InternalError("an embedding value of the upstream's answer is not a number");
      float f = static_cast<float>(x.to_number<double>(ec));
      if (!std::isfinite(f)) return absl::InternalError("an embedding value of the upstream's answer is out of range");
      dst->Add(f);
    }
  }
  for (bool s : seen)
    if (!s) return absl::InternalError("the upstream answered fewer embeddings than inputs");
  if (const json::value* m = o.if_contains("model"); m && m->is_string()) out.set_upstream_model(std::string(m->get_string()));
  if (const json::value* u = o.if_contains("usage"); u && u->is_object()) {
    if (const json::value* p = u->get_object().if_contains("prompt_tokens"); p && p->is_number())
      out.mutable_usage()->set_input_tokens(p->to_number<int64_t>(ec));
  }
  return out;
}

}  // namespace nexusflow::connector
