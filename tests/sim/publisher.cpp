// coap2mqtt-pub: N sleepy devices that publish to a gateway's /ps (issue 20, acceptance 6).
//
//   coap2mqtt-pub --devices N --address A [--address-step] --gateway HOST:PORT
//                 [--interval MS] [--count K] [--topic PREFIX] [--non]
//
// Device i sends from address A (with --address-step: A + i, each device a host of its own,
// as the gateway names pushed devices by host) and every --interval ms a POST
// /ps/<PREFIX>/d<i> with the payload "d<i>:<seq>", CON unless --non; --count K publishes
// each. Publishes are spread evenly over the interval. Prints READY once its sessions exist,
// then at the end "SENT s ACKED a CODES c FAILED f" (ACKED: 2.04 answers; CODES: other
// answers; FAILED: no answer after libcoap's retransmissions) and exits 0 when every
// publish was answered 2.04.
#include <arpa/inet.h>
#include <coap3/coap.h>
#include <sys/resource.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

volatile std::sig_atomic_t g_stop = 0;
void onSignal(int) {
  g_stop = 1;
}

struct Options {
  int devices = 1;
  std::string address = "127.0.0.1";
  bool step = false;
  std::string gateway_host = "127.0.0.1";
  int gateway_port = 5683;
  int interval_ms = 1000;
  int count = 10;
  std::string topic = "bench";
  bool non = false;
};

int parseInt(const std::string& flag, const char* v, int min, int max) {
  if (v == nullptr) throw std::invalid_argument(flag + " needs a value");
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  if (*end != '\0' || end == v || n < min || n > max) throw std::invalid_argument("bad " + flag);
  return static_cast<int>(n);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const char* next = i + 1 < argc ? argv[i + 1] : nullptr;
    if (a == "--devices") {
      o.devices = parseInt(a, next, 1, 60000), ++i;
    } else if (a == "--address" && next) {
      o.address = next, ++i;
    } else if (a == "--address-step") {
      o.step = true;
    } else if (a == "--gateway" && next) {
      const std::string hp = next;
      const auto colon = hp.rfind(':');
      if (colon == std::string::npos) throw std::invalid_argument("--gateway HOST:PORT");
      o.gateway_host = hp.substr(0, colon);
      o.gateway_port = parseInt(a, hp.c_str() + colon + 1, 1, 65535);
      ++i;
    } else if (a == "--interval") {
      o.interval_ms = parseInt(a, next, 1, 3600000), ++i;
    } else if (a == "--count") {
      o.count = parseInt(a, next, 1, 1000000), ++i;
    } else if (a == "--topic" && next) {
      o.topic = next, ++i;
    } else if (a == "--non") {
      o.non = true;
    } else {
      throw std::invalid_argument("unknown option " + a);
    }
  }
  return o;
}

std::string addressPlus(const std::string& base, int i) {
  in_addr a{};
  if (inet_pton(AF_INET, base.c_str(), &a) != 1) throw std::invalid_argument("IPv4 only");
  a.s_addr = htonl(ntohl(a.s_addr) + static_cast<std::uint32_t>(i));
  char out[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &a, out, sizeof out);
  return out;
}

coap_address_t address(const std::string& host, int port) {
  coap_address_t a;
  coap_address_init(&a);
  a.size = sizeof(sockaddr_in);
  a.addr.sin.sin_family = AF_INET;
  a.addr.sin.sin_port = htons(static_cast<std::uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &a.addr.sin.sin_addr) != 1) {
    throw std::invalid_argument("bad address " + host);
  }
  return a;
}

std::uint64_t g_acked = 0, g_codes = 0, g_failed = 0, g_sent = 0;

coap_response_t onResponse(coap_session_t*, const coap_pdu_t*, const coap_pdu_t* received,
                           const coap_mid_t) {
  const coap_pdu_code_t code = coap_pdu_get_code(received);
  if (code == COAP_EMPTY_CODE) return COAP_RESPONSE_OK;  // the empty ACK of a separate answer
  if (code == COAP_RESPONSE_CODE(204)) {
    ++g_acked;
  } else {
    ++g_codes;
    if (g_codes <= 5) {
      std::fprintf(stderr, "answer %d.%02d\n", COAP_RESPONSE_CLASS(code), code & 0x1f);
    }
  }
  return COAP_RESPONSE_OK;
}

