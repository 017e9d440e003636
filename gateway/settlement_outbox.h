#pragma once
// The gateway's durable record of what it owes the ledger. A streamed answer writes an
// entry before the first byte of its output text goes to the client (`started`:
// everything needed to settle, the prompt estimate and an output allowance that stays
// ahead of what was sent), raises the allowance as it streams, and turns it `final` with
// the real usage when it settles; a settled entry is deleted. A non-streamed answer is
// sent only after its settlement, so it is written only when billing does not acknowledge
// it. Whatever is left — a settlement billing did not acknowledge, or a stream the
// gateway was killed in the middle of — is settled from here: at once after a restart,
// then with per-entry exponential backoff and jitter, so an entry that keeps failing never
// holds up the others. An entry billing can never accept is set aside in a dead-letter
// table. The ledger settles a request id once, so a replay after a crash charges nothing
// twice.
//
// One SQLite file per gateway instance (WAL, taken with an exclusive lock: a second
// process cannot open it). All SQLite work and every fsync runs on the outbox's own
// thread, which commits whatever is queued in one transaction; an awaiting coroutine
// resumes on its own executor once its write is committed. Commits on the request path
// (`started`, progress, `final`, deletes) are written to the WAL without an fsync: they
// survive a killed process, not a power loss. A settlement billing did not acknowledge,
// a dead letter and the checkpoints are fsynced (synchronous=FULL).
#include <grpcpp/support/status.h>

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gateway/chat_answer.h"
#include "nexusflow/billing/v1/billing.pb.h"

namespace nexusflow {
class SqliteDb;
}

namespace nexusflow::gateway {

// How long an entry waits before its next attempt after `failures` failed ones (1, 2, …):
// `first` doubling each time up to `max`, then scaled by a factor in [0.5, 1) drawn from
// `unit` (uniform in [0, 1)), so entries that failed together spread out.
std::chrono::milliseconds RetryDelay(int failures, std::chrono::milliseconds first,
                                     std::chrono::milliseconds max, double unit);

// A status billing answers to a request that will never succeed as it is.
bool IsPoisonSettlement(grpc::StatusCode code);

// A status that says billing was not reached (down, or no answer in time): such a failure
// never counts toward `max_attempts`, so an outage delays charges but never drops one.
bool IsUnreachable(grpc::StatusCode code);

// Output tokens charged for a request the gateway died in the middle of: one token per
// byte of output text the client may have received (no token is shorter than a byte of
// UTF-8), at most the request's output limit (0 = none).
int64_t OutputTokensOfAllowance(int64_t allowance_bytes, int64_t max_output_tokens);

// The allowance a stream records before sending output that brings what it sent to
// `sent_bytes` of text: the next multiple of `step` at or above it.
int64_t NextOutputAllowance(int64_t sent_bytes, int64_t step);

// Bytes of output text in an answer so far: text, reasoning, tool names and arguments.
int64_t OutputTextBytes(const ChatAnswer& answer);

// A stream raises its recorded allowance in steps of this many bytes of output text.
inline constexpr int64_t kOutputAllowanceStep = 16 << 10;

class SettlementOutbox {
 public:
  struct Options {
    std::string path;  // the SQLite file (created with its directory)
    // Attempts billing answered with an error before the entry is set aside (failures
    // while billing is unreachable do not count).
    int max_attempts = 50;
    std::chrono::milliseconds first_retry{500};
    std::chrono::milliseconds max_retry{60000};
    int max_in_flight = 64;  // settlements the outbox has out at once
  };
  // Sends one settlement to billing and calls `done` with the answer, on any thread.
  using Settler = std::function<void(const billing::v1::SettleRequest&,
                                     std::function<void(const grpc::Status&)> done)>;

  // Opens the file, turns the entries a previous process left into settlements (a
  // `started` one on its prompt estimate and output allowance) and starts settling them.
  static absl::StatusOr<std::unique_ptr<SettlementOutbox>> Open(Options options, Settler settler);
  // Commits what is queued and waits for the settlements out to answer (each has its own
  // deadline); what is not settled stays in the file for the next start.
  ~SettlementOutbox();

  // Awaitable writes: each resumes the calling coroutine on its executor once committed.
  // `tmpl` is the SettleRequest without usage.
  boost::asio::awaitable<absl::Status> RecordStarted(const billing::v1::SettleRequest& tmpl,
                                                     int64_t input_estimate,
                                                     int64_t max_output_tokens,
                                                     int64_t output_allowance);
  boost::asio::awaitable<absl::Status> RecordProgress(const std::string& request_id,
                                                      int64_t output_allowance);

  // Not awaited; written in call order with the other writes. The usage is known: the
  // entry becomes `final` with the real SettleRequest (until then a crash settles the
  // `started` entry, an upper bound, and the ledger keeps whichever settlement of the
  // request id came first).
  void RecordFinal(const billing::v1::SettleRequest& req);
  // Billing committed the request's settlement: its entry goes.
  void Settled(const std::string& request_id);
  // The request path could not settle (`last` is billing's last answer): the outbox takes
  // the settlement over, written again and fsynced before this resumes, so the answer's
  // last bytes go out only once its charge would survive a power loss.
  boost::asio::awaitable<absl::Status> Retry(const billing::v1::SettleRequest& req,
                                             const grpc::Status& last);

  struct Stats {
    int64_t pending = 0;       // settlements waiting for a retry or out with billing
    int64_t recovered = 0;     // entries found at start
    int64_t settled = 0;       // retried settlements billing acknowledged
    int64_t dead_letters = 0;  // set aside since start
    int64_t write_errors = 0;  // commits that failed
  };
  Stats stats() const;
  // Waits until no settlement is pending and no write is queued; false at the timeout.
  bool WaitIdle(std::chrono::milliseconds timeout) const;

 private:
  struct Shared;
  struct Op;
  struct Schedule;
  SettlementOutbox(Options options, Settler settler, std::unique_ptr<SqliteDb> db);
  absl::Status Recover();
  void Enqueue(Op op);
  boost::asio::awaitable<absl::Status> Await(Op& op);
  void Loop();
  // Writes one batch in one transaction; the status of each op.
  void Commit(std::vector<Op>& batch);
  void Checkpoint();

  Options options_;
  Settler settler_;
  std::unique_ptr<SqliteDb> db_;
  std::shared_ptr<Shared> shared_;
  std::unique_ptr<Schedule> schedule_;  // the writer thread's own state
  std::thread thread_;
};

}  // namespace nexusflow::gateway
