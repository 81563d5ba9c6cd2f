// `shoal up` / `shoal down`: a whole local cluster (one coordinator + N CPU workers) as background processes,
// with its state, logs and process table under one directory (./.shoal by default):
//   .shoal/state/      the coordinator's --state-dir (RocksDB, token, address)
//   .shoal/logs/       coordinator.log, worker-<i>.log
//   .shoal/cluster.json  {"coordinator": {"pid", "address"}, "workers": [{"name", "pid"}]}
#pragma once

#include <string>

#include "common/status.h"
#include "tools/cli/client.h"

namespace shoal::cli {

struct UpOptions {
  int workers = 2;
  int threads_per_worker = 0;    // 0: cores / workers, at least 1
  std::string listen = "127.0.0.1:0";
  std::string http;              // optional metrics endpoint
  int wait_ms = 30000;           // for every worker to show ALIVE
  std::string worker_device = "cpu";
};

Status Up(const GlobalOptions& global, const UpOptions& options);
// Stops the local cluster's processes (workers first). `purge` also deletes its state.
Status Down(const GlobalOptions& global, bool purge);

// The directory holding this executable (to find shoal-coordinator and shoal-worker beside it).
std::string SelfDir();

}  // namespace shoal::cli
