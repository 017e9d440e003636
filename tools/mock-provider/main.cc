// nexusflow-mock-provider: a fake upstream speaking OpenAI chat, Anthropic Messages,
// Gemini generateContent and DashScope's async media tasks, for tests and load benchmarks.
//
// Tour:
//   main.cc    flags → MockOptions, then RunMockProvider.
//   server.cc  Boost.Beast over Asio coroutines: one io_context per thread, an accept loop
//              handing connections round-robin to them, HTTP/1.1 keep-alive, the route
//              table, each protocol's key check, delays on steady_timers, stream writing
//              (with a read kept pending during a stream's waits, to notice a client
//              leaving), and the 413/400/401/404 edges.
//   reply.cc   the protocol-neutral core: the canonical prompt (seed, token counts, cache
//              prefixes), `[mock:...]` markers, reply words, thinking, forced tool calls
//              built from the tool's JSON schema, stop sequences, the error-kind table.
//   chat.cc, anthropic.cc, gemini.cc  each protocol's request parsing and validation into
//              the core, and its JSON / stream serialisation of the answer.
//   prompt_cache.cc  process-wide set of cached prefixes (write the first time, read after).
//   stream_stats.cc  process-wide stream counters served at GET /mock/stats.
//   dashscope.cc     DashScope async image/video tasks: submit, poll, cancel, result files.
// The answer depends only on the request's meaning, so a streamed answer concatenates to
// exactly the non-streamed one, and the three protocols asking the same give the same text.

#include <charconv>
#include <iostream>
#include <string>
#include <string_view>

#include "server.h"

namespace {

void PrintUsage(std::ostream& out) {
  out << "usage: nexusflow-mock-provider [--name=value ...]\n"
         "  --host=127.0.0.1       address to listen on\n"
         "  --port=9100            port to listen on (0: pick a free one)\n"
         "  --threads=2            event-loop threads\n"
         "  --latency-ms=0         delay before a non-streaming answer\n"
         "  --ttft-ms=0            delay before the first streamed chunk\n"
         "  --chunk-delay-ms=0     delay before each further streamed content chunk\n"
         "  --reply-words=16       words in a reply\n"
         "  --api-key=             when set, /v1/*, /v1beta/* and /api/v1/* require this key\n"
         "  --idle-timeout-s=300   close keep-alive connections idle this long\n"
         "  --gemini-cache-min-tokens=1024  systemInstruction size Gemini caches implicitly\n"
         "  --task-seconds=3       how long a DashScope image/video task runs\n"
         "  --task-fail-percent=0  share of DashScope tasks that end FAILED\n";
}

bool ParseInt(std::string_view text, int min, int max, int& out) {
  int value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < min || value > max) {
    return false;
  }
  out = value;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  nexusflow::mock::MockOptions options;
  int port = options.port;
  struct IntFlag {
    std::string_view name;
    int* target;
    int min;
    int max;
  };
  const IntFlag int_flags[] = {
      {"port", &port, 0, 65535},
      {"threads", &options.threads, 1, 256},
      {"latency-ms", &options.latency_ms, 0, 3600 * 1000},
      {"ttft-ms", &options.ttft_ms, 0, 3600 * 1000},
      {"chunk-delay-ms", &options.chunk_delay_ms, 0, 3600 * 1000},
      {"reply-words", &options.reply_words, 0, 1000000},
      {"idle-timeout-s", &options.idle_timeout_s, 1, 86400},
      {"gemini-cache-min-tokens", &options.gemini_cache_min_tokens, 1, 100000000},
      {"task-seconds", &options.task_seconds, 0, 86400},
      {"task-fail-percent", &options.task_fail_percent, 0, 100},
  };

  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      PrintUsage(std::cout);
      return 0;
    }
    const std::size_t eq = arg.find('=');
    if (!arg.starts_with("--") || eq == std::string_view::npos) {
      std::cerr << "mock-provider: expected --name=value, got '" << arg << "'\n";
      PrintUsage(std::cerr);
      return 2;
    }
    const std::string_view name = arg.substr(2, eq - 2);
    const std::string_view value = arg.substr(eq + 1);
    if (name == "host") {
      options.host = value;
      continue;
    }
    if (name == "api-key") {
      options.api_key = value;
      continue;
    }
    bool known = false;
    for (const IntFlag& flag : int_flags) {
      if (flag.name != name) continue;
      known = true;
      if (!ParseInt(value, flag.min, flag.max, *flag.target)) {
        std::cerr << "mock-provider: --" << name << " needs an integer in [" << flag.min << ", "
                  << flag.max << "], got '" << value << "'\n";
        return 2;
      }
    }
    if (!known) {
      std::cerr << "mock-provider: unknown flag --" << name << '\n';
      PrintUsage(std::cerr);
      return 2;
    }
  }
  options.port = static_cast<std::uint16_t>(port);
  return nexusflow::mock::RunMockProvider(options);
}
