#include "services/provider-connector/upstream_codec.h"

#include "services/provider-connector/openai_upstream.h"

namespace nexusflow::connector {

const UpstreamCodec* CodecForKind(std::string_view kind) {
  if (kind == "openai") return &OpenAiCodec();
  return nullptr;
}

const std::vector<std::string>& CodecKinds() {
  static const std::vector<std::string> kinds = {"openai"};
  return kinds;
}

}  // namespace nexusflow::connector