void onNack(coap_session_t*, const coap_pdu_t*, const coap_nack_reason_t, const coap_mid_t) {
  ++g_failed;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  try {
    o = parse(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "coap2mqtt-pub: %s\n", e.what());
    return 2;
  }
  std::signal(SIGTERM, onSignal);
  std::signal(SIGINT, onSignal);
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  coap_startup();
  coap_set_log_level(LOG_WARNING);
  coap_context_t* ctx = coap_new_context(nullptr);
  if (ctx == nullptr) return 1;
  coap_register_response_handler(ctx, onResponse);
  coap_register_nack_handler(ctx, onNack);
  const coap_address_t gw = address(o.gateway_host, o.gateway_port);
  std::vector<coap_session_t*> sessions;
  std::vector<std::string> paths;
  for (int i = 0; i < o.devices; ++i) {
    const coap_address_t local = address(o.step ? addressPlus(o.address, i) : o.address, 0);
    coap_session_t* s = coap_new_client_session(ctx, &local, &gw, COAP_PROTO_UDP);
    if (s == nullptr) {
      std::fprintf(stderr, "coap2mqtt-pub: no session for device %d\n", i);
      return 1;
    }
    sessions.push_back(s);
    paths.push_back("d" + std::to_string(i));
  }
  std::printf("READY\n");
  std::fflush(stdout);
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  const auto per_device = std::chrono::microseconds(std::int64_t{o.interval_ms} * 1000 / o.devices);
  const std::uint64_t total = std::uint64_t(o.count) * std::uint64_t(o.devices);
  std::uint64_t next = 0;  // publish number: round next / devices, device next % devices
  while (!g_stop) {
    const auto now = Clock::now();
    while (next < total) {
      const int dev = static_cast<int>(next % std::uint64_t(o.devices));
      const std::uint64_t round = next / std::uint64_t(o.devices);
      const auto due =
          start + std::chrono::milliseconds(std::int64_t(round) * o.interval_ms) + per_device * dev;
      if (due > now) break;
      coap_session_t* s = sessions[std::size_t(dev)];
      coap_pdu_t* pdu =
          coap_new_pdu(o.non ? COAP_MESSAGE_NON : COAP_MESSAGE_CON, COAP_REQUEST_CODE_POST, s);
      if (pdu == nullptr) return 1;
      std::uint8_t token[8];
      std::size_t token_len = 0;
      coap_session_new_token(s, &token_len, token);
      coap_add_token(pdu, token_len, token);
      const std::string& topic = o.topic;
      coap_add_option(pdu, COAP_OPTION_URI_PATH, 2, reinterpret_cast<const std::uint8_t*>("ps"));
      coap_add_option(pdu, COAP_OPTION_URI_PATH, topic.size(),
                      reinterpret_cast<const std::uint8_t*>(topic.data()));
      const std::string& p = paths[std::size_t(dev)];
      coap_add_option(pdu, COAP_OPTION_URI_PATH, p.size(),
                      reinterpret_cast<const std::uint8_t*>(p.data()));
      const std::string payload = p + ":" + std::to_string(round + 1);
      coap_add_data(pdu, payload.size(), reinterpret_cast<const std::uint8_t*>(payload.data()));
      coap_send(s, pdu);
      ++g_sent;
      ++next;
    }
    const bool done_sending = next >= total;
    if (done_sending && g_acked + g_codes + g_failed >= total) break;
    coap_io_process(ctx, 5);
  }
  std::printf("SENT %llu ACKED %llu CODES %llu FAILED %llu\n",
              static_cast<unsigned long long>(g_sent), static_cast<unsigned long long>(g_acked),
              static_cast<unsigned long long>(g_codes), static_cast<unsigned long long>(g_failed));
  std::fflush(stdout);
  for (coap_session_t* s : sessions) coap_session_release(s);
  coap_free_context(ctx);
  coap_cleanup();
  return g_acked == total ? 0 : 1;
}
