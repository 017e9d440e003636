#include "gateway/protocols/openai_embeddings.h"

#include <charconv>
#include <cstring>

#include <boost/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace nexusflow::gateway::openai {
namespace json = boost::json;

namespace {

constexpr char kBadInput[] =
    "'$.input' is invalid: expected a non-empty string, an array of non-empty strings, an array of "
    "token ids, or an array of non-empty token id arrays.";

bool TokenIds(const json::array& ids, llm::v1::TokenIds* out) {
  if (ids.empty()) return false;
  for (const json::value& id : ids) {
    boost::system::error_code ec;
    if (!id.is_int64() && !id.is_uint64()) return false;
    int64_t v = id.to_number<int64_t>(ec);
    if (ec || v < 0) return false;
    out->add_ids(v);
  }
  return true;
}

bool Input(const json::value& input, llm::v1::EmbedRequest* req) {
  if (input.is_string()) {
    if (input.get_string().empty()) return false;
    req->add_inputs()->set_text(std::string(input.get_string()));
    return true;
  }
  if (!input.is_array() || input.get_array().empty()) return false;
  const json::array& items = input.get_array();
  if (items.front().is_string()) {
    for (const json::value& item : items) {
      if (!item.is_string() || item.get_string().empty()) return false;
      req->add_inputs()->set_text(std::string(item.get_string()));
    }
    return true;
  }
  if (items.front().is_array()) {
    for (const json::value& item : items)
      if (!item.is_array() || !TokenIds(item.get_array(), req->add_inputs()->mutable_tokens())) return false;
    return true;
  }
  return TokenIds(items, req->add_inputs()->mutable_tokens());
}

}  // namespace

bool ParseEmbeddingsRequest(std::string_view body, ParsedEmbeddings* out, HttpError* error) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec || !v.is_object()) {
    *error = HttpError(400, absl::StrCat("We could not parse the JSON body of your request: ",
                                         ec ? ec.message() : "expected a JSON object", "."));
    return false;
  }
  const json::object& o = v.get_object();
  auto& req = out->request;
  const json::value* model = o.if_contains("model");
  if (!model || model->is_null()) {
    *error = HttpError(400, "Missing required parameter: 'model'.", "model");
    return false;
  }
  if (!model->is_string() || model->get_string().empty()) {
    *error = HttpError(400, "Invalid 'model': expected a non-empty string.", "model");
    return false;
  }
  req.set_model(std::string(model->get_string()));
  const json::value* input = o.if_contains("input");
  if (!input || input->is_null()) {
    *error = HttpError(400, "Missing required parameter: 'input'.", "input");
    return false;
  }
  if (!Input(*input, &req)) {
    *error = HttpError(400, kBadInput, "input");
    return false;
  }
  if (req.inputs_size() > kMaxEmbeddingInputs) {
    *error = HttpError(400, absl::StrCat("Invalid 'input': at most ", kMaxEmbeddingInputs,
                                         " inputs per request, got ", req.inputs_size(), "."),
                       "input");
    return false;
  }
  if (const json::value* f = o.if_contains("encoding_format"); f && !f->is_null()) {
    if (!f->is_string() || (f->get_string() != "float" && f->get_string() != "base64")) {
      *error = HttpError(400, "Invalid 'encoding_format': expected 'float' or 'base64'.", "encoding_format");
      return false;
    }
    out->base64 = f->get_string() == "base64";
  }
  if (const json::value* d = o.if_contains("dimensions"); d && !d->is_null()) {
    int64_t n = d->is_int64() ? d->get_int64() : (d->is_uint64() ? -1 : 0);
    if (n < 1 || n > 65536) {
      *error = HttpError(400, "Invalid 'dimensions': expected an integer from 1 to 65536.", "dimensions");
      return false;
    }
    req.set_dimensions(static_cast<int32_t>(n));
  }
  if (const json::value* u = o.if_contains("user"); u && !u->is_null()) {
    if (!u->is_string()) {
      *error = HttpError(400, "Invalid 'user': expected a string.", "user");
      return false;
    }
    req.set_user(std::string(u->get_string()));
  }
  return true;
}

std::string EmbeddingsBody(const llm::v1::EmbedResponse& response, std::string_view model, bool base64) {
  std::string out = R"({"object":"list","data":[)";
  char number[32];
  for (int i = 0; i < response.embeddings_size(); ++i) {
    const auto& e = response.embeddings(i);
    if (i) out.push_back(',');
    absl::StrAppend(&out, R"({"object":"embedding","index":)", e.index(), R"(,"embedding":)");
    if (base64) {
      std::string bytes(static_cast<size_t>(e.values_size()) * sizeof(float), '\0');
      std::memcpy(bytes.data(), e.values().data(), bytes.size());  // little-endian hosts, as OpenAI's
      absl::StrAppend(&out, "\"", absl::Base64Escape(bytes), "\"}");
      continue;
    }
    out.push_back('[');
    for (int j = 0; j < e.values_size(); ++j) {
      if (j) out.push_back(',');
      auto [end, ec] = std::to_chars(number, number + sizeof(number), e.values(j));  // shortest round-trip
      out.append(number, static_cast<size_t>(end - number));
    }
    out.append("]}");
  }
  int64_t tokens = response.usage().input_tokens();
  absl::StrAppend(&out, R"(],"model":)", json::serialize(json::string(model)), R"(,"usage":{"prompt_tokens":)", tokens,
                  R"(,"total_tokens":)", tokens, "}}");
  return out;
}

int64_t EmbeddingTokenBound(const llm::v1::EmbedRequest& request) {
  int64_t tokens = 0;
  for (const auto& in : request.inputs())
    tokens += in.has_tokens() ? in.tokens().ids_size() : static_cast<int64_t>(in.text().size());
  return tokens;
}

int64_t EmbeddingTokenEstimate(const llm::v1::EmbedRequest& request) {
  int64_t tokens = 0;
  for (const auto& in : request.inputs())
    tokens += in.has_tokens() ? in.tokens().ids_size() : (static_cast<int64_t>(in.text().size()) + 3) / 4;
  return tokens;
}

}  // namespace nexusflow::gateway::openai
