#include "tests/integration/harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mqtt/async_client.h>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace coap2mqtt::test {

namespace {

std::string errnoText(const std::string& what, int err) {
  return what + ": " + std::strerror(err);
}

// RAII for a plain fd.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

sockaddr_in loopback(uint32_t host_order_addr, int port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(host_order_addr);
  sa.sin_port = htons(static_cast<uint16_t>(port));
  return sa;
}

// Binds a socket of `type` to addr:port *without* SO_REUSEADDR (libcoap and mosquitto set
// it, so our bind fails if either holds the port). Returns the open socket or -1.
int tryBind(int type, uint32_t host_order_addr, int port) {
  int fd = ::socket(AF_INET, type | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(errnoText("socket", errno));
  sockaddr_in sa = loopback(host_order_addr, port);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// A socket of `type` bound to 127.0.0.1 on a port the OS picks; its port in `*port`.
Fd bindOsPickedPort(int type, int* port) {
  Fd fd(tryBind(type, INADDR_LOOPBACK, 0));
  if (fd.get() < 0) throw std::runtime_error(errnoText("bind 127.0.0.1:0", errno));
  sockaddr_in sa{};
  socklen_t len = sizeof(sa);
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
    throw std::runtime_error(errnoText("getsockname", errno));
  }
  *port = ntohs(sa.sin_port);
  return fd;
}

int osPickedPort(int type) {
  int port = 0;
  bindOsPickedPort(type, &port);
  return port;
}

std::mt19937& rng() {
  static std::mt19937 gen(std::random_device{}() ^ static_cast<unsigned>(::getpid()));
  return gen;
}

// Ports below Linux's ephemeral range (32768-60999), so that client sockets the kernel
// hands out (coap-client, the gateway) never land inside a range we picked.
constexpr int kRangeLow = 20000;
constexpr int kRangeHigh = 32767;

// Claims on picked ports across the test processes of this machine (ctest runs many at
// once): a file per port, created exclusively, which other pickers skip until it is
// kClaimLife old. Between a pick and the bind of whoever gets the port (a simulator
// starting up) the port is free, and a second process's random range could overlap it: in
// CI two did (Simulator.RefusesPortsAlreadyInUse's first simulator found its port taken,
// 2026-12-04). Once bound, the bind itself keeps others off; the claim only covers that gap.
constexpr auto kClaimLife = std::chrono::seconds(120);

std::string claimDir() {
  static const std::string dir = [] {
    std::string d = "/tmp/c2m-port-claims-" + std::to_string(::getuid());
    ::mkdir(d.c_str(), 0700);
    return d;
  }();
  return dir;
}

// Claims `port`, taking over a claim older than kClaimLife. False when another holds it.
bool claimPort(int port) {
  const std::string file = claimDir() + "/" + std::to_string(port);
  for (int attempt = 0; attempt < 2; ++attempt) {
    const int fd = ::open(file.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (fd >= 0) {
      ::close(fd);
      return true;
    }
    std::error_code ec;
    const auto written = std::filesystem::last_write_time(file, ec);
    if (ec) continue;  // released meanwhile: try again
    if (std::filesystem::file_time_type::clock::now() - written < kClaimLife) return false;
    std::filesystem::remove(file, ec);  // stale: a claim no bind followed in time
  }
  return false;
}

void releaseClaims(int base, int count) {
  for (int i = 0; i < count; ++i) {
    std::error_code ec;
    std::filesystem::remove(claimDir() + "/" + std::to_string(base + i), ec);
  }
}

// `count` ports from `base` are free on each of `addresses` consecutive addresses from
// `host_order_addr`, and claimed for this process; false and no claim left behind otherwise.
bool takeRange(uint32_t host_order_addr, int addresses, int base, int count) {
  std::vector<Fd> held;
  for (int i = 0; i < count; ++i) {
    if (!claimPort(base + i)) {
      releaseClaims(base, i);
      return false;
    }
  }
  for (int a = 0; a < addresses; ++a) {
    for (int i = 0; i < count; ++i) {
      int fd = tryBind(SOCK_DGRAM, host_order_addr + static_cast<uint32_t>(a), base + i);
      if (fd < 0) {
        releaseClaims(base, count);
        return false;
      }
      held.emplace_back(fd);
    }
  }
  return true;
}

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string findExecutable(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  std::string path = std::getenv("PATH") != nullptr ? std::getenv("PATH") : "";
  path += ":/usr/local/sbin:/usr/sbin:/sbin";
  std::stringstream ss(path);
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    if (dir.empty()) continue;
    std::string candidate = dir + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  throw std::runtime_error("executable not found: " + name);
}

std::size_t countOccurrences(const std::string& hay, const std::string& needle) {
  if (needle.empty()) return 0;
  std::size_t n = 0;
  for (std::size_t pos = hay.find(needle); pos != std::string::npos;
       pos = hay.find(needle, pos + needle.size())) {
    ++n;
  }
  return n;
}

// Waits for `pid` to exit, up to `timeout`. Returns true and sets *status if it did.
bool waitPid(int pid, std::chrono::milliseconds timeout, int* status) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int st = 0;
    pid_t r = ::waitpid(pid, &st, WNOHANG);
    if (r == pid) {
      *status = st;
      return true;
    }
    if (r < 0 && errno != EINTR) {
      *status = 0;
      return true;  // not our child any more (ECHILD): nothing left to wait for
    }
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
}

int decodeStatus(int st) {
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
  return -1;
}

// Sends a minimal MQTT 3.1.1 CONNECT and expects CONNACK "accepted".
bool mqttConnectWorks(int port) {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return false;
  timeval tv{1, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_in sa = loopback(INADDR_LOOPBACK, port);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) return false;
  const std::string id = "c2m-ready-" + std::to_string(::getpid());
  std::string pkt;
  std::string var = std::string("\x00\x04MQTT\x04\x02\x00\x05", 10);  // clean session, 5 s
  var += static_cast<char>(id.size() >> 8);
  var += static_cast<char>(id.size() & 0xff);
  var += id;
  pkt += '\x10';
  pkt += static_cast<char>(var.size());  // < 128
  pkt += var;
  pkt += std::string("\xe0\x00", 2);  // DISCONNECT right behind it
  if (::send(fd.get(), pkt.data(), pkt.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(pkt.size())) {
    return false;
  }
  unsigned char ack[4] = {};
  std::size_t got = 0;
  while (got < sizeof(ack)) {
    ssize_t n = ::recv(fd.get(), ack + got, sizeof(ack) - got, 0);
    if (n <= 0) return false;
    got += static_cast<std::size_t>(n);
  }
  return ack[0] == 0x20 && ack[1] == 0x02 && ack[3] == 0x00;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Ports

int freeTcpPort() {
  return osPickedPort(SOCK_STREAM);
}
int freeUdpPort() {
  return osPickedPort(SOCK_DGRAM);
}
int bindLoopbackUdp(int* port) {
  return bindOsPickedPort(SOCK_DGRAM, port).release();
}

HeldTcpPort::HeldTcpPort() : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
  if (fd_ < 0) throw std::runtime_error("HeldTcpPort: socket failed");
  int yes = 1;
  ::setsockopt(fd_, SOL_SOCKET, SO_REUSEPORT, &yes, sizeof yes);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd_, 4) != 0 ||
      ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd_);
    throw std::runtime_error("HeldTcpPort: bind/listen failed");
  }
  port_ = ntohs(addr.sin_port);
}

