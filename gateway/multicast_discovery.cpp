#include "gateway/multicast_discovery.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include <spdlog/spdlog.h>

namespace coap2mqtt::gateway {
namespace {

constexpr std::uint16_t kOptionUriPath = 11;
constexpr std::uint16_t kOptionContentFormat = 12;
constexpr std::uint16_t kOptionUriQuery = 15;
constexpr std::uint16_t kOptionBlock2 = 23;
constexpr std::uint8_t kCodeContent = (2 << 5) | 5;

void appendOption(std::string& out, std::uint16_t& last, std::uint16_t number,
                  std::string_view value) {
  auto nibble = [](std::size_t v, std::string& ext) -> std::uint8_t {
    if (v < 13) return static_cast<std::uint8_t>(v);
    if (v < 269) {
      ext.push_back(static_cast<char>(v - 13));
      return 13;
    }
    ext.push_back(static_cast<char>((v - 269) >> 8));
    ext.push_back(static_cast<char>((v - 269) & 0xff));
    return 14;
  };
  std::string delta_ext, length_ext;
  std::uint8_t d = nibble(number - last, delta_ext);
  std::uint8_t l = nibble(value.size(), length_ext);
  out.push_back(static_cast<char>((d << 4) | l));
  out += delta_ext;
  out += length_ext;
  out.append(value);
  last = number;
}

std::string hostOf(const sockaddr_storage& from) {
  char buf[INET6_ADDRSTRLEN + IF_NAMESIZE + 2] = {};
  if (from.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&from);
    inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
    return buf;
  }
  const auto* a = reinterpret_cast<const sockaddr_in6*>(&from);
  inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
  std::string host = buf;
  char ifname[IF_NAMESIZE] = {};
  if (a->sin6_scope_id != 0 && if_indextoname(a->sin6_scope_id, ifname) != nullptr) {
    host += "%";
    host += ifname;
  }
  return host;
}

std::uint16_t portOf(const sockaddr_storage& from) {
  if (from.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in*>(&from)->sin_port);
  }
  return ntohs(reinterpret_cast<const sockaddr_in6*>(&from)->sin6_port);
}

int openSocket(int family) {
  int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  if (family == AF_INET6) {
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    // Devices on this very host (and the simulator) must hear us too.
    setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, &one, sizeof one);
    int hops = 8;  // enough for site-local ff05::fd across a few routers
    setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &hops, sizeof hops);
    sockaddr_in6 any{};
    any.sin6_family = AF_INET6;
    any.sin6_addr = in6addr_any;
    if (bind(fd, reinterpret_cast<sockaddr*>(&any), sizeof any) != 0) {
      close(fd);
      return -1;
    }
  } else {
    unsigned char loop = 1;
    setsockopt(fd, IPPROTO_IP, IP_MULTICAST_LOOP, &loop, sizeof loop);
    sockaddr_in any{};
    any.sin_family = AF_INET;
    any.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(fd, reinterpret_cast<sockaddr*>(&any), sizeof any) != 0) {
      close(fd);
      return -1;
    }
  }
  return fd;
}

}  // namespace

std::optional<CoapDatagram> decodeCoapDatagram(std::string_view bytes) {
  if (bytes.size() < 4) return std::nullopt;
  const auto* p = reinterpret_cast<const std::uint8_t*>(bytes.data());
  if ((p[0] >> 6) != 1) return std::nullopt;
  CoapDatagram d;
  d.type = (p[0] >> 4) & 0x3;
  const std::size_t tkl = p[0] & 0x0f;
  if (tkl > 8 || bytes.size() < 4 + tkl) return std::nullopt;
  d.code = p[1];
  d.mid = static_cast<std::uint16_t>((p[2] << 8) | p[3]);
  d.token.assign(bytes.data() + 4, tkl);
  std::size_t i = 4 + tkl;
  unsigned number = 0;
  while (i < bytes.size()) {
    if (p[i] == 0xff) {
      if (i + 1 == bytes.size()) return std::nullopt;  // marker without payload
      d.payload.assign(bytes.data() + i + 1, bytes.size() - i - 1);
      break;
    }
    unsigned delta = p[i] >> 4;
    unsigned length = p[i] & 0x0f;
    ++i;
    auto extend = [&](unsigned& v) -> bool {
      if (v == 13) {
        if (i + 1 > bytes.size()) return false;
        v = 13 + p[i++];
      } else if (v == 14) {
        if (i + 2 > bytes.size()) return false;
        v = 269 + ((p[i] << 8) | p[i + 1]);
        i += 2;
      } else if (v == 15) {
        return false;
      }
      return true;
    };
    if (!extend(delta) || !extend(length) || i + length > bytes.size()) return std::nullopt;
    number += delta;
    unsigned value = 0;
    for (unsigned k = 0; k < length && k < 4; ++k) value = (value << 8) | p[i + k];
    if (number == kOptionContentFormat) d.content_format = value;
    if (number == kOptionBlock2) d.block2_more = (value & 0x08) != 0;
    i += length;
  }
  return d;
}

