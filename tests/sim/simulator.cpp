// coap2mqtt-sim: many virtual CoAP devices in one process, one libcoap context.
//
//   coap2mqtt-sim --devices N --address 127.0.0.1 --port P [--address-step]
//                 [--interval MS] [--non | --non-always] [--max-age S]
//                 [--name-prefix dev] [--log-level L]
//                 [--multicast GROUP]... [--leisure MS] [--senml] [--stamp]
//                 [--psk KEY | --cert CERT.pem --key KEY.pem [--ca CA.pem]]
//
// Device i is named <prefix><i> and listens on address:(P+i), or with --address-step on
// (address+i):P. Every device serves the same resource tree (see kResources below).
//
// stdout is a line protocol the integration tests read (each line flushed):
//   READY <N>                                    all N devices are bound
//   REQ <device> <METHOD> <path[?query]>[ <payload>]
//       one line per request a device receives, notifications excluded. The payload is
//       printed as-is if it is printable ASCII, else as "hex:<lowercase hex>"; an empty
//       payload prints nothing (no trailing space).
//   MCAST <n>                                    a multicast GET /.well-known/core arrived;
//       n devices will answer it (each after its own random delay in [0, leisure) ms)
//   SKIP <device> <from> <to>                   values <from>..<to> of /sensors/counter
//       were never sent to an observer: at their ticks a CON notification to it was still
//       unacknowledged, so libcoap deferred the notification and then sent the newest value
//       (RFC 7641 4.5.2 allows it). Lost before the gateway saw them, not by it.
//   SENML <device> <pack>                        (--senml only) the SenML pack, as JSON,
//       that the device's /sensors/senml and /sensors/senml-cbor serve from now on; one
//       line per device when it is bound (before READY) and at every sensor update
//       (before its notifications go out)
// Everything else (errors, libcoap's own log) goes to stderr.
//
// libcoap 4.3.1 notes that shape this file:
// - Resources belong to the context, not to an endpoint: all devices share one resource
//   tree, so handlers find the device from the session's local address, and
//   coap_resource_notify_observers() notifies the observers of *every* device (each gets
//   its own device's value). Sensors therefore tick all devices together; a change of one
//   device's LED sends an unchanged-value notification to the LED observers of the
//   others.
// - Notifications call the GET handler too. In 4.3.1 they are only ever generated from
//   coap_io_prepare_epoll()/coap_io_prepare_io() (coap_check_notify), so the loop runs
//   that step itself with a flag set before coap_io_process(), which then has nothing left
//   to notify; that is how REQ lines exclude notifications.
// - libcoap binds its UDP endpoints with SO_REUSEADDR, so a second simulator on the same
//   ports would bind "successfully". We probe every address with a plain bind first.
// - coap_io_process(ctx, 0) means COAP_IO_WAIT (block), so timeouts are at least 1 ms.
// - A context walks all of its sessions whenever it prepares I/O (every loop iteration), and
//   matches each ACK against every observer of every resource (coap_touch_observer): with
//   10,000 devices in one context each datagram cost two walks of 10,000 sessions and one of
//   20,000 observers, and the simulator could not send 2,000 notifications a second. Devices
//   are therefore spread over contexts of at most kDevicesPerContext ("shards"), each with
//   its own resource tree; the loop waits on all their epoll descriptors and processes only
//   the ones that have something to do. The notes above hold within one shard (a change of
//   one device's LED notifies the LED observers of its shard). Up to kDevicesPerContext
//   devices everything is one context, as before.
//
// Multicast (--multicast, needs --address-step): libcoap 4.3.1 can join a group for the
// whole context, but then one endpoint answers for everybody, from one address, after one
// shared leisure. Real devices each answer from their own unicast address, so the
// simulator does it itself: ONE extra socket (SO_REUSEADDR) bound to GROUP:P (0.0.0.0:P
// with several groups), joined to every group on the interface that holds the devices'
// addresses. A valid NON GET /.well-known/core schedules, for every device, a NON 2.05
// with the request's token and MID (as libcoap 4.3.1 servers do), Content-Format 40 and
// that device's link-format, after a random delay in [0, --leisure) ms. The answers go
// out of the same socket with IP_PKTINFO (ipi_spec_dst = the device's address), so their
// source is device-address:P. Pending answers sit in one min-heap ordered by due time.
// Unicast datagrams to a device still reach its libcoap endpoint: the endpoints are bound
// first (and probed with a plain bind), and for unicast the most specific bind wins; a
// socket bound to the group address never matches a unicast destination at all.
// The multicast request is parsed here (RFC 7252 §3): Uri-Path must be .well-known/core;
// the first Uri-Query is applied as a link filter exactly like the unicast one (href, rt,
// ct); a device whose filtered link-format is empty does not answer (RFC 7252 §8.2).
// Other critical options, CON requests and garbage are ignored (noted on stderr).
//
// SenML (--senml): two more observable resources, listed in /.well-known/core after the
// others, serve one RFC 8428 pack per device that changes at every sensor update:
//   /sensors/senml       rt="senml" ct=110 (application/senml+json)
//   /sensors/senml-cbor  rt="senml" ct=112 (application/senml+cbor, integer labels)
// Both carry the same pack (the CBOR numbers are the doubles the JSON text denotes):
//   [{"bn":"<device>/","bt":<update time, epoch s with ms>,"n":"seq","v":<seq>},
//    {"n":"temp","t":-0.5,"u":"Cel","v":<temperature>},
//    {"n":"even","vb":<seq is even>},{"n":"trend","vs":"up"|"down"|"steady"}]
// <seq> and <temperature> are those of /sensors/counter and /sensors/temp. Without
// --senml these resources do not exist (tests count the listed resources).
//
// DTLS (--psk or --cert, not both): every device speaks DTLS only (coaps://), on the same
// addresses and ports. --psk KEY: any identity, that key. --cert/--key: every device shows
// that certificate (PEM) and proves it with that key (PEM); with --ca it asks for the
// client's certificate and refuses a handshake without one or with one that does not chain
// to CA.pem (at most 3 deep, valid now, not self-signed; no CRLs, no name check), without
// --ca it asks for none. The files are read when the simulator starts: a missing,
// unreadable or non-PEM file, or a key that is not the certificate's, exits 2 naming it.
//
// Stamp (--stamp): one more observable resource, listed in /.well-known/core after the
// others (and after the SenML ones), notified at every sensor update like them:
//   /sensors/stamp       rt="stamp" ct=0 (text/plain)
// Its payload is the time the response or notification is built (CLOCK_REALTIME, i.e.
// std::chrono::system_clock), as decimal microseconds since the epoch, e.g.
// "1718000000123456". bench_observe --latency subtracts it from the time its MQTT tap
// received the message. Without --stamp the resource does not exist.
#include <arpa/inet.h>
#include <coap3/coap.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace {

volatile std::sig_atomic_t g_stop = 0;

void onSignal(int) {
  g_stop = 1;
}

struct Options {
  int devices = 1;
  std::string address = "127.0.0.1";
  int port = 5683;
  bool address_step = false;
  int interval_ms = 1000;
  int notify_mode = COAP_RESOURCE_FLAGS_NOTIFY_CON;
  int max_age = 60;
  std::string name_prefix = "dev";
  int log_level = LOG_WARNING;
  std::vector<in_addr> multicast;  // groups whose GET /.well-known/core every device answers
  int leisure_ms = 2000;           // each device waits a random [0, leisure) ms to answer
  bool senml = false;              // serve /sensors/senml and /sensors/senml-cbor
  bool stamp = false;              // serve /sensors/stamp (send time, for latency benches)
  std::string psk;                 // non-empty: every device speaks DTLS with this key only
  std::string cert_file;  // non-empty: every device speaks DTLS with this certificate (PEM)...
  std::string key_file;   // ...and its private key (PEM)
  std::string ca_file;    // non-empty: a client certificate is required, checked against it
  bool dtls() const { return !psk.empty() || !cert_file.empty(); }
};