HeldTcpPort::~HeldTcpPort() {
  ::close(fd_);
}

int freeUdpPortRange(int count) {
  if (count <= 0 || count > kRangeHigh - kRangeLow) {
    throw std::invalid_argument("freeUdpPortRange: bad count");
  }
  // A random base (not the first free one), claimed (see claimPort): tests running in
  // parallel neither race for the same range nor keep probing the same taken one.
  std::uniform_int_distribution<int> dist(kRangeLow, kRangeHigh - count + 1);
  for (int attempt = 0; attempt < 200; ++attempt) {
    const int base = dist(rng());
    if (takeRange(INADDR_LOOPBACK, 1, base, count)) return base;
  }
  throw std::runtime_error("no range of " + std::to_string(count) + " free UDP ports");
}

int freeUdpPortOnAddresses(const std::string& first_ipv4, int count) {
  in_addr first{};
  if (inet_pton(AF_INET, first_ipv4.c_str(), &first) != 1) {
    throw std::invalid_argument("not an IPv4 address: " + first_ipv4);
  }
  std::uniform_int_distribution<int> dist(kRangeLow, kRangeHigh);
  for (int attempt = 0; attempt < 200; ++attempt) {
    const int port = dist(rng());
    if (takeRange(ntohl(first.s_addr), count, port, 1)) return port;
  }
  throw std::runtime_error("no UDP port free on " + std::to_string(count) + " addresses");
}

// ---------------------------------------------------------------------------------------
// TempDir

