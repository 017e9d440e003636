// A hostile generateContent / streamGenerateContent / countTokens body: parsed, and when
// accepted, sent upstream in every protocol.
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace nexusflow;
  std::string_view body = fuzz::AsText(data, size);
  for (bool stream : {false, true}) {
    gateway::gemini::ParsedGenerate parsed;
    HttpError error;
    if (gateway::gemini::ParseGenerateContentRequest(body, "models/gemini-2.5-flash", stream,
                                                     &parsed, &error))
      fuzz::BuildUpstreamBodies(parsed.request);
  }
  gateway::gemini::ParsedGenerate counted;
  HttpError error;
  (void)gateway::gemini::ParseCountTokensRequest(body, "gemini-2.5-flash", &counted, &error);
  return 0;
}