const char kUsage[] =
    "usage: coap2mqtt-sim --devices N --address ADDR --port P [--address-step]\n"
    "                     [--interval MS] [--non | --non-always] [--max-age S]\n"
    "                     [--name-prefix PREFIX] [--log-level 0-8]\n"
    "                     [--multicast GROUP]... [--leisure MS] [--senml] [--stamp]\n"
    "                     [--psk KEY | --cert CERT.pem --key KEY.pem [--ca CA.pem]]\n"
    "  Device i (named PREFIX<i>) listens on ADDR:(P+i), or with --address-step on\n"
    "  (ADDR+i):P (IPv4 only). --interval: sensor update period (default 1000 ms).\n"
    "  --non: NON notifications (libcoap still sends every 5th as CON);\n"
    "  --non-always: NON only. --max-age: Max-Age of sensor values (default 60).\n"
    "  --multicast GROUP (IPv4, repeatable; needs --address-step): every device answers a\n"
    "  NON GET /.well-known/core sent to GROUP:P from its own address, after a random\n"
    "  delay in [0, --leisure) ms (default 2000).\n"
    "  --senml: also serve observable SenML packs on /sensors/senml (ct 110) and\n"
    "  /sensors/senml-cbor (ct 112), logged as 'SENML <device> <pack as JSON>'.\n"
    "  --stamp: also serve an observable /sensors/stamp (ct 0) whose value is the time it\n"
    "  was sent, in microseconds since the epoch (for latency measurements).\n"
    "  --psk KEY: the devices speak DTLS (coaps://) only, with pre-shared key KEY for any\n"
    "  identity (a test key: it is on the command line).\n"
    "  --cert CERT.pem --key KEY.pem: the devices speak DTLS (coaps://) only, all with this\n"
    "  certificate and private key (PEM). --ca CA.pem: they also ask for the client's\n"
    "  certificate and refuse one that does not chain to CA.pem (no name check); without\n"
    "  --ca they ask for none. --psk and --cert exclude each other.\n"
    "  stdout: 'READY <N>' once bound, then 'REQ <device> <METHOD> <path> [payload]',\n"
    "  and 'MCAST <n>' per multicast request (n = devices that will answer).\n";

int parseInt(const std::string& flag, const char* value, int min, int max) {
  if (value == nullptr) throw std::invalid_argument(flag + " needs a value");
  char* end = nullptr;
  errno = 0;
  long v = std::strtol(value, &end, 10);
  if (errno != 0 || end == value || *end != '\0' || v < min || v > max) {
    throw std::invalid_argument(flag + ": expected an integer in [" + std::to_string(min) + ", " +
                                std::to_string(max) + "], got '" + value + "'");
  }
  return static_cast<int>(v);
}

// `path` must be a readable file holding a PEM block whose label ends in `label_end`
// ("CERTIFICATE", "PRIVATE KEY"); else invalid_argument naming `flag` and the file.
void checkPemFile(const std::string& flag, const std::string& path, const std::string& label_end) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    throw std::invalid_argument(flag + ": cannot open " + path + ": " + std::strerror(errno));
  }
  // A PEM certificate or key is a few KiB; a CA bundle can be larger. Read at most 1 MiB.
  std::string text(std::size_t{1} << 20, '\0');
  text.resize(std::fread(text.data(), 1, text.size(), f));
  const int err = std::ferror(f) != 0 ? errno : 0;
  std::fclose(f);
  if (err != 0) {
    throw std::invalid_argument(flag + ": cannot read " + path + ": " + std::strerror(err));
  }
  for (std::size_t at = text.find("-----BEGIN "); at != std::string::npos;
       at = text.find("-----BEGIN ", at + 1)) {
    const std::size_t end = text.find("-----", at + 11);
    if (end == std::string::npos) break;
    const std::string label = text.substr(at + 11, end - (at + 11));
    if (label.size() >= label_end.size() &&
        label.compare(label.size() - label_end.size(), label_end.size(), label_end) == 0) {
      return;
    }
  }
  throw std::invalid_argument(flag + ": " + path + " holds no PEM \"" + label_end + "\" block");
}

// libcoap 4.3.1 loads the certificate and key only at each handshake (and then fails it
// with a log line); OpenSSL, the library libcoap itself uses, checks them once here.
void checkKeyMatchesCertificate(const std::string& cert_file, const std::string& key_file) {
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(DTLS_method()), SSL_CTX_free);
  if (!ctx) throw std::runtime_error("SSL_CTX_new failed");
  const auto why = [] {
    char text[256] = "unknown error";
    if (const unsigned long e = ERR_get_error(); e != 0) ERR_error_string_n(e, text, sizeof text);
    ERR_clear_error();
    return std::string(text);
  };
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), cert_file.c_str()) != 1) {
    throw std::invalid_argument("--cert: " + cert_file + ": " + why());
  }
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx.get()) != 1) {
    throw std::invalid_argument("--key: " + key_file + " is not the private key of " + cert_file +
                                " (" + why() + ")");
  }
}

void checkCertificateOptions(const Options& o) {
  if (o.cert_file.empty() != o.key_file.empty()) {
    throw std::invalid_argument("--cert and --key go together");
  }
  if (!o.ca_file.empty() && o.cert_file.empty()) {
    throw std::invalid_argument("--ca needs --cert and --key");
  }
  if (!o.psk.empty() && !o.cert_file.empty()) {
    throw std::invalid_argument("--psk and --cert exclude each other (one kind of DTLS)");
  }
  if (o.cert_file.empty()) return;
  checkPemFile("--cert", o.cert_file, "CERTIFICATE");
  checkPemFile("--key", o.key_file, "PRIVATE KEY");
  if (!o.ca_file.empty()) checkPemFile("--ca", o.ca_file, "CERTIFICATE");
  checkKeyMatchesCertificate(o.cert_file, o.key_file);
}

Options parseOptions(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    const char* next = i + 1 < argc ? argv[i + 1] : nullptr;
    auto take = [&]() {
      if (next == nullptr) throw std::invalid_argument(arg + " needs a value");
      ++i;
      return next;
    };
    if (arg == "--devices") {
      o.devices = parseInt(arg, take(), 1, 65535);
    } else if (arg == "--address") {
      o.address = take();
    } else if (arg == "--port") {
      o.port = parseInt(arg, take(), 1, 65535);
    } else if (arg == "--address-step") {
      o.address_step = true;
    } else if (arg == "--interval") {
      o.interval_ms = parseInt(arg, take(), 1, 24 * 3600 * 1000);
    } else if (arg == "--non") {
      o.notify_mode = COAP_RESOURCE_FLAGS_NOTIFY_NON;
    } else if (arg == "--non-always") {
      o.notify_mode = COAP_RESOURCE_FLAGS_NOTIFY_NON | COAP_RESOURCE_FLAGS_NOTIFY_NON_ALWAYS;
    } else if (arg == "--max-age") {
      o.max_age = parseInt(arg, take(), 0, 0x7fffffff);
    } else if (arg == "--name-prefix") {
      o.name_prefix = take();
    } else if (arg == "--log-level") {
      o.log_level = parseInt(arg, take(), 0, 8);
    } else if (arg == "--multicast") {
      const char* v = take();
      in_addr group{};
      if (inet_pton(AF_INET, v, &group) != 1 || !IN_MULTICAST(ntohl(group.s_addr))) {
        throw std::invalid_argument(std::string("--multicast: not an IPv4 multicast group: ") + v);
      }
      o.multicast.push_back(group);
    } else if (arg == "--leisure") {
      o.leisure_ms = parseInt(arg, take(), 1, 3600 * 1000);
    } else if (arg == "--senml") {
      o.senml = true;
    } else if (arg == "--stamp") {
      o.stamp = true;
    } else if (arg == "--psk") {
      o.psk = take();
      if (o.psk.empty()) throw std::invalid_argument("--psk: the key must not be empty");
    } else if (arg == "--cert") {
      o.cert_file = take();
    } else if (arg == "--key") {
      o.key_file = take();
    } else if (arg == "--ca") {
      o.ca_file = take();
    } else if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else {
      throw std::invalid_argument("unknown argument '" + arg + "'");
    }
  }
  if (!o.address_step && o.port + o.devices - 1 > 65535) {
    throw std::invalid_argument("--port + --devices exceeds 65535");
  }
  if (!o.multicast.empty() && !o.address_step) {
    throw std::invalid_argument("--multicast needs --address-step (all devices on one port)");
  }
  checkCertificateOptions(o);
  return o;
}