TempDir::TempDir() {
  std::string tmpl = "/tmp/c2m-test-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error(errnoText("mkdtemp", errno));
  path_ = tmpl;
  if (::chmod(path_.c_str(), 0777) != 0) throw std::runtime_error(errnoText("chmod", errno));
}

TempDir::~TempDir() {
  if (std::getenv("C2M_KEEP_TMP") != nullptr) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void TempDir::write(const std::string& name, const std::string& content) const {
  std::string p = file(name);
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << content;
  out.close();
  if (!out) throw std::runtime_error("cannot write " + p);
  ::chmod(p.c_str(), 0666);  // readable by daemons that drop privileges
}

// ---------------------------------------------------------------------------------------
// Process

Process::Process(std::vector<std::string> argv, std::string log_file)
    : log_file_(std::move(log_file)) {
  if (argv.empty()) throw std::invalid_argument("Process: empty argv");
  std::string exe = findExecutable(argv[0]);
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);

  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, log_file_.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0666);
  posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
  // Own process group (signals go to the whole group), default signal dispositions and an
  // empty mask whatever the test runner set up.
  sigset_t empty, all;
  sigemptyset(&empty);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &empty);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid = -1;
  int rc = ::posix_spawn(&pid, exe.c_str(), &fa, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) throw std::runtime_error(errnoText("posix_spawn " + exe, rc));
  pid_ = pid;
}

Process::~Process() {
  if (pid_ <= 0 || reaped_) return;
  ::kill(-pid_, SIGTERM);
  int st = 0;
  if (!waitPid(pid_, 3s, &st)) {
    ::kill(-pid_, SIGKILL);
    while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
  }
  // Anything else left in the group (children of the child) goes too.
  ::kill(-pid_, SIGKILL);
}

bool Process::running() {
  if (reaped_) return false;
  int st = 0;
  pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_ || (r < 0 && errno == ECHILD)) {
    reaped_ = true;
    status_ = st;
    return false;
  }
  return true;
}

int Process::stop(int sig, std::chrono::milliseconds timeout) {
  if (!reaped_) {
    ::kill(-pid_, sig);
    int st = 0;
    if (!waitPid(pid_, timeout, &st)) return -1;
    reaped_ = true;
    status_ = st;
  }
  return decodeStatus(status_);
}

std::string Process::output() const {
  return readFile(log_file_);
}

bool Process::waitForOutput(const std::string& needle, std::chrono::milliseconds timeout) {
  return waitUntil([&] { return output().find(needle) != std::string::npos; }, timeout);
}

std::size_t Process::countInOutput(const std::string& needle) const {
  return countOccurrences(output(), needle);
}

bool waitUntil(const std::function<bool()>& cond, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (cond()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return cond();
    std::this_thread::sleep_for(20ms);
  }
}

// ---------------------------------------------------------------------------------------
// Mosquitto

Mosquitto::Mosquitto() : Mosquitto(Options{}) {}

Mosquitto::Mosquitto(Options options) : port_(freeTcpPort()) {
  // Started as root, mosquitto drops to the `mosquitto` user after reading this file: the
  // directory is 0777, the conf 0666, logging goes to the inherited stdout (our log file,
  // opened before the drop).
  std::string persistence = "persistence false\n";
  if (options.persistence) {
    // Unlimited queues: a persistent subscriber that is away must not lose anything.
    persistence = "persistence true\npersistence_location " + dir_.path() +
                  "/\nautosave_interval 1\nmax_queued_messages 0\n";
  }
  // mosquitto wants this before any listener or security setting.
  const std::string per_listener =
      options.per_listener_settings ? "per_listener_settings true\n" : "";
  dir_.write("mosquitto.conf", per_listener + "listener " + std::to_string(port_) +
                                   " 127.0.0.1\n"
                                   "allow_anonymous true\n" +
                                   persistence +
                                   "log_dest stdout\n"
                                   "log_type error\nlog_type warning\nlog_type notice\n"
                                   "log_type information\n"
                                   "connection_messages true\n" +
                                   options.extra_conf);
  start();
}

Mosquitto::~Mosquitto() = default;

void Mosquitto::stop() {
  if (!proc_) return;
  proc_->stop(SIGTERM, 5s);
  proc_.reset();
}

