// Rendering coordinator replies for people (tables in familiar shapes) and for programs (--json, documented in
// the README: stable keys, snake_case).
#pragma once

#include <string>

#include "protocol/shoal.capnp.h"

namespace shoal::cli {

std::string WorkersJson(proto::ListWorkersReply::Reader reply);
std::string WorkersTable(proto::ListWorkersReply::Reader reply);
std::string JobsJson(proto::ListJobsReply::Reader reply);
std::string JobsTable(proto::ListJobsReply::Reader reply);
std::string StatusJson(proto::JobStatusReply::Reader reply);
std::string StatusText(proto::JobStatusReply::Reader reply);

std::string CheckpointsJson(proto::ListCheckpointsReply::Reader reply);
std::string CheckpointsTable(proto::ListCheckpointsReply::Reader reply);

// "3.2s", "4m10s", "2h05m", "3d"
std::string Ago(int64_t then_ms, int64_t now_ms);

}  // namespace shoal::cli