std::string encodeDiscoveryRequest(std::uint16_t mid, const std::uint8_t* token,
                                   const std::string& query) {
  std::string out;
  out.push_back(static_cast<char>(0x40 | (1 << 4) | 8));  // ver 1, NON, TKL 8
  out.push_back(1);                                       // GET
  out.push_back(static_cast<char>(mid >> 8));
  out.push_back(static_cast<char>(mid & 0xff));
  out.append(reinterpret_cast<const char*>(token), 8);
  std::uint16_t last = 0;
  appendOption(out, last, kOptionUriPath, ".well-known");
  appendOption(out, last, kOptionUriPath, "core");
  if (!query.empty()) appendOption(out, last, kOptionUriQuery, query);
  return out;
}

MulticastDiscovery::MulticastDiscovery(EventLoop& loop, std::uint16_t port)
    : loop_(loop), port_(port), next_mid_(static_cast<std::uint16_t>(std::random_device{}())) {
  fd4_ = openSocket(AF_INET);
  fd6_ = openSocket(AF_INET6);
  if (fd4_ >= 0) loop_.watchFd(fd4_, [this] { onReadable(fd4_); });
  if (fd6_ >= 0) loop_.watchFd(fd6_, [this] { onReadable(fd6_); });
}

MulticastDiscovery::~MulticastDiscovery() {
  if (round_ && round_->timer != 0) loop_.cancel(round_->timer);
  if (fd4_ >= 0) {
    loop_.unwatchFd(fd4_);
    close(fd4_);
  }
  if (fd6_ >= 0) {
    loop_.unwatchFd(fd6_);
    close(fd6_);
  }
}

bool MulticastDiscovery::start(const std::vector<Target>& targets, std::chrono::milliseconds window,
                               const std::string& query, AnswerHandler on_answer,
                               DoneHandler on_done) {
  if (round_) finish();
  Round round;
  std::random_device random;
  for (auto& b : round.token) b = static_cast<std::uint8_t>(random());
  round.mid = next_mid_++;
  const std::string request = encodeDiscoveryRequest(round.mid, round.token, query);
  std::size_t sent = 0;
  for (const auto& target : targets) {
    unsigned ifindex = target.interface.empty() ? 0 : if_nametoindex(target.interface.c_str());
    if (!target.interface.empty() && ifindex == 0) {
      spdlog::warn("discovery: no interface '{}'", target.interface);
      continue;
    }
    int rc = -1;
    in6_addr group6{};
    in_addr group4{};
    if (inet_pton(AF_INET, target.group.c_str(), &group4) == 1 && fd4_ >= 0) {
      ip_mreqn mreq{};
      mreq.imr_ifindex = static_cast<int>(ifindex);
      setsockopt(fd4_, IPPROTO_IP, IP_MULTICAST_IF, &mreq, sizeof mreq);
      sockaddr_in to{};
      to.sin_family = AF_INET;
      to.sin_port = htons(port_);
      to.sin_addr = group4;
      rc = static_cast<int>(sendto(fd4_, request.data(), request.size(), 0,
                                   reinterpret_cast<sockaddr*>(&to), sizeof to));
    } else if (inet_pton(AF_INET6, target.group.c_str(), &group6) == 1 && fd6_ >= 0) {
      if (ifindex == 0) {
        spdlog::warn("discovery: {} needs an interface (coap.discovery.interfaces)", target.group);
        continue;
      }
      setsockopt(fd6_, IPPROTO_IPV6, IPV6_MULTICAST_IF, &ifindex, sizeof ifindex);
      sockaddr_in6 to{};
      to.sin6_family = AF_INET6;
      to.sin6_port = htons(port_);
      to.sin6_addr = group6;
      to.sin6_scope_id = ifindex;
      rc = static_cast<int>(sendto(fd6_, request.data(), request.size(), 0,
                                   reinterpret_cast<sockaddr*>(&to), sizeof to));
    } else {
      spdlog::warn("discovery: '{}' is not a multicast address", target.group);
      continue;
    }
    if (rc < 0) {
      spdlog::warn("discovery: sending to {}{}{} failed: {}", target.group,
                   target.interface.empty() ? "" : "%", target.interface, std::strerror(errno));
    } else {
      ++sent;
    }
  }
  if (sent == 0) return false;
  ++stats_.rounds;
  round.on_answer = std::move(on_answer);
  round.on_done = std::move(on_done);
  round.timer = loop_.runAfter(window, [this] {
    if (round_) round_->timer = 0;
    finish();
  });
  round_ = std::move(round);
  return true;
}