void Mosquitto::start() {
  static std::atomic<int> starts{0};
  stop();
  std::string log = dir_.file("mosquitto-" + std::to_string(++starts) + ".log");
  proc_ = std::make_unique<Process>(
      std::vector<std::string>{"mosquitto", "-c", dir_.file("mosquitto.conf")}, log);
  bool ready = waitUntil([&] { return !proc_->running() || mqttConnectWorks(port_); }, 10s);
  if (!ready || !proc_->running()) {
    std::string out = proc_->output();
    proc_.reset();
    throw std::runtime_error("mosquitto did not come up on port " + std::to_string(port_) + ":\n" +
                             out);
  }
}

// ---------------------------------------------------------------------------------------
// MqttProbe

struct MqttProbe::Impl {
  mutable std::mutex mu;
  mutable std::condition_variable cv;
  std::vector<MqttMessage> messages;
  // Last: destroyed first, so paho's thread is gone before the state its callback uses.
  std::unique_ptr<mqtt::async_client> client;
};

MqttProbe::MqttProbe(int port, const std::string& filter) : MqttProbe(port, filter, Options{}) {}

MqttProbe::MqttProbe(int port, const std::string& filter, const Options& options)
    : impl_(std::make_unique<Impl>()) {
  static std::atomic<int> counter{0};
  const bool persistent = !options.persistent_id.empty();
  std::string id =
      persistent ? options.persistent_id
                 : "c2m-probe-" + std::to_string(::getpid()) + "-" + std::to_string(++counter);
  impl_->client =
      std::make_unique<mqtt::async_client>("tcp://127.0.0.1:" + std::to_string(port), id);
  Impl* impl = impl_.get();
  impl_->client->set_message_callback([impl](mqtt::const_message_ptr msg) {
    MqttMessage m;
    m.topic = msg->get_topic();
    m.payload = msg->get_payload_str();
    m.qos = msg->get_qos();
    m.retained = msg->is_retained();
    m.received = std::chrono::steady_clock::now();
    {
      std::lock_guard<std::mutex> lock(impl->mu);
      impl->messages.push_back(std::move(m));
    }
    impl->cv.notify_all();
  });
  mqtt::connect_options opts;
  opts.set_clean_session(!persistent);
  opts.set_keep_alive_interval(std::chrono::seconds(persistent ? 2 : 10));
  opts.set_connect_timeout(std::chrono::seconds(5));
  // The broker keeps a persistent session's subscription: reconnecting is enough.
  if (persistent) opts.set_automatic_reconnect(std::chrono::seconds(1), std::chrono::seconds(1));
  impl_->client->connect(opts)->wait();
  impl_->client->subscribe(filter, 1)->wait();
}

bool MqttProbe::connected() const {
  return impl_->client->is_connected();
}

MqttProbe::~MqttProbe() {
  try {
    if (impl_->client->is_connected()) impl_->client->disconnect()->wait_for(2s);
  } catch (...) {
  }
}

std::vector<MqttMessage> MqttProbe::messages() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->messages;
}

std::vector<MqttMessage> MqttProbe::messagesOn(const std::string& topic) const {
  std::vector<MqttMessage> out;
  std::lock_guard<std::mutex> lock(impl_->mu);
  for (const auto& m : impl_->messages) {
    if (m.topic == topic) out.push_back(m);
  }
  return out;
}

bool MqttProbe::waitFor(const std::function<bool(const std::vector<MqttMessage>&)>& pred,
                        std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(impl_->mu);
  return impl_->cv.wait_for(lock, timeout, [&] { return pred(impl_->messages); });
}

bool MqttProbe::waitForCount(const std::string& topic, std::size_t count,
                             std::chrono::milliseconds timeout) const {
  return waitFor(
      [&](const std::vector<MqttMessage>& msgs) {
        std::size_t n = 0;
        for (const auto& m : msgs) n += m.topic == topic ? 1 : 0;
        return n >= count;
      },
      timeout);
}

void MqttProbe::publish(const std::string& topic, const std::string& payload, int qos,
                        bool retain) {
  impl_->client->publish(topic, payload.data(), payload.size(), qos, retain)->wait();
}

// ---------------------------------------------------------------------------------------
// coap-client