// ---------------------------------------------------------------------------------------
// Resources

enum class Kind {
  Temp,
  Counter,
  Info,
  Led,
  ConfigName,
  SenmlJson,
  SenmlCbor,
  Stamp,
  Blob,
  WellKnown,
  Unknown
};

constexpr unsigned bit(coap_request_t m) {
  return 1u << m;
}

struct ResourceSpec {
  Kind kind;
  const char* path;  // without the leading '/'
  const char* rt;    // link attribute value, quoted in the link
  int ct;
  bool observable;
  unsigned methods;  // allowed methods (bit(COAP_REQUEST_*)); the rest get 4.05
};

const ResourceSpec kResources[] = {
    {Kind::Temp, "sensors/temp", "temperature", COAP_MEDIATYPE_TEXT_PLAIN, true,
     bit(COAP_REQUEST_GET)},
    {Kind::Counter, "sensors/counter", "counter", COAP_MEDIATYPE_APPLICATION_JSON, true,
     bit(COAP_REQUEST_GET)},
    {Kind::Info, "info", "info", COAP_MEDIATYPE_APPLICATION_JSON, false, bit(COAP_REQUEST_GET)},
    {Kind::Led, "actuators/led", "switch", COAP_MEDIATYPE_TEXT_PLAIN, true,
     bit(COAP_REQUEST_GET) | bit(COAP_REQUEST_PUT) | bit(COAP_REQUEST_POST)},
    {Kind::ConfigName, "config/name", "config", COAP_MEDIATYPE_TEXT_PLAIN, false,
     bit(COAP_REQUEST_GET) | bit(COAP_REQUEST_PUT)},
};
// With --senml only; listed in /.well-known/core after kResources.
const ResourceSpec kSenmlResources[] = {
    {Kind::SenmlJson, "sensors/senml", "senml", COAP_MEDIATYPE_APPLICATION_SENML_JSON, true,
     bit(COAP_REQUEST_GET)},
    {Kind::SenmlCbor, "sensors/senml-cbor", "senml", COAP_MEDIATYPE_APPLICATION_SENML_CBOR, true,
     bit(COAP_REQUEST_GET)},
};
// With --stamp only; listed in /.well-known/core last.
const ResourceSpec kStamp = {Kind::Stamp, "sensors/stamp",      "stamp", COAP_MEDIATYPE_TEXT_PLAIN,
                             true,        bit(COAP_REQUEST_GET)};
const ResourceSpec kWellKnown = {Kind::WellKnown, ".well-known/core",
                                 nullptr,         COAP_MEDIATYPE_APPLICATION_LINK_FORMAT,
                                 false,           bit(COAP_REQUEST_GET)};
const ResourceSpec kUnknown = {Kind::Unknown, "", nullptr, 0, false, 0};
// Not listed in /.well-known/core (discovery tests count the listed ones): accepts large
// PUT bodies (Block1, reassembled by libcoap) and logs their size and FNV-1a hash instead
// of the bytes: "REQ <dev> PUT /actuators/blob size=<n> fnv1a=<8 hex digits>".
const ResourceSpec kBlob = {Kind::Blob, "actuators/blob",
                            nullptr,    COAP_MEDIATYPE_TEXT_PLAIN,
                            false,      bit(COAP_REQUEST_GET) | bit(COAP_REQUEST_PUT)};

std::string blobSummary(std::string_view body) {
  std::uint32_t h = 2166136261u;
  for (unsigned char c : body) h = (h ^ c) * 16777619u;
  char text[64];
  std::snprintf(text, sizeof(text), "size=%zu fnv1a=%08x", body.size(), h);
  return text;
}

const char* methodName(coap_pdu_code_t code) {
  switch (code) {
    case COAP_REQUEST_CODE_GET:
      return "GET";
    case COAP_REQUEST_CODE_POST:
      return "POST";
    case COAP_REQUEST_CODE_PUT:
      return "PUT";
    case COAP_REQUEST_CODE_DELETE:
      return "DELETE";
    case COAP_REQUEST_CODE_FETCH:
      return "FETCH";
    case COAP_REQUEST_CODE_PATCH:
      return "PATCH";
    case COAP_REQUEST_CODE_IPATCH:
      return "IPATCH";
    default:
      return "UNKNOWN";
  }
}

std::string printablePayload(const uint8_t* data, size_t len) {
  bool printable = std::all_of(data, data + len, [](uint8_t c) { return c >= 0x20 && c < 0x7f; });
  if (printable) return std::string(reinterpret_cast<const char*>(data), len);
  static const char kHex[] = "0123456789abcdef";
  std::string out = "hex:";
  for (size_t i = 0; i < len; ++i) {
    out += kHex[data[i] >> 4];
    out += kHex[data[i] & 0xf];
  }
  return out;
}

// Key of a local address: family, address bytes and port.
std::string addressKey(const coap_address_t* a) {
  // Built with push_back from local copies: GCC 12 at -O3 reports a false -Wrestrict for
  // std::string::append from the sockaddr union.
  std::string key;
  auto add = [&key](const void* bytes, std::size_t n) {
    const auto* p = static_cast<const unsigned char*>(bytes);
    for (std::size_t i = 0; i < n; ++i) key.push_back(static_cast<char>(p[i]));
  };
  if (a->addr.sa.sa_family == AF_INET) {
    const in_addr address = a->addr.sin.sin_addr;
    const in_port_t port = a->addr.sin.sin_port;
    key.push_back('4');
    add(&address, sizeof address);
    add(&port, sizeof port);
  } else if (a->addr.sa.sa_family == AF_INET6) {
    const in6_addr address = a->addr.sin6.sin6_addr;
    const in_port_t port = a->addr.sin6.sin6_port;
    key.push_back('6');
    add(&address, sizeof address);
    add(&port, sizeof port);
  }
  return key;
}

struct Device {
  std::string name;
  std::string endpoint;  // "addr:port" for messages
  double temp = 21.0;
  std::uint64_t seq = 0;
  std::string led = "off";
  std::string config_name;
  std::string blob;              // summary of the last PUT to /actuators/blob
  std::int64_t updated_ms = 0;   // epoch ms of the last sensor update (SenML base time)
  std::string trend = "steady";  // how the last update moved the temperature: up | down
  std::mt19937 rng;
};

std::int64_t epochUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::int64_t epochMs() {
  return epochUs() / 1000;
}

// SenML (RFC 8428). A field is its JSON label, its CBOR label (§6, Table 4) and its value
// as a JSON literal: a number, true/false, or a string without escapes. The CBOR form is
// derived from the same literal, so both packs denote the same values.
struct SenmlField {
  const char* label;
  int cbor_label;
  std::string value;
};
using SenmlRecord = std::vector<SenmlField>;

std::string quoted(const std::string& s) {
  return "\"" + s + "\"";
}

// The pack a device serves (see the file header).
std::vector<SenmlRecord> senmlPack(const Device& d) {
  char bt[48];
  std::snprintf(bt, sizeof(bt), "%lld.%03lld", static_cast<long long>(d.updated_ms / 1000),
                static_cast<long long>(d.updated_ms % 1000));
  char temp[32];
  std::snprintf(temp, sizeof(temp), "%.2f", d.temp);
  return {
      {{"bn", -2, quoted(d.name + "/")},
       {"bt", -3, bt},
       {"n", 0, quoted("seq")},
       {"v", 2, std::to_string(d.seq)}},
      {{"n", 0, quoted("temp")}, {"t", 6, "-0.5"}, {"u", 1, quoted("Cel")}, {"v", 2, temp}},
      {{"n", 0, quoted("even")}, {"vb", 4, d.seq % 2 == 0 ? "true" : "false"}},
      {{"n", 0, quoted("trend")}, {"vs", 3, quoted(d.trend)}},
  };
}

std::string senmlJson(const std::vector<SenmlRecord>& pack) {
  std::string out = "[";
  for (const SenmlRecord& record : pack) {
    if (out.size() > 1) out += ',';
    out += '{';
    for (const SenmlField& f : record) {
      if (out.back() != '{') out += ',';
      out += quoted(f.label) + ":" + f.value;
    }
    out += '}';
  }
  return out + "]";
}

