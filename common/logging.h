// Logging setup for shoal processes: spdlog, as human text or as JSON lines (one object per line).
// Code logs with spdlog directly (spdlog::info("...{}", x)); this file only configures the sinks.
#pragma once

#include <string>

#include "common/status.h"

namespace shoal {

enum class LogFormat { kText, kJson };

struct LogOptions {
  std::string process_name = "shoal";  // appears in every line
  LogFormat format = LogFormat::kText;
  std::string level = "info";           // trace|debug|info|warn|error|off
  std::string file;                     // empty: stderr
};

// Installs the default logger. Safe to call more than once (the last call wins).
Status InitLogging(const LogOptions& options);

// Parses "text" / "json".
Result<LogFormat> ParseLogFormat(const std::string& s);

// Escapes a string for inclusion inside a JSON string literal.
std::string JsonEscape(std::string_view s);

}  // namespace shoal