void MulticastDiscovery::finish() {
  if (!round_) return;
  Round round = std::move(*round_);
  round_.reset();
  if (round.timer != 0) loop_.cancel(round.timer);
  if (round.on_done) round.on_done(round.answers);
}

void MulticastDiscovery::onReadable(int fd) {
  char buf[1500 + 64];
  for (;;) {
    sockaddr_storage from{};
    socklen_t from_len = sizeof from;
    ssize_t n = recvfrom(fd, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &from_len);
    if (n < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        spdlog::debug("discovery: recvfrom: {}", std::strerror(errno));
      }
      return;
    }
    auto d = decodeCoapDatagram(std::string_view(buf, static_cast<std::size_t>(n)));
    if (!d || !round_ || d->token.size() != 8 ||
        std::memcmp(d->token.data(), round_->token, 8) != 0) {
      ++stats_.malformed;  // garbage, or a late answer to an earlier round
      continue;
    }
    const std::string host = hostOf(from);
    const std::uint16_t port = portOf(from);
    if (d->type == 0) {
      // A CON answer wants an ACK (RFC 7252 §4.2); NON ones (the usual case) don't.
      std::uint8_t ack[4] = {0x60, 0, static_cast<std::uint8_t>(d->mid >> 8),
                             static_cast<std::uint8_t>(d->mid & 0xff)};
      sendto(fd, ack, sizeof ack, 0, reinterpret_cast<sockaddr*>(&from), from_len);
    }
    if (round_->seen.size() >= max_answers_) {
      ++stats_.over_limit;
      const auto now = std::chrono::steady_clock::now();
      if (now - over_limit_logged_ >= std::chrono::seconds(10)) {
        over_limit_logged_ = now;
        spdlog::warn("discovery: more than {} answers in this round; ignoring the rest ({} so far)",
                     max_answers_, stats_.over_limit);
      }
      continue;
    }
    // Every device answers with the request's token, and libcoap ones even reuse its MID:
    // a duplicate is the same source sending the same MID again.
    if (!round_->seen.emplace(host + "|" + std::to_string(port), d->mid).second) {
      ++stats_.duplicates;
      continue;
    }
    if (d->code != kCodeContent) continue;
    ++stats_.answers;
    ++round_->answers;
    DiscoveryAnswer answer;
    answer.host = host;
    answer.port = port;
    answer.uri = from.ss_family == AF_INET6 ? "coap://[" + host + "]:" + std::to_string(port)
                                            : "coap://" + host + ":" + std::to_string(port);
    answer.payload = std::move(d->payload);
    answer.complete = !d->block2_more;
    answer.content_format = d->content_format;
    if (round_->on_answer) round_->on_answer(answer);
  }
}

}  // namespace coap2mqtt::gateway
