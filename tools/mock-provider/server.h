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
  // Non-empty → /v1/*, /v1beta/* and /api/v1/* need this key, sent the way each protocol
  // sends it (Bearer; x-api-key or Bearer; x-goog-api-key or ?key=; DashScope Bearer).
  std::string api_key;
  int idle_timeout_s = 300;   // a keep-alive connection idle this long is closed
  // Gemini implicit caching: a systemInstruction of at least this many tokens is cached.
  int gemini_cache_min_tokens = 1024;
  // DashScope async media: how long a task runs, and the share of tasks that fail.
  int task_seconds = 3;
  int task_fail_percent = 0;
};

// Serves until SIGINT or SIGTERM; returns the process exit code.
int RunMockProvider(const MockOptions& options);

}  // namespace nexusflow::mock
