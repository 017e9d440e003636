#include "services/provider-connector/upstream_codec.h"

#include "services/provider-connector/anthropic_upstream.h"
#include "services/provider-connector/gemini_upstream.h"
#include "services/provider-connector/openai_upstream.h"

namespace nexusflow::connector {

const UpstreamCodec* CodecForKind(std::string_view kind) {
  if (kind == "openai") return &OpenAiCodec();
  if (kind == "anthropic") return &AnthropicCodec();
  if (kind == "gemini") return &GeminiCodec();
  return nullptr;
}

const std::vector<std::string>& CodecKinds() {
  static const std::vector<std::string> kinds = {"openai", "anthropic", "gemini"};
  return kinds;
}

}  // namespace nexusflow::connector
