#include "embeddings.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include <boost/json.hpp>

namespace nexusflow::mock {
namespace {

namespace json = boost::json;

RequestError Invalid(std::string message, std::string param = "input") {
  return RequestError{400, std::move(message), std::move(param), {}};
}

// One input: its identity for the seed (the text, or the token ids) and its token count.
struct Input {
  std::string key;
  std::int64_t tokens = 0;
};

std::vector<float> UnitVector(std::string_view model, const Input& input, int dimensions) {
  std::uint64_t state = Fnv1a(Fnv1a(0xcbf29ce484222325ULL, model), input.key);
  std::vector<float> v(static_cast<std::size_t>(dimensions));
  double norm = 0;
  for (float& x : v) {
    x = static_cast<float>(static_cast<double>(SplitMix64(state) >> 11) / 9007199254740992.0 * 2 - 1);
    norm += static_cast<double>(x) * x;
  }
  norm = std::sqrt(norm);
  for (float& x : v) x = static_cast<float>(x / norm);
  return v;
}

std::string Base64(const std::string& bytes) {
  static const char* abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    std::uint32_t n = (static_cast<std::uint8_t>(bytes[i]) << 16) | (static_cast<std::uint8_t>(bytes[i + 1]) << 8) |
                      static_cast<std::uint8_t>(bytes[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out.push_back(abc[(n >> s) & 63]);
  }
  if (i < bytes.size()) {
    std::uint32_t n = static_cast<std::uint8_t>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) n |= static_cast<std::uint8_t>(bytes[i + 1]) << 8;
    out.push_back(abc[(n >> 18) & 63]);
    out.push_back(abc[(n >> 12) & 63]);
    out.push_back(i + 1 < bytes.size() ? abc[(n >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

std::optional<RequestError> TokenArray(const json::array& ids, std::vector<Input>& out) {
  Input in;
  for (const json::value& id : ids) {
    if (!id.is_int64() && !id.is_uint64()) return Invalid("'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.");
    in.key += std::to_string(id.to_number<std::int64_t>()) + ",";
    ++in.tokens;
  }
  if (in.tokens == 0) return Invalid("'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.");
  out.push_back(std::move(in));
  return std::nullopt;
}

}  // namespace

std::variant<std::string, RequestError> EmbeddingsBody(std::string_view body) {
  boost::system::error_code ec;
  json::value root = json::parse(body, ec);
  if (ec || !root.is_object()) return Invalid("We could not parse the JSON body of your request.", "");
  const json::object& req = root.get_object();
  const json::value* model = req.if_contains("model");
  if (!model || !model->is_string() || model->get_string().empty())
    return Invalid("you must provide a model parameter", "model");
  const json::value* input = req.if_contains("input");
  if (!input) return Invalid("'input' is a required property");
  const std::string bad_input =
      "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.";
  std::vector<Input> inputs;
  if (input->is_string()) {
    if (input->get_string().empty()) return Invalid(bad_input);
    inputs.push_back({std::string(input->get_string()), CountTextTokens(input->get_string())});
  } else if (input->is_array()) {
    const json::array& items = input->get_array();
    if (items.empty()) return Invalid(bad_input);
    if (items.front().is_string()) {
      for (const json::value& item : items) {
        if (!item.is_string() || item.get_string().empty()) return Invalid(bad_input);
        inputs.push_back({std::string(item.get_string()), CountTextTokens(item.get_string())});
      }
    } else if (items.front().is_array()) {
      for (const json::value& item : items) {
        if (!item.is_array()) return Invalid(bad_input);
        if (auto error = TokenArray(item.get_array(), inputs)) return *error;
      }
    } else if (auto error = TokenArray(items, inputs)) {
      return *error;
    }
  } else {
    return Invalid(bad_input);
  }
  if (inputs.size() > static_cast<std::size_t>(kEmbeddingMaxInputs))
    return Invalid("'$.input' is invalid: at most " + std::to_string(kEmbeddingMaxInputs) + " inputs per request.");
  std::int64_t total = 0;
  for (const Input& in : inputs) {
    if (in.tokens > kEmbeddingMaxInputTokens)
      return Invalid("This model's maximum context length is " + std::to_string(kEmbeddingMaxInputTokens) +
                     " tokens, however you requested " + std::to_string(in.tokens) + " tokens in the input.");
    total += in.tokens;
  }
  int dimensions = kEmbeddingDefaultDimensions;
  if (const json::value* d = req.if_contains("dimensions"); d && !d->is_null()) {
    if (!d->is_int64() || d->get_int64() < 1 || d->get_int64() > kEmbeddingMaxDimensions)
      return Invalid("Invalid 'dimensions': an integer from 1 to " + std::to_string(kEmbeddingMaxDimensions) + ".",
                     "dimensions");
    dimensions = static_cast<int>(d->get_int64());
  }
  bool base64 = false;
  if (const json::value* f = req.if_contains("encoding_format"); f && !f->is_null()) {
    if (!f->is_string() || (f->get_string() != "float" && f->get_string() != "base64"))
      return Invalid("Invalid 'encoding_format': 'float' or 'base64'.", "encoding_format");
    base64 = f->get_string() == "base64";
  }
  json::array data;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    std::vector<float> v = UnitVector(model->get_string(), inputs[i], dimensions);
    json::object item{{"object", "embedding"}, {"index", i}};
    if (base64) {
      std::string bytes(v.size() * sizeof(float), '\0');
      std::memcpy(bytes.data(), v.data(), bytes.size());  // little-endian, as OpenAI sends
      item["embedding"] = Base64(bytes);
    } else {
      json::array values;
      values.reserve(v.size());
      for (float x : v) values.push_back(static_cast<double>(x));
      item["embedding"] = std::move(values);
    }
    data.push_back(std::move(item));
  }
  json::object out{{"object", "list"},
                   {"data", std::move(data)},
                   {"model", model->get_string()},
                   {"usage", json::object{{"prompt_tokens", total}, {"total_tokens", total}}}};
  return json::serialize(out);
}

}  // namespace nexusflow::mock
