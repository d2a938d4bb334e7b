#pragma once
// The daemon's log output. On a terminal: coloured, with timestamps. Under journald
// (systemd sets JOURNAL_STREAM to stderr's device:inode): no timestamps of our own (the
// journal keeps its own) and an sd-daemon priority prefix ("<4>") on every line, so that
// `journalctl -p warning` filters. Elsewhere (a file, a pipe): plain text with timestamps.
#include <sys/types.h>

#include <memory>
#include <string>

#include <spdlog/formatter.h>

namespace coap2mqtt::gateway {

// The syslog priority (0 emerg … 7 debug) of a log level.
int syslogPriority(spdlog::level::level_enum level);

// True when `journal_stream` ("<device>:<inode>", JOURNAL_STREAM's format) names the file
// whose stat() gave `dev` and `ino`: our stderr is still the journal's stream, not
// something a child inherited the variable through.
bool isJournalStream(const char* journal_stream, dev_t dev, ino_t ino);

// "<N>message" for each line of the message (journald reads a prefix per line).
std::unique_ptr<spdlog::formatter> journalFormatter();

// Sets up the default logger on stderr at `level` (trace|debug|info|warn|error|critical|off).
void setupLogging(const std::string& level);

}  // namespace coap2mqtt::gateway