void cborHead(std::string& out, unsigned major, std::uint64_t value) {
  const auto byte = [&out](std::uint64_t b) { out.push_back(static_cast<char>(b & 0xff)); };
  if (value < 24) {
    byte((major << 5) | value);
    return;
  }
  const int size = value <= 0xff ? 1 : value <= 0xffff ? 2 : value <= 0xffffffffu ? 4 : 8;
  byte((major << 5) | (size == 1 ? 24u : size == 2 ? 25u : size == 4 ? 26u : 27u));
  for (int i = size - 1; i >= 0; --i) byte(value >> (8 * i));
}

void cborInt(std::string& out, std::int64_t value) {
  if (value >= 0) {
    cborHead(out, 0, static_cast<std::uint64_t>(value));
  } else {
    cborHead(out, 1, static_cast<std::uint64_t>(-(value + 1)));
  }
}

// A SenmlField value (JSON literal) as CBOR: text string, true/false, a float64 when the
// literal has a fraction or exponent, an integer otherwise.
void cborLiteral(std::string& out, const std::string& literal) {
  if (literal == "true" || literal == "false") {
    out.push_back(static_cast<char>(literal == "true" ? 0xf5 : 0xf4));
  } else if (literal.front() == '"') {
    cborHead(out, 3, literal.size() - 2);
    out.append(literal, 1, literal.size() - 2);
  } else if (literal.find_first_of(".eE") != std::string::npos) {
    const double d = std::strtod(literal.c_str(), nullptr);
    std::uint64_t bits = 0;
    std::memcpy(&bits, &d, sizeof bits);
    out.push_back(static_cast<char>(0xfb));
    for (int i = 7; i >= 0; --i) out.push_back(static_cast<char>((bits >> (8 * i)) & 0xff));
  } else {
    cborInt(out, std::stoll(literal));
  }
}

std::string senmlCbor(const std::vector<SenmlRecord>& pack) {
  std::string out;
  cborHead(out, 4, pack.size());
  for (const SenmlRecord& record : pack) {
    cborHead(out, 5, record.size());
    for (const SenmlField& f : record) {
      cborInt(out, f.cbor_label);
      cborLiteral(out, f.value);
    }
  }
  return out;
}

// Link-format query filter (RFC 6690 §4.1), like libcoap's own /.well-known/core:
// href=/path[*], rt/if/rel match one space-separated word, other attributes the value.
bool linkMatches(const ResourceSpec& r, std::string_view query) {
  if (query.empty()) return true;
  size_t eq = query.find('=');
  if (eq == std::string_view::npos) return true;  // libcoap ignores a filter without '='
  std::string_view name = query.substr(0, eq);
  std::string_view pattern = query.substr(eq + 1);
  bool prefix = !pattern.empty() && pattern.back() == '*';
  if (prefix) pattern.remove_suffix(1);
  auto matchValue = [&](std::string_view value) {
    return prefix ? value.substr(0, pattern.size()) == pattern : value == pattern;
  };
  if (name == "href") {
    if (!pattern.empty() && pattern.front() == '/') pattern.remove_prefix(1);
    return matchValue(r.path);
  }
  if (name == "rt") {
    std::string_view words = r.rt;
    while (!words.empty()) {
      size_t sp = words.find(' ');
      if (matchValue(words.substr(0, sp))) return true;
      if (sp == std::string_view::npos) break;
      words.remove_prefix(sp + 1);
    }
    return false;
  }
  if (name == "ct") return matchValue(std::to_string(r.ct));
  return false;
}

// A multicast GET /.well-known/core, parsed by hand (RFC 7252 §3).
struct DiscoveryRequest {
  std::uint16_t mid = 0;
  std::string token;
  std::string query;  // the first Uri-Query, "" when none
};

std::optional<DiscoveryRequest> parseDiscoveryRequest(const uint8_t* p, size_t n,
                                                      std::string* why) {
  auto fail = [&](const char* reason) {
    *why = reason;
    return std::nullopt;
  };
  if (n < 4) return fail("shorter than a CoAP header");
  if ((p[0] >> 6) != 1) return fail("not CoAP version 1");
  const unsigned type = (p[0] >> 4) & 0x3;
  const size_t tkl = p[0] & 0x0f;
  if (tkl > 8 || n < 4 + tkl) return fail("bad token length");
  if (type != 1) return fail("not a NON request (multicast requests must be NON)");
  if (p[1] != COAP_REQUEST_CODE_GET) return fail("not a GET");
  DiscoveryRequest r;
  r.mid = static_cast<std::uint16_t>((p[2] << 8) | p[3]);
  r.token.assign(reinterpret_cast<const char*>(p + 4), tkl);
  std::vector<std::string> path;
  bool have_query = false;
  size_t i = 4 + tkl;
  unsigned number = 0;
  while (i < n && p[i] != 0xff) {
    unsigned delta = p[i] >> 4;
    unsigned length = p[i] & 0x0f;
    ++i;
    for (unsigned* v : {&delta, &length}) {
      if (*v == 13) {
        if (i + 1 > n) return fail("truncated option");
        *v = 13u + p[i];
        i += 1;
      } else if (*v == 14) {
        if (i + 2 > n) return fail("truncated option");
        *v = 269u + ((static_cast<unsigned>(p[i]) << 8) | p[i + 1]);
        i += 2;
      } else if (*v == 15) {
        return fail("reserved option nibble");
      }
    }
    if (i + length > n) return fail("truncated option value");
    number += delta;
    std::string value(reinterpret_cast<const char*>(p + i), length);
    i += length;
    switch (number) {
      case COAP_OPTION_URI_PATH:
        path.push_back(std::move(value));
        break;
      case COAP_OPTION_URI_QUERY:
        if (!have_query) r.query = std::move(value);
        have_query = true;
        break;
      case COAP_OPTION_ACCEPT: {
        unsigned accept = 0;
        for (char c : value) accept = (accept << 8) | static_cast<uint8_t>(c);
        if (accept != COAP_MEDIATYPE_APPLICATION_LINK_FORMAT) return fail("Accept is not 40");
        break;
      }
      case COAP_OPTION_URI_HOST:
      case COAP_OPTION_URI_PORT:
      case COAP_OPTION_BLOCK2:  // the whole link-format fits: answered as block 0 would be
        break;
      default:
        if ((number & 1u) != 0) return fail("unknown critical option");
        break;  // elective: ignored
    }
  }
  if (i < n && i + 1 == n) return fail("payload marker without payload");
  if (path.size() != 2 || path[0] != ".well-known" || path[1] != "core") {
    return fail("not /.well-known/core");
  }
  return r;
}

// NON 2.05 with `token` and `mid`, Content-Format 40 and `links` as payload.
std::string encodeDiscoveryAnswer(const DiscoveryRequest& req, const std::string& links) {
  std::string out;
  out.push_back(static_cast<char>(0x40 | (1 << 4) | req.token.size()));  // ver 1, NON, TKL
  out.push_back(static_cast<char>(COAP_RESPONSE_CODE_CONTENT));
  out.push_back(static_cast<char>(req.mid >> 8));
  out.push_back(static_cast<char>(req.mid & 0xff));
  out += req.token;
  out.push_back(static_cast<char>((COAP_OPTION_CONTENT_FORMAT << 4) | 1));  // delta 12, len 1
  out.push_back(static_cast<char>(COAP_MEDIATYPE_APPLICATION_LINK_FORMAT));
  if (!links.empty()) {
    out.push_back(static_cast<char>(0xff));
    out += links;
  }
  return out;
}

// ---------------------------------------------------------------------------------------

constexpr int kDevicesPerContext = 256;

class Simulator {
 public:
  explicit Simulator(Options opts) : opts_(std::move(opts)) {}
  ~Simulator() {
    if (mcast_fd_ >= 0) ::close(mcast_fd_);
    for (Shard& shard : shards_) coap_free_context(shard.ctx);
  }
  Simulator(const Simulator&) = delete;
  Simulator& operator=(const Simulator&) = delete;

  // Creates the context, the resources and one endpoint per device. Throws on failure.
  void start();
  // Runs until SIGTERM/SIGINT.
  void run();

