#pragma once
// `nexusflow ledger …`: offline commands on a billing ledger.
//   nexusflow ledger verify [--config=FILE | --database=URL|PATH]
// checks the ledger's invariants (LedgerStore::Verify), prints each violation and exits
// 0 when there is none, 1 when there is any, 2 when the ledger cannot be read.
namespace nexusflow {

// `argv[0]` is "ledger".
int RunLedgerCommand(int argc, char** argv);

}  // namespace nexusflow
