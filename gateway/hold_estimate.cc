#include "gateway/hold_estimate.h"

#include <algorithm>
#include <cmath>

#include "libs/common/image_size.h"

namespace nexusflow::gateway {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// `w` × `h` scaled down (never up) to fit `max_w` × `max_h`.
void Fit(double& w, double& h, double max_w, double max_h) {
  double scale = std::min({1.0, max_w / w, max_h / h});
  w *= scale;
  h *= scale;
}

struct Counter {
  int64_t context_window;
  int64_t tokens = 0;

  void Text(const std::string& s) { tokens += static_cast<int64_t>(s.size()); }

  void Image(const llm::v1::Image& image) {
    std::optional<ImageSize> size;
    if (image.has_inline_data()) size = SniffImageSize(image.inline_data().data());
    else if (image.has_url()) size = SniffDataUrlImageSize(image.url());
    tokens += size ? ImageTokenBound(size->width, size->height) : kUnknownMediaTokens;
  }

  void Document(const llm::v1::Document& d) {
    if (d.has_text()) {
      Text(d.text());
    } else if (d.has_inline_data() && d.inline_data().mime_type().rfind("text/", 0) == 0) {
      Text(d.inline_data().data());
    } else {
      tokens += context_window > 0 ? context_window : kUnknownMediaTokens;
    }
  }

  void Part(const llm::v1::ContentPart& p) {
    switch (p.part_case()) {
      case llm::v1::ContentPart::kText: Text(p.text()); break;
      case llm::v1::ContentPart::kImage: Image(p.image()); break;
      case llm::v1::ContentPart::kDocument: Document(p.document()); break;
      case llm::v1::ContentPart::kToolCall:
        Text(p.tool_call().name());
        Text(p.tool_call().arguments_json());
        break;
      case llm::v1::ContentPart::kToolResult:
        if (p.tool_result().parts_size() == 0) Text(p.tool_result().content());
        for (const auto& inner : p.tool_result().parts()) Part(inner);
        break;
      case llm::v1::ContentPart::kThinking:
        Text(p.thinking().text());
        Text(p.thinking().redacted_data());
        break;
      default: break;
    }
  }
};

}  // namespace

int64_t ImageTokenBound(int64_t width, int64_t height) {
  if (width <= 0 || height <= 0) return kUnknownMediaTokens;
  // OpenAI, high detail.
  double w = static_cast<double>(width), h = static_cast<double>(height);
  Fit(w, h, 2048, 2048);
  double shortest = std::min(w, h);
  if (shortest > 768) {
    w *= 768 / shortest;
    h *= 768 / shortest;
  }
  int64_t openai = 85 + 170 * CeilDiv(static_cast<int64_t>(std::ceil(w)), 512) *
                             CeilDiv(static_cast<int64_t>(std::ceil(h)), 512);
  // Anthropic: long edge at most 1568 pixels, about 1,600 tokens at most.
  double aw = static_cast<double>(width), ah = static_cast<double>(height);
  Fit(aw, ah, 1568, 1568);
  int64_t anthropic = std::min<int64_t>(1600, static_cast<int64_t>(std::ceil(aw * ah / 750)));
  // Gemini: 258 a tile of 768 pixels (one tile when both sides are at most 384).
  int64_t gemini = 258 * CeilDiv(width, 768) * CeilDiv(height, 768);
  return std::max({openai, anthropic, gemini});
}

int64_t PromptTokenBound(const llm::v1::ChatRequest& request, int64_t context_window) {
  Counter c{context_window};
  for (const auto& m : request.messages()) {
    c.tokens += kMessageFramingTokens;
    c.Text(m.name());
    for (const auto& p : m.parts()) c.Part(p);
  }
  for (const auto& t : request.tools()) {
    c.tokens += kMessageFramingTokens;
    c.Text(t.name());
    c.Text(t.description());
    c.Text(t.parameters_json());
    c.Text(t.native_json());
  }
  if (context_window > 0) return std::min(c.tokens, context_window);
  return c.tokens;
}

int64_t OutputTokenBound(const llm::v1::ChatRequest& request, int64_t max_output) {
  int64_t bound = max_output;
  if (request.thinking().enabled()) bound += request.thinking().budget_tokens();
  return bound;
}

}  // namespace nexusflow::gateway
