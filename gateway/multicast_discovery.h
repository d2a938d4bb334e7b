#pragma once
// Multicast GET /.well-known/core (RFC 7252 §8, RFC 6690 §4) on our own UDP sockets.
// Only *who answers* and what they said is learned here; each device is then talked to
// over its own unicast libcoap session. This sidesteps libcoap 4.3.1's multicast session,
// whose remote address is overwritten by the last responder (libcoap#1096).
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gateway/event_loop.h"

namespace coap2mqtt::gateway {

struct DiscoveryAnswer {
  std::string host;  // numeric address, IPv6 with %scope when link-local
  std::uint16_t port = 5683;
  std::string uri;  // coap://host:port, IPv6 in brackets
  std::string payload;
  bool complete = true;  // false when the answer was the first of several Block2 blocks
  std::optional<unsigned> content_format;
};

struct DiscoveryStats {
  std::uint64_t rounds = 0;
  std::uint64_t answers = 0;
  std::uint64_t duplicates = 0;  // same (source, MID) seen again in a round
  std::uint64_t malformed = 0;   // datagrams that are not a CoAP response to us
  std::uint64_t over_limit = 0;  // answers beyond a round's bound (setMaxAnswers), ignored
};

class MulticastDiscovery {
 public:
  struct Target {
    std::string group;      // "224.0.1.187", "ff02::fd", "ff05::fd"
    std::string interface;  // name; empty = the kernel's choice (IPv4 only)
  };
  using AnswerHandler = std::function<void(const DiscoveryAnswer&)>;
  using DoneHandler = std::function<void(std::size_t answers)>;

  MulticastDiscovery(EventLoop& loop, std::uint16_t port = 5683);
  ~MulticastDiscovery();
  MulticastDiscovery(const MulticastDiscovery&) = delete;
  MulticastDiscovery& operator=(const MulticastDiscovery&) = delete;

  // Sends one NON request to every target and collects answers for `window`. `query` is
  // an optional Uri-Query such as "rt=temperature". Returns false (and logs) when no
  // target could be sent to. A round still running is finished first.
  bool start(const std::vector<Target>& targets, std::chrono::milliseconds window,
             const std::string& query, AnswerHandler on_answer, DoneHandler on_done);
  bool running() const { return round_.has_value(); }
  // A round takes at most `n` answers (distinct sources); the rest are counted and ignored,
  // so a flood of answers costs neither memory nor devices.
  void setMaxAnswers(std::size_t n) { max_answers_ = n; }
  const DiscoveryStats& stats() const { return stats_; }

 private:
  struct Round {
    std::uint8_t token[8];
    std::uint16_t mid = 0;
    std::set<std::pair<std::string, std::uint16_t>> seen;  // (source, MID)
    std::size_t answers = 0;
    AnswerHandler on_answer;
    DoneHandler on_done;
    EventLoop::TimerId timer = 0;
  };

  void onReadable(int fd);
  void finish();

  EventLoop& loop_;
  std::uint16_t port_;
  int fd4_ = -1;
  int fd6_ = -1;
  std::uint16_t next_mid_;
  std::optional<Round> round_;
  std::size_t max_answers_ = 100000;
  DiscoveryStats stats_;
  std::chrono::steady_clock::time_point over_limit_logged_{};
};

// The parts of a CoAP datagram discovery needs (RFC 7252 §3). nullopt when malformed.
struct CoapDatagram {
  std::uint8_t type = 0;  // 0 CON, 1 NON, 2 ACK, 3 RST
  std::uint8_t code = 0;  // raw: class << 5 | detail
  std::uint16_t mid = 0;
  std::string token;
  std::optional<unsigned> content_format;
  bool block2_more = false;
  std::string payload;
};
std::optional<CoapDatagram> decodeCoapDatagram(std::string_view bytes);

// Encodes a NON GET /.well-known/core[?query] with the given MID and 8-byte token.
std::string encodeDiscoveryRequest(std::uint16_t mid, const std::uint8_t* token,
                                   const std::string& query);

}  // namespace coap2mqtt::gateway