 private:
  static void onRequest(coap_resource_t* resource, coap_session_t* session,
                        const coap_pdu_t* request, const coap_string_t* query,
                        coap_pdu_t* response) noexcept;
  void handle(const ResourceSpec& spec, Device& dev, coap_resource_t* resource,
              coap_session_t* session, const coap_pdu_t* request, const coap_string_t* query,
              coap_pdu_t* response, bool notification);
  void respond(coap_resource_t* resource, coap_session_t* session, const coap_pdu_t* request,
               const coap_string_t* query, coap_pdu_t* response, coap_pdu_code_t code, int ct,
               int max_age, const std::string& body);
  std::string wellKnown(std::string_view query) const;
  struct Shard {
    coap_context_t* ctx = nullptr;
    std::unordered_map<Kind, coap_resource_t*> resources;
  };
  // A context with its credentials and resources.
  void addShard();
  void addResource(Shard& shard, const ResourceSpec& spec);
  // --cert/--key[/--ca]: the context's DTLS certificate (before any endpoint exists).
  void setUpCertificates(coap_context_t* ctx);
  Shard& shardOf(int device) {
    return shards_[static_cast<std::size_t>(device / kDevicesPerContext)];
  }
  // Notifies the observers of `kind` in every shard.
  void notifyAll(Kind kind);
  void bindDevice(int index);
  void tick();
  void noteCounterSent(const Device& dev, const coap_session_t* session, bool notification);
  // Writes the SENML lines of every device (--senml only).
  void logSenml() const;
  void prepareIo();
  void prepareIo(coap_context_t* ctx);
  // A loop turn's work before it waits for I/O: the sensors' tick when it is due (moving
  // `next_tick`; its notifications leave at once) and the multicast answers that are due.
  // Returns how long the loop may wait (ms).
  long runDue(std::chrono::steady_clock::time_point& next_tick);
  // run() with more than one shard (needs libcoap's epoll).
  void runShards();
  void openMulticast();
  void readMulticast();
  // Sends the answers that are due; returns false when the socket is full (try again soon).
  bool sendDueAnswers(std::chrono::steady_clock::time_point now);

  // One scheduled multicast answer: `device` answers `datagram` (shared by all devices of
  // one request) to `to` at `due`.
  struct PendingAnswer {
    std::chrono::steady_clock::time_point due;
    int device;
    std::shared_ptr<const std::string> datagram;
    sockaddr_in to;
    bool operator>(const PendingAnswer& o) const { return due > o.due; }
  };

  Options opts_;
  std::vector<Shard> shards_;
  std::vector<Device> devices_;
  std::unordered_map<std::string, int> by_address_;
  bool in_prepare_ = false;
  // /sensors/counter: the newest seq each observing session was sent, to report what
  // libcoap skipped (see SKIP in the file header).
  std::map<std::pair<const coap_session_t*, const Device*>, std::uint64_t> counter_sent_;
  bool epoll_ = false;
  std::vector<in_addr> device_v4_;  // each device's unicast IPv4 address (multicast answers)
  int mcast_fd_ = -1;
  std::mt19937 leisure_rng_{std::random_device{}()};
  std::priority_queue<PendingAnswer, std::vector<PendingAnswer>, std::greater<PendingAnswer>>
      pending_;
};

void Simulator::addResource(Shard& shard, const ResourceSpec& spec) {
  coap_resource_t* r = spec.kind == Kind::Unknown
                           ? coap_resource_unknown_init(&Simulator::onRequest)
                           : coap_resource_init(coap_make_str_const(spec.path), opts_.notify_mode);
  if (r == nullptr) throw std::runtime_error(std::string("cannot create resource ") + spec.path);
  for (coap_request_t m :
       {COAP_REQUEST_GET, COAP_REQUEST_POST, COAP_REQUEST_PUT, COAP_REQUEST_DELETE}) {
    // Every method reaches us (so it is logged); disallowed ones get 4.05 from handle().
    coap_register_request_handler(r, m, &Simulator::onRequest);
  }
  if (spec.rt != nullptr) {
    std::string ct = std::to_string(spec.ct);
    std::string rt = std::string("\"") + spec.rt + "\"";
    // coap_add_attr copies name and value (flags 0) and prepends: the link lists rt, ct.
    coap_add_attr(r, coap_make_str_const("ct"), coap_make_str_const(ct.c_str()), 0);
    coap_add_attr(r, coap_make_str_const("rt"), coap_make_str_const(rt.c_str()), 0);
  }
  if (spec.observable) coap_resource_set_get_observable(r, 1);
  coap_resource_set_userdata(r, const_cast<ResourceSpec*>(&spec));
  coap_add_resource(shard.ctx, r);  // takes ownership
  shard.resources[spec.kind] = r;
}

void Simulator::setUpCertificates(coap_context_t* ctx) {
  if (coap_dtls_is_supported() == 0) throw std::runtime_error("this libcoap has no DTLS");
  const bool client_cert = !opts_.ca_file.empty();
  coap_dtls_pki_t pki;
  std::memset(&pki, 0, sizeof pki);
  pki.version = COAP_DTLS_PKI_SETUP_VERSION;
  // libcoap's OpenSSL server asks for (and requires) the client's certificate only when
  // verify_peer_cert is set; check_common_ca then checks it against ca_file.
  pki.verify_peer_cert = client_cert ? 1 : 0;
  pki.check_common_ca = client_cert ? 1 : 0;
  pki.allow_self_signed = 0;
  pki.allow_expired_certs = 0;
  pki.cert_chain_validation = 1;
  pki.cert_chain_verify_depth = 3;
  pki.check_cert_revocation = 0;  // no CRLs
  pki.allow_no_crl = 1;
  pki.allow_expired_crl = 1;
  pki.pki_key.key_type = COAP_PKI_KEY_PEM;
  pki.pki_key.key.pem.public_cert = opts_.cert_file.c_str();  // opts_ outlives the context
  pki.pki_key.key.pem.private_key = opts_.key_file.c_str();
  pki.pki_key.key.pem.ca_file = client_cert ? opts_.ca_file.c_str() : nullptr;
  if (coap_context_set_pki(ctx, &pki) == 0) {
    throw std::runtime_error("coap_context_set_pki failed: are " + opts_.cert_file + " and " +
                             opts_.key_file + " a certificate and its key" +
                             (client_cert ? ", and " + opts_.ca_file + " a CA certificate" : "") +
                             "?");
  }
}

