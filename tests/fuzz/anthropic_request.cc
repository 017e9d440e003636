// A hostile /v1/messages body (with the headers a real SDK sends): parsed, and when
// accepted, sent upstream in every protocol.
#include <map>

#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace nexusflow;
  static const std::map<std::string, std::string> kHeaders = {
      {"anthropic-version", "2023-06-01"},
      {"anthropic-beta", "prompt-caching-2024-07-31,extended-cache-ttl-2025-04-11"}};
  gateway::anthropic::ParsedMessages parsed;
  HttpError error;
  if (gateway::anthropic::ParseMessagesRequest(fuzz::AsText(data, size), kHeaders,
                                               /*default_max_tokens=*/4096, &parsed, &error))
    fuzz::BuildUpstreamBodies(parsed.request);
  return 0;
}
