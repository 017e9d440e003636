// The mock provider's HTTP side: listening, keep-alive, routing, delays and streaming.
#pragma once

#include <cstdint>
#include <string>

namespace nexusflow::mock {

struct MockOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 9100;  // 0 → an ephemeral port, printed in the listening line
  int threads = 2;
  int latency_ms = 0;      // before a non-streaming answer
  int ttft_ms = 0;         // before the first streamed chunk
  int chunk_delay_ms = 0;  // before each further content chunk
  int reply_words = 16;
  std::string api_key;        // non-empty → /v1/* requires `Authorization: Bearer <api_key>`
  int idle_timeout_s = 300;   // a keep-alive connection idle this long is closed
};

// Serves until SIGINT or SIGTERM; returns the process exit code.
int RunMockProvider(const MockOptions& options);

}  // namespace nexusflow::mock