void Simulator::bindDevice(int index) {
  coap_address_t addr;
  coap_address_init(&addr);
  in_addr v4{};
  in6_addr v6{};
  if (inet_pton(AF_INET, opts_.address.c_str(), &v4) == 1) {
    int port = opts_.port;
    if (opts_.address_step) {
      v4.s_addr = htonl(ntohl(v4.s_addr) + static_cast<uint32_t>(index));
    } else {
      port += index;
    }
    addr.size = sizeof(sockaddr_in);
    addr.addr.sin.sin_family = AF_INET;
    addr.addr.sin.sin_addr = v4;
    addr.addr.sin.sin_port = htons(static_cast<uint16_t>(port));
  } else if (inet_pton(AF_INET6, opts_.address.c_str(), &v6) == 1) {
    if (opts_.address_step) throw std::invalid_argument("--address-step needs an IPv4 address");
    addr.size = sizeof(sockaddr_in6);
    addr.addr.sin6.sin6_family = AF_INET6;
    addr.addr.sin6.sin6_addr = v6;
    addr.addr.sin6.sin6_port = htons(static_cast<uint16_t>(opts_.port + index));
  } else {
    throw std::invalid_argument("--address: not a numeric IPv4/IPv6 address: " + opts_.address);
  }

  char text[INET6_ADDRSTRLEN + 16] = {};
  coap_print_addr(&addr, reinterpret_cast<unsigned char*>(text), sizeof(text) - 1);

  // libcoap sets SO_REUSEADDR, which lets two processes bind the same UDP port; a plain
  // bind without it fails if anyone holds the address.
  int probe = ::socket(addr.addr.sa.sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (probe < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  int rc = ::bind(probe, &addr.addr.sa, addr.size);
  int err = errno;
  ::close(probe);
  if (rc != 0) throw std::runtime_error(std::string("bind ") + text + ": " + std::strerror(err));

  if (coap_new_endpoint(shardOf(index).ctx, &addr,
                        opts_.dtls() ? COAP_PROTO_DTLS : COAP_PROTO_UDP) == nullptr) {
    throw std::runtime_error(std::string("coap_new_endpoint failed for ") + text);
  }

  Device dev;
  dev.name = opts_.name_prefix + std::to_string(index);
  dev.endpoint = text;
  dev.config_name = dev.name;
  dev.rng.seed(static_cast<std::mt19937::result_type>(index) * 7919u + 1u);
  dev.temp = 20.0 + static_cast<double>(index % 100) / 10.0;
  dev.updated_ms = epochMs();
  by_address_[addressKey(&addr)] = index;
  if (addr.addr.sa.sa_family == AF_INET) device_v4_.push_back(addr.addr.sin.sin_addr);
  devices_.push_back(std::move(dev));
}

void Simulator::addShard() {
  coap_context_t* ctx = coap_new_context(nullptr);
  if (ctx == nullptr) throw std::runtime_error("coap_new_context failed");
  shards_.push_back(Shard{ctx, {}});
  Shard& shard = shards_.back();
  coap_set_app_data(ctx, this);
  coap_context_set_block_mode(ctx, COAP_BLOCK_USE_LIBCOAP | COAP_BLOCK_SINGLE_BODY);
  epoll_ = coap_context_get_coap_fd(ctx) >= 0;
  if (!opts_.psk.empty()) {
    coap_dtls_spsk_t psk;
    std::memset(&psk, 0, sizeof psk);
    psk.version = COAP_DTLS_SPSK_SETUP_VERSION;
    static const char kHint[] = "coap2mqtt-sim";
    psk.psk_info.hint = {sizeof kHint - 1, reinterpret_cast<const uint8_t*>(kHint)};
    psk.psk_info.key = {opts_.psk.size(), reinterpret_cast<const uint8_t*>(opts_.psk.data())};
    if (coap_context_set_psk2(ctx, &psk) == 0) {
      throw std::runtime_error("coap_context_set_psk2 failed (libcoap without DTLS?)");
    }
  }
  if (!opts_.cert_file.empty()) setUpCertificates(ctx);

  for (const ResourceSpec& spec : kResources) addResource(shard, spec);
  if (opts_.senml) {
    for (const ResourceSpec& spec : kSenmlResources) addResource(shard, spec);
  }
  if (opts_.stamp) addResource(shard, kStamp);
  addResource(shard, kBlob);
  addResource(shard, kWellKnown);  // ours, so that discovery requests are logged too
  addResource(shard, kUnknown);    // logs (and 4.04s) requests for unknown paths
}

void Simulator::start() {
  const int shards = std::max(1, (opts_.devices + kDevicesPerContext - 1) / kDevicesPerContext);
  shards_.reserve(static_cast<std::size_t>(shards));
  for (int i = 0; i < shards; ++i) addShard();
  if (shards > 1 && !epoll_) {
    throw std::runtime_error("more than " + std::to_string(kDevicesPerContext) +
                             " devices need a libcoap built with epoll");
  }

  devices_.reserve(static_cast<size_t>(opts_.devices));
  for (int i = 0; i < opts_.devices; ++i) bindDevice(i);
  // After the devices: our SO_REUSEADDR socket on port P would make their plain probe
  // binds fail.
  if (!opts_.multicast.empty()) openMulticast();
  logSenml();
  std::printf("READY %d\n", opts_.devices);
  std::fflush(stdout);
}

void Simulator::openMulticast() {
  const bool one_group = opts_.multicast.size() == 1;
  mcast_fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (mcast_fd_ < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  int one = 1;
  if (::setsockopt(mcast_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0) {
    throw std::runtime_error(std::string("SO_REUSEADDR: ") + std::strerror(errno));
  }
  // Only the groups we joined, not every group some other socket on the host joined.
  int zero = 0;
  ::setsockopt(mcast_fd_, IPPROTO_IP, IP_MULTICAST_ALL, &zero, sizeof(zero));
  sockaddr_in local{};
  local.sin_family = AF_INET;
  local.sin_port = htons(static_cast<uint16_t>(opts_.port));
  local.sin_addr.s_addr = one_group ? opts_.multicast.front().s_addr : htonl(INADDR_ANY);
  char group_text[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &local.sin_addr, group_text, sizeof(group_text));
  if (::bind(mcast_fd_, reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0) {
    throw std::runtime_error(std::string("bind ") + group_text + ":" + std::to_string(opts_.port) +
                             ": " + std::strerror(errno));
  }
  for (const in_addr& group : opts_.multicast) {
    // The interface is the one holding the devices' addresses (found by address).
    ip_mreqn mreq{};
    mreq.imr_multiaddr = group;
    mreq.imr_address = device_v4_.front();
    mreq.imr_ifindex = 0;
    if (::setsockopt(mcast_fd_, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mreq, sizeof(mreq)) != 0) {
      char text[INET_ADDRSTRLEN] = {};
      inet_ntop(AF_INET, &group, text, sizeof(text));
      throw std::runtime_error(std::string("joining ") + text + ": " + std::strerror(errno) +
                               " (is there a multicast route, e.g. 224.0.0.0/4 dev lo, and"
                               " is the interface MULTICAST?)");
    }
  }
}

void Simulator::readMulticast() {
  for (;;) {
    uint8_t buf[1500];
    sockaddr_in from{};
    socklen_t from_len = sizeof(from);
    ssize_t n =
        ::recvfrom(mcast_fd_, buf, sizeof(buf), 0, reinterpret_cast<sockaddr*>(&from), &from_len);
    if (n < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        std::fprintf(stderr, "multicast recvfrom: %s\n", std::strerror(errno));
      }
      return;
    }
    std::string why;
    auto req = parseDiscoveryRequest(buf, static_cast<size_t>(n), &why);
    if (!req) {
      std::fprintf(stderr, "multicast: ignored a datagram: %s\n", why.c_str());
      continue;
    }
    const std::string links = wellKnown(req->query);
    int scheduled = 0;
    if (!links.empty()) {
      if (links.size() >= 1024) {
        std::fprintf(stderr, "multicast: link-format of %zu bytes would need Block2\n",
                     links.size());
      }
      auto datagram = std::make_shared<const std::string>(encodeDiscoveryAnswer(*req, links));
      const auto now = std::chrono::steady_clock::now();
      std::uniform_int_distribution<int> delay_us(0, opts_.leisure_ms * 1000 - 1);
      for (int i = 0; i < static_cast<int>(device_v4_.size()); ++i) {
        pending_.push({now + std::chrono::microseconds(delay_us(leisure_rng_)), i, datagram, from});
        ++scheduled;
      }
    }
    std::printf("MCAST %d\n", scheduled);
    std::fflush(stdout);
  }
}

bool Simulator::sendDueAnswers(std::chrono::steady_clock::time_point now) {
  while (!pending_.empty() && pending_.top().due <= now) {
    const PendingAnswer& a = pending_.top();
    iovec iov{const_cast<char*>(a.datagram->data()), a.datagram->size()};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(in_pktinfo))] = {};
    msghdr msg{};
    sockaddr_in to = a.to;
    msg.msg_name = &to;
    msg.msg_namelen = sizeof(to);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    cmsghdr* cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = IPPROTO_IP;
    cm->cmsg_type = IP_PKTINFO;
    cm->cmsg_len = CMSG_LEN(sizeof(in_pktinfo));
    in_pktinfo info{};
    info.ipi_spec_dst = device_v4_[static_cast<size_t>(a.device)];  // our source address
    std::memcpy(CMSG_DATA(cm), &info, sizeof(info));
    if (::sendmsg(mcast_fd_, &msg, MSG_DONTWAIT) < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS || errno == EINTR) {
        return false;  // keep it; the loop comes back within a millisecond
      }
      std::fprintf(stderr, "multicast answer of %s: sendmsg: %s\n",
                   devices_[static_cast<size_t>(a.device)].name.c_str(), std::strerror(errno));
    }
    pending_.pop();
  }
  return true;
}

void Simulator::tick() {
  const std::int64_t now_ms = epochMs();
  for (Device& d : devices_) {
    std::uniform_real_distribution<double> step(-0.25, 0.25);
    const double previous = d.temp;
    double before = std::round(d.temp * 100.0);
    d.temp = std::clamp(d.temp + step(d.rng), 15.0, 30.0);
    if (std::round(d.temp * 100.0) == before) d.temp += 0.01;  // always a new value
    d.trend = d.temp > previous ? "up" : "down";
    ++d.seq;
    d.updated_ms = now_ms;
  }
  notifyAll(Kind::Temp);
  notifyAll(Kind::Counter);
  if (opts_.senml) {
    logSenml();  // before the notifications leave (prepareIo): a test that sees one can
                 // already read the pack it carries
    notifyAll(Kind::SenmlJson);
    notifyAll(Kind::SenmlCbor);
  }
  if (opts_.stamp) notifyAll(Kind::Stamp);
}

void Simulator::notifyAll(Kind kind) {
  for (Shard& shard : shards_) coap_resource_notify_observers(shard.resources.at(kind), nullptr);
}

void Simulator::noteCounterSent(const Device& dev, const coap_session_t* session,
                                bool notification) {
  auto [it, fresh] = counter_sent_.try_emplace(std::make_pair(session, &dev), dev.seq);
  if (!fresh && notification && dev.seq > it->second + 1) {
    std::string line = "SKIP " + dev.name + " " + std::to_string(it->second + 1) + " " +
                       std::to_string(dev.seq - 1) + "\n";
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fflush(stdout);
  }
  it->second = dev.seq;
}

void Simulator::logSenml() const {
  if (!opts_.senml) return;
  for (const Device& d : devices_) {
    const std::string line = "SENML " + d.name + " " + senmlJson(senmlPack(d)) + "\n";
    std::fwrite(line.data(), 1, line.size(), stdout);
  }
  std::fflush(stdout);
}

// Sends pending notifications (and retransmits) with in_prepare_ set; see the file header.
void Simulator::prepareIo() {
  for (Shard& shard : shards_) prepareIo(shard.ctx);
}

void Simulator::prepareIo(coap_context_t* ctx) {
  coap_tick_t now;
  coap_ticks(&now);
  in_prepare_ = true;
  if (epoll_) {
    coap_io_prepare_epoll(ctx, now);  // also arms the context's timerfd: its fd wakes us
  } else {
    coap_socket_t* sockets[64];
    unsigned int num = 0;
    coap_io_prepare_io(ctx, sockets, 64, &num, now);
  }
  in_prepare_ = false;
}

long Simulator::runDue(std::chrono::steady_clock::time_point& next_tick) {
  using Clock = std::chrono::steady_clock;
  const auto now = Clock::now();
  if (now >= next_tick) {
    tick();
    prepareIo();  // the notifications of every shard leave
    next_tick += std::chrono::milliseconds(opts_.interval_ms);
    if (next_tick <= now) {  // fell behind: don't burst
      next_tick = now + std::chrono::milliseconds(opts_.interval_ms);
    }
  }
  const bool socket_full = mcast_fd_ >= 0 && !sendDueAnswers(now);
  auto until = next_tick;
  if (!pending_.empty()) until = std::min(until, pending_.top().due);
  const auto wait = std::chrono::ceil<std::chrono::milliseconds>(until - Clock::now());
  const long wait_ms = std::clamp<long>(wait.count(), 0, 250);
  return socket_full ? std::min<long>(wait_ms, 1) : wait_ms;  // a full socket: again soon
}

void Simulator::run() {
  if (shards_.size() > 1) {
    runShards();
    return;
  }
  coap_context_t* ctx = shards_.front().ctx;
  auto next_tick = std::chrono::steady_clock::now() + std::chrono::milliseconds(opts_.interval_ms);
  const int coap_fd = coap_context_get_coap_fd(ctx);
  while (g_stop == 0) {
    const long wait_ms = runDue(next_tick);
    prepareIo();
    int rc = 0;
    if (mcast_fd_ < 0) {
      rc = coap_io_process(ctx, static_cast<uint32_t>(std::max<long>(wait_ms, 1)));  // 0 blocks
    } else if (epoll_) {
      // Wait for libcoap's epoll fd and our multicast socket together.
      pollfd fds[2] = {{coap_fd, POLLIN, 0}, {mcast_fd_, POLLIN, 0}};
      ::poll(fds, 2, static_cast<int>(wait_ms));  // EINTR: the loop checks g_stop
      if ((fds[1].revents & POLLIN) != 0) readMulticast();
      rc = coap_io_process(ctx, COAP_IO_NO_WAIT);
    } else {
      rc = coap_io_process(ctx, static_cast<uint32_t>(std::clamp<long>(wait_ms, 1, 5)));
      readMulticast();
    }
    if (rc < 0) {
      std::fprintf(stderr, "coap_io_process failed\n");
      break;
    }
  }
}

void Simulator::runShards() {
  const int epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd < 0) throw std::runtime_error(std::string("epoll_create1: ") + std::strerror(errno));
  constexpr std::uint32_t kMulticast = UINT32_MAX;
  auto watch = [epoll_fd](int fd, std::uint32_t tag) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = tag;
    if (::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) {
      throw std::runtime_error(std::string("epoll_ctl: ") + std::strerror(errno));
    }
  };
  for (std::size_t i = 0; i < shards_.size(); ++i) {
    watch(coap_context_get_coap_fd(shards_[i].ctx), static_cast<std::uint32_t>(i));
  }
  if (mcast_fd_ >= 0) watch(mcast_fd_, kMulticast);
  prepareIo();  // arms every context's timerfd
  auto next_tick = std::chrono::steady_clock::now() + std::chrono::milliseconds(opts_.interval_ms);
  epoll_event events[64];
  while (g_stop == 0) {
    const long wait_ms = runDue(next_tick);
    // Retransmissions and other libcoap timers: each context's timerfd is in its epoll set.
    const int n = ::epoll_wait(epoll_fd, events, 64, static_cast<int>(wait_ms));
    for (int i = 0; i < n; ++i) {  // n < 0: EINTR, the loop checks g_stop
      if (events[i].data.u32 == kMulticast) {
        readMulticast();
        continue;
      }
      coap_context_t* ctx = shards_[events[i].data.u32].ctx;
      prepareIo(ctx);
      if (coap_io_process(ctx, COAP_IO_NO_WAIT) < 0) {
        std::fprintf(stderr, "coap_io_process failed\n");
        g_stop = 1;
      }
    }
  }
  ::close(epoll_fd);
}

