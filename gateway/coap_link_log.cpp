// libcoap's log, into ours: levels mapped, warnings limited per kind, and the one thing
// libcoap 4.3.1 reports only in its log (a datagram discarded as malformed) counted.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

#include <spdlog/spdlog.h>

#include "gateway/coap_link_internal.h"
#include "gateway/repeated_failure.h"

namespace coap2mqtt::gateway {

namespace {

// Datagrams libcoap threw away as malformed: any host can send them, so they are counted
// (bridge/info dropped.malformed_coap) and their log lines limited. libcoap 4.3.1 says so
// only in a log line, "discard malformed PDU", once per datagram.
std::atomic<std::uint64_t> g_malformed{0};

// libcoap's warnings, at most one line per kind per interval with the count it stands for:
// 100,000 junk datagrams must not become 100,000 log lines. The kind is the text up to its
// first digit ("offset 12 option 3 has bad length" and "offset 9 ..." are one kind).
class LibcoapLogLimiter {
 public:
  // True when `text` is to be logged now; *suppressed: lines of its kind left out since.
  bool admit(std::string_view text, std::uint64_t* suppressed) {
    const std::string kind(text.substr(0, std::min(text.find_first_of("0123456789"), kMaxKind)));
    const auto now = RepeatedFailure::Clock::now();
    std::lock_guard<std::mutex> lock(mutex_);
    if (kinds_.size() >= kMaxKinds && kinds_.count(kind) == 0) kinds_.clear();
    RepeatedFailure& limiter = kinds_.try_emplace(kind).first->second;
    if (!limiter.failed(now)) return false;
    *suppressed = limiter.unreported() - 1;
    limiter.reported();
    return true;
  }

 private:
  static constexpr std::size_t kMaxKind = 48;
  static constexpr std::size_t kMaxKinds = 128;  // bounded, whatever libcoap says
  std::mutex mutex_;  // libcoap logs on the loop thread; a log line costs a lock anyway
  std::map<std::string, RepeatedFailure> kinds_;
};

LibcoapLogLimiter g_log_limiter;

// The last line of libcoap's that tells why a (D)TLS session failed (OpenSSL's alerts and
// errors as libcoap 4.3.1 logs them), for the one line CoapLink writes about the failure.
std::mutex g_tls_mutex;
std::string g_tls_reason;

// Whether `text` was such a line (CoapLink then says it, naming the device).
bool noteTlsReason(std::string_view text) {
  const bool tls =
      text.find("alert") != std::string_view::npos || text.find("SSL") != std::string_view::npos ||
      text.find("DTLS") != std::string_view::npos || text.find("dtls") != std::string_view::npos;
  if (!tls) return false;
  // Without libcoap's session prefix ("127.0.0.1:36763 <-> 127.0.0.1:5684 DTLS: "): the
  // local port changes with every session, the reason does not.
  if (const auto at = text.find("DTLS: "); at != std::string_view::npos) {
    text.remove_prefix(at + 6);
  }
  std::lock_guard<std::mutex> lock(g_tls_mutex);
  g_tls_reason.assign(text.substr(0, 200));
  return true;
}

}  // namespace

std::string takeLibcoapTlsReason() {
  std::lock_guard<std::mutex> lock(g_tls_mutex);
  return std::exchange(g_tls_reason, {});
}

void libcoapLogHandler(coap_log_t level, const char* message) noexcept {
  try {
    std::string_view text(message);
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.remove_suffix(1);
    if (text.rfind("discard malformed PDU", 0) == 0) g_malformed.fetch_add(1);
    // A TLS failure CoapLink reports itself, once per device and reason: here a debug line.
    const bool tls_reason = level <= LOG_WARNING && noteTlsReason(text);
    spdlog::level::level_enum mapped = spdlog::level::debug;
    // An RST answering our CoAP ping is the expected pong, not an alert.
    if (text.rfind("got RST for mid", 0) == 0 || tls_reason) {
      mapped = spdlog::level::debug;
    } else if (level <= LOG_ERR) {
      mapped = spdlog::level::err;
    } else if (level == LOG_WARNING) {
      mapped = spdlog::level::warn;
    }
    if (mapped < spdlog::level::warn) {
      spdlog::log(mapped, "libcoap: {}", text);
      return;
    }
    std::uint64_t suppressed = 0;
    if (!g_log_limiter.admit(text, &suppressed)) return;
    if (suppressed == 0) {
      spdlog::log(mapped, "libcoap: {}", text);
    } else {
      spdlog::log(
          mapped, "libcoap: {} (and {} more like it in the last {} s)", text, suppressed,
          std::chrono::duration_cast<std::chrono::seconds>(RepeatedFailure::kLogInterval).count());
    }
  } catch (...) {
    // A log line is not worth an exception in libcoap.
  }
}

std::uint64_t libcoapMalformedCount() {
  return g_malformed.load();
}

}  // namespace coap2mqtt::gateway
