// A hostile /v1/chat/completions body: parsed, and when accepted, sent upstream in every
// protocol.
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace nexusflow;
  gateway::openai::ParsedChat parsed;
  HttpError error;
  if (gateway::openai::ParseChatRequest(fuzz::AsText(data, size), &parsed, &error))
    fuzz::BuildUpstreamBodies(parsed.request);
  return 0;
}