namespace {

// Runs coap-client-openssl with `-v 6` and returns its combined stdout+stderr.
//
// How codes are read: coap-client 4.3.1 exits 0 whatever happens and prints nothing for a
// 2.xx response; for 4.xx/5.xx it prints "4.04[ diagnostic]" on stderr. With -v 6
// (LOG_INFO) it logs every PDU it sends or receives as one line on stdout:
//   v:1 t:ACK c:2.05 i:33e2 {01} [ Content-Format:text/plain, Max-Age:60 ] :: '20.20'
// Requests show "c:GET" etc. and empty ACKs "c:0.00", so the lines whose third field is
// "c:D.DD" (not 0.00) are the responses; the last one is the final answer (Block2 gives
// one line per block, a separate response a CON line after the empty ACK). A timeout or an
// ICMP error leaves no such line: code "".
std::string runCoapClient(std::vector<std::string> args, std::chrono::seconds limit,
                          const TempDir& dir) {
  args.insert(args.begin(), {"coap-client-openssl", "-v", "6"});
  Process p(args, dir.file("coap-client.log"));
  int st = p.stop(0, limit + 5s);  // signal 0: just wait
  if (st == -1) {
    p.stop(SIGKILL, 2s);
  }
  return p.output();
}

struct PduLine {
  std::string code;
  std::string payload;
  bool has_payload = false;
};

std::vector<PduLine> responseLines(const std::string& log) {
  std::vector<PduLine> out;
  std::istringstream in(log);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("v:1 t:", 0) != 0) continue;
    std::istringstream fields(line);
    std::string v, t, c;
    fields >> v >> t >> c;
    if (c.size() != 6 || c.compare(0, 2, "c:") != 0 || c[3] != '.' ||
        !std::isdigit(static_cast<unsigned char>(c[2])) ||
        !std::isdigit(static_cast<unsigned char>(c[4])) ||
        !std::isdigit(static_cast<unsigned char>(c[5]))) {
      continue;
    }
    PduLine pl;
    pl.code = c.substr(2);
    if (pl.code == "0.00") continue;
    std::size_t p = line.find(" :: '");
    if (p != std::string::npos && line.size() >= p + 6 && line.back() == '\'') {
      pl.payload = line.substr(p + 5, line.size() - p - 6);
      pl.has_payload = true;
    }
    out.push_back(std::move(pl));
  }
  return out;
}

std::string lowercase(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

}  // namespace

CoapResult coapRequest(const std::string& method, const std::string& uri,
                       const std::string& payload, std::chrono::seconds timeout,
                       const std::vector<std::string>& options) {
  TempDir dir;
  std::vector<std::string> args = {"-m", lowercase(method),  "-B", std::to_string(timeout.count()),
                                   "-o", dir.file("payload")};
  if (!payload.empty()) {
    dir.write("request", payload);  // -f: any bytes, no quoting issues
    args.insert(args.end(), {"-f", dir.file("request")});
  }
  args.insert(args.end(), options.begin(), options.end());
  args.push_back(uri);
  std::string log = runCoapClient(args, timeout, dir);
  CoapResult r;
  auto lines = responseLines(log);
  if (!lines.empty()) r.code = lines.back().code;
  r.ok = !r.code.empty() && r.code[0] == '2';
  // -o writes the (reassembled) payload of a 2.xx response without a trailing newline.
  if (std::filesystem::exists(dir.file("payload"))) r.payload = readFile(dir.file("payload"));
  r.log = std::move(log);
  return r;
}

std::vector<CoapResult> coapObserve(const std::string& uri, std::chrono::seconds duration) {
  TempDir dir;
  // -o keeps the raw payloads off stdout, where they would run into the PDU log lines.
  std::string log =
      runCoapClient({"-s", std::to_string(duration.count()), "-B",
                     std::to_string(duration.count() + 2), "-o", dir.file("payload"), uri},
                    duration + 2s, dir);
  std::vector<CoapResult> out;
  for (auto& l : responseLines(log)) {
    CoapResult r;
    r.code = l.code;
    r.ok = l.code[0] == '2';
    r.payload = l.payload;
    out.push_back(std::move(r));
  }
  return out;
}

std::string gatewayBinary() {
  // Benchmarks compare builds: C2M_GATEWAY_BIN=<another build's binary> bench_observe ...
  const char* other = std::getenv("C2M_GATEWAY_BIN");
  return other != nullptr && *other != '\0' ? other : C2M_GATEWAY_BIN;
}
std::string simulatorBinary() {
  const char* other = std::getenv("C2M_SIM_BIN");
  return other != nullptr && *other != '\0' ? other : C2M_SIM_BIN;
}
bool gatewaySanitized() {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return true;
#else
  const char* flag = std::getenv("C2M_GATEWAY_SANITIZED");
  return flag != nullptr && *flag != '\0' && std::string(flag) != "0";
#endif
}
std::string sourceDir() {
  return C2M_SOURCE_DIR;
}

}  // namespace coap2mqtt::test