void Simulator::onRequest(coap_resource_t* resource, coap_session_t* session,
                          const coap_pdu_t* request, const coap_string_t* query,
                          coap_pdu_t* response) noexcept {
  try {
    auto* self = static_cast<Simulator*>(coap_get_app_data(coap_session_get_context(session)));
    const auto* spec = static_cast<const ResourceSpec*>(coap_resource_get_userdata(resource));
    if (self == nullptr || spec == nullptr) {
      coap_pdu_set_code(response, COAP_RESPONSE_CODE_INTERNAL_ERROR);
      return;
    }
    auto it = self->by_address_.find(addressKey(coap_session_get_addr_local(session)));
    if (it == self->by_address_.end()) {
      std::fprintf(stderr, "request on an address that is no device\n");
      coap_pdu_set_code(response, COAP_RESPONSE_CODE_INTERNAL_ERROR);
      return;
    }
    // A real request's response is an ACK (CON request) or NON (NON request); a
    // notification's is pre-set to CON or NON by libcoap.
    coap_pdu_type_t rtype = coap_pdu_get_type(response);
    bool notification =
        self->in_prepare_ || rtype == COAP_MESSAGE_CON ||
        (rtype == COAP_MESSAGE_NON && coap_pdu_get_type(request) == COAP_MESSAGE_CON);
    self->handle(*spec, self->devices_[static_cast<size_t>(it->second)], resource, session, request,
                 query, response, notification);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "handler error: %s\n", e.what());
    coap_pdu_set_code(response, COAP_RESPONSE_CODE_INTERNAL_ERROR);
  } catch (...) {
    coap_pdu_set_code(response, COAP_RESPONSE_CODE_INTERNAL_ERROR);
  }
}

