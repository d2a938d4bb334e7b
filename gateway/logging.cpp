#include "gateway/logging.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string_view>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace coap2mqtt::gateway {
namespace {

class JournalFormatter : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    // "<N>", N a single digit (syslogPriority() returns 2..7). Written as three chars, not
    // built as a std::string per message: GCC 12's `"<" + std::to_string(n) + ">"` at -O3
    // also trips a -Wrestrict false positive (GCC bug 105329) that broke Release builds.
    const char prefix[3] = {'<', static_cast<char>('0' + syslogPriority(msg.level)), '>'};
    std::string_view rest(msg.payload.data(), msg.payload.size());
    // A multi-line message (a reload's error list) keeps its priority on every line.
    do {
      const auto end = rest.find('\n');
      const std::string_view line = rest.substr(0, end);
      dest.append(prefix, prefix + sizeof prefix);
      dest.append(line.data(), line.data() + line.size());
      dest.push_back('\n');
      rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
    } while (!rest.empty());
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JournalFormatter>();
  }
};

bool stderrIsJournal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  if (stream == nullptr) return false;
  struct stat st {};
  if (fstat(STDERR_FILENO, &st) != 0) return false;
  return isJournalStream(stream, st.st_dev, st.st_ino);
}

}  // namespace

int syslogPriority(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::critical:
      return 2;  // LOG_CRIT
    case spdlog::level::err:
      return 3;  // LOG_ERR
    case spdlog::level::warn:
      return 4;  // LOG_WARNING
    case spdlog::level::info:
      return 6;  // LOG_INFO
    default:
      return 7;  // LOG_DEBUG: debug and trace
  }
}

bool isJournalStream(const char* journal_stream, dev_t dev, ino_t ino) {
  if (journal_stream == nullptr) return false;
  char* end = nullptr;
  const unsigned long long d = std::strtoull(journal_stream, &end, 10);
  if (end == journal_stream || *end != ':') return false;
  const char* inode = end + 1;
  const unsigned long long i = std::strtoull(inode, &end, 10);
  if (end == inode || *end != '\0') return false;
  return d == static_cast<unsigned long long>(dev) && i == static_cast<unsigned long long>(ino);
}

std::unique_ptr<spdlog::formatter> journalFormatter() {
  return std::make_unique<JournalFormatter>();
}

void setupLogging(const std::string& level) {
  const bool terminal = isatty(STDERR_FILENO) != 0;
  auto logger =
      terminal ? spdlog::stderr_color_mt("coap2mqtt") : spdlog::stderr_logger_mt("coap2mqtt");
  spdlog::set_default_logger(logger);
  if (stderrIsJournal()) {
    spdlog::set_formatter(journalFormatter());
  } else {
    spdlog::set_pattern(terminal ? "%Y-%m-%d %H:%M:%S.%e %^%-5l%$ %v"
                                 : "%Y-%m-%d %H:%M:%S.%e %-5l %v");
  }
  spdlog::set_level(spdlog::level::from_str(level));
  spdlog::flush_on(spdlog::level::info);
}

}  // namespace coap2mqtt::gateway
