// A hostile upstream answer from an OpenAI-compatible provider: the input is the response body,
// decoded as an SSE stream (through SseParser) and as one whole body, each time by a fresh
// OpenAiDecoder; the events it made are then rendered in every public protocol.
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nexusflow::fuzz::FuzzUpstream<nexusflow::connector::OpenAiDecoder>(
      nexusflow::fuzz::AsText(data, size));
  return 0;
}