void Simulator::respond(coap_resource_t* resource, coap_session_t* session,
                        const coap_pdu_t* request, const coap_string_t* query, coap_pdu_t* response,
                        coap_pdu_code_t code, int ct, int max_age, const std::string& body) {
  coap_pdu_set_code(response, code);
  if (ct == COAP_MEDIATYPE_TEXT_PLAIN) {
    // coap_add_data_large_response() (4.3.1) omits Content-Format when it is 0.
    coap_add_option(response, COAP_OPTION_CONTENT_FORMAT, 0, nullptr);
  }
  // The data must outlive a possible Block2 transfer: hand libcoap a malloc'd copy and let
  // it free it (release_func is called on every path, also when the body fits one PDU).
  auto* copy = static_cast<uint8_t*>(std::malloc(body.size() + 1));
  if (copy == nullptr) throw std::bad_alloc();
  std::memcpy(copy, body.data(), body.size());
  coap_add_data_large_response(
      resource, session, request, response, query, static_cast<uint16_t>(ct), max_age, 0,
      body.size(), copy, [](coap_session_t*, void* p) { std::free(p); }, copy);
}

std::string Simulator::wellKnown(std::string_view query) const {
  std::vector<const ResourceSpec*> listed;
  for (const ResourceSpec& spec : kResources) listed.push_back(&spec);
  if (opts_.senml) {
    for (const ResourceSpec& spec : kSenmlResources) listed.push_back(&spec);
  }
  if (opts_.stamp) listed.push_back(&kStamp);
  std::string out;
  for (const ResourceSpec* listed_spec : listed) {
    const ResourceSpec& spec = *listed_spec;
    if (!linkMatches(spec, query)) continue;
    unsigned char buf[256];
    size_t len = sizeof(buf);
    size_t offset = 0;
    coap_print_status_t st =
        coap_print_link(shards_.front().resources.at(spec.kind), buf, &len, &offset);
    if ((st & COAP_PRINT_STATUS_ERROR) != 0 || (st & COAP_PRINT_STATUS_TRUNC) != 0) {
      throw std::runtime_error("coap_print_link failed");
    }
    if (!out.empty()) out += ',';
    out.append(reinterpret_cast<const char*>(buf), COAP_PRINT_OUTPUT_LENGTH(st));
  }
  return out;
}

void Simulator::handle(const ResourceSpec& spec, Device& dev, coap_resource_t* resource,
                       coap_session_t* session, const coap_pdu_t* request,
                       const coap_string_t* query, coap_pdu_t* response, bool notification) {
  coap_pdu_code_t code = coap_pdu_get_code(request);
  size_t len = 0;
  size_t offset = 0;
  size_t total = 0;
  const uint8_t* data = nullptr;
  if (coap_get_data_large(request, &len, &data, &offset, &total) == 0) len = 0;
  std::string payload(reinterpret_cast<const char*>(data), data != nullptr ? len : 0);
  std::string_view q =
      query != nullptr ? std::string_view(reinterpret_cast<const char*>(query->s), query->length)
                       : std::string_view();

  if (!notification) {
    std::string path = "/";
    if (coap_string_t* p = coap_get_uri_path(request)) {
      path.append(reinterpret_cast<const char*>(p->s), p->length);
      coap_delete_string(p);
    }
    if (!q.empty()) path.append("?").append(q);
    std::string line = "REQ " + dev.name + " " + methodName(code) + " " + path;
    if (spec.kind == Kind::Blob && !payload.empty()) {
      line += " " + blobSummary(payload);
    } else if (!payload.empty()) {
      line += " " + printablePayload(data, len);
    }
    line += "\n";
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fflush(stdout);
  }

  if (spec.kind == Kind::Unknown) {
    coap_pdu_set_code(response, COAP_RESPONSE_CODE_NOT_FOUND);
    return;
  }
  if ((spec.methods & (1u << static_cast<unsigned>(code))) == 0) {
    coap_pdu_set_code(response, COAP_RESPONSE_CODE_NOT_ALLOWED);
    return;
  }

  char text[64];
  switch (spec.kind) {
    case Kind::Temp:
      std::snprintf(text, sizeof(text), "%.2f", dev.temp);
      respond(resource, session, request, query, response, COAP_RESPONSE_CODE_CONTENT, spec.ct,
              opts_.max_age, text);
      return;
    case Kind::Counter:
      noteCounterSent(dev, session, notification);
      respond(resource, session, request, query, response, COAP_RESPONSE_CODE_CONTENT, spec.ct,
              opts_.max_age,
              "{\"seq\":" + std::to_string(dev.seq) + ",\"device\":\"" + dev.name + "\"}");
      return;
    case Kind::Info:
      respond(resource, session, request, query, response, COAP_RESPONSE_CODE_CONTENT, spec.ct, -1,
              "{\"name\":\"" + dev.name + "\",\"model\":\"c2m-sim\"}");
      return;
    case Kind::Led:
      if (code == COAP_REQUEST_CODE_GET) {
        respond(resource, session, request, query, response, COAP_RESPONSE_CODE_CONTENT, spec.ct,
                -1, dev.led);
        return;
      } else {
        std::string value = payload;
        if (code == COAP_REQUEST_CODE_POST && value.empty()) {
          value = dev.led == "on" ? "off" : "on";  // POST without a body toggles
        }
        bool changed = value != dev.led;
        dev.led = value;
        coap_pdu_set_code(response, COAP_RESPONSE_CODE_CHANGED);
        if (changed) coap_resource_notify_observers(resource, nullptr);
        return;
      }
    case Kind::ConfigName:
      if (code == COAP_REQUEST_CODE_GET) {
        respond(resource, session, request, query, response, COAP_RESPONSE_CODE_CONTENT, spec.ct,
                -1, dev.config_name);
      } else {
        dev.config_name = payload;
        coap_pdu_set_code(response, COAP_RESPONSE_CODE_CHANGED);
      }
      return;
    case Kind::Blob:
      if (code == COAP_REQUEST_CODE_GET) {
        respond(resource, session, request, query, response, COAP_RESPONSE_CODE_CONTENT, spec.ct,
                -1, dev.blob);
      } else {
        dev.blob = blobSummary(payload);
        coap_pdu_set_code(response, COAP_RESPONSE_CODE_CHANGED);
      }
      return;
    case Kind::SenmlJson:
      respond(resource, session, request, query, response, COAP_RESPONSE_CODE_CONTENT, spec.ct,
              opts_.max_age, senmlJson(senmlPack(dev)));
      return;
    case Kind::SenmlCbor:
      respond(resource, session, request, query, response, COAP_RESPONSE_CODE_CONTENT, spec.ct,
              opts_.max_age, senmlCbor(senmlPack(dev)));
      return;
    case Kind::Stamp:
      respond(resource, session, request, query, response, COAP_RESPONSE_CODE_CONTENT, spec.ct,
              opts_.max_age, std::to_string(epochUs()));
      return;
    case Kind::WellKnown:
      respond(resource, session, request, query, response, COAP_RESPONSE_CODE_CONTENT, spec.ct, -1,
              wellKnown(q));
      return;
    case Kind::Unknown:
      break;
  }
}

void logToStderr(coap_log_t level, const char* message) {
  std::fprintf(stderr, "libcoap[%d]: %s", static_cast<int>(level), message);
}

void raiseFdLimit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
      std::fprintf(stderr, "setrlimit(RLIMIT_NOFILE): %s\n", std::strerror(errno));
    }
  }
}

struct CoapLibrary {
  CoapLibrary() { coap_startup(); }
  ~CoapLibrary() { coap_cleanup(); }
  CoapLibrary(const CoapLibrary&) = delete;
  CoapLibrary& operator=(const CoapLibrary&) = delete;
};

}  // namespace

int main(int argc, char** argv) {
  Options opts;
  try {
    opts = parseOptions(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "coap2mqtt-sim: %s\n%s", e.what(), kUsage);
    return 2;
  }

  struct sigaction sa {};
  sa.sa_handler = onSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: epoll_wait returns EINTR and the loop sees g_stop
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  raiseFdLimit();
  CoapLibrary lib;
  coap_set_log_handler(logToStderr);
  coap_set_log_level(static_cast<coap_log_t>(opts.log_level));

  try {
    Simulator sim(opts);
    sim.start();
    sim.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "coap2mqtt-sim: %s\n", e.what());
    return 1;
  }
  return 0;
}
