#pragma once
// Integration-test harness: real processes on loopback, awaited by condition, never by sleep.
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace coap2mqtt::test {

using namespace std::chrono_literals;

// A free port on 127.0.0.1 (bound then released; the OS picks).
int freeTcpPort();
int freeUdpPort();
// A UDP socket bound to 127.0.0.1 on a port the OS picks, kept open: a device the test plays
// itself. Stores the port in `*port`; the caller closes the socket. Throws when it cannot.
int bindLoopbackUdp(int* port);
// `count` consecutive free UDP ports on 127.0.0.1 starting at the returned one. The base is
// random in 20000-32767 (below the kernel's ephemeral range) so parallel tests rarely race.
int freeUdpPortRange(int count);
// A UDP port free on each of `count` consecutive IPv4 addresses starting at `first_ipv4`
// (for coap2mqtt-sim --address-step).
int freeUdpPortOnAddresses(const std::string& first_ipv4, int count);

// A loopback TCP port kept listening for the object's lifetime, with SO_REUSEPORT (as
// cpp-httplib's default sets it): a server that binds it must fail, not share it.
class HeldTcpPort {
 public:
  HeldTcpPort();
  ~HeldTcpPort();
  HeldTcpPort(const HeldTcpPort&) = delete;
  HeldTcpPort& operator=(const HeldTcpPort&) = delete;
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

class TempDir {
 public:
  TempDir();   // mkdtemp under /tmp, mode 0777 (mosquitto drops to its own user)
  ~TempDir();  // removes it recursively unless C2M_KEEP_TMP is set
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  void write(const std::string& name, const std::string& content) const;

 private:
  std::string path_;
};

// A child process; stdout+stderr go to `log_file`. Killed (TERM, then KILL after 3 s) in
// the destructor.
class Process {
 public:
  Process(std::vector<std::string> argv, std::string log_file);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  int pid() const { return pid_; }
  bool running();
  // Sends `sig` to the process group and waits up to `timeout` for exit; returns the exit
  // code, 128+N if killed by signal N, or -1 on timeout. sig 0 only waits.
  int stop(int sig = 15, std::chrono::milliseconds timeout = 5s);
  std::string output() const;  // whole log so far
  // Polls the log until it contains `needle` (true) or the timeout passes (false).
  bool waitForOutput(const std::string& needle, std::chrono::milliseconds timeout);
  // Number of occurrences of `needle` in the log so far.
  std::size_t countInOutput(const std::string& needle) const;
  const std::string& logFile() const { return log_file_; }

 private:
  int pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
  std::string log_file_;
};

// Polls `cond` every 20 ms until true or timeout. Returns the last value.
bool waitUntil(const std::function<bool()>& cond, std::chrono::milliseconds timeout);

// A real mosquitto on a free loopback port, in its own temp dir; ready when constructed.
class Mosquitto {
 public:
  struct Options {
    // Sessions, subscriptions and queued messages survive stop()/start() (SIGTERM saves).
    bool persistence = false;
    // Appended to the generated conf, e.g. a second (TLS) listener. Paths in it must be
    // readable by the mosquitto user.
    std::string extra_conf;
    // Security settings (allow_anonymous, password_file) per listener: the first, plain
    // listener stays anonymous and extra_conf's listeners set their own.
    bool per_listener_settings = false;
  };
  Mosquitto();
  explicit Mosquitto(Options options);
  ~Mosquitto();
  int port() const { return port_; }
  std::string uri() const { return "mqtt://127.0.0.1:" + std::to_string(port_); }
  void stop();   // SIGTERM and wait
  void start();  // again, same port; waits until it accepts connections
  bool running() const { return proc_ != nullptr; }
  std::string output() const { return proc_ ? proc_->output() : std::string(); }
  const TempDir& dir() const { return dir_; }

 private:
  TempDir dir_;
  int port_;
  std::unique_ptr<Process> proc_;
};

struct MqttMessage {
  std::string topic;
  std::string payload;
  int qos = 0;
  bool retained = false;
  std::chrono::steady_clock::time_point received;
};

// A paho client that subscribes to `filter` and records every message.
class MqttProbe {
 public:
  struct Options {
    // Non-empty: a persistent session under this client id (clean_session false) that
    // reconnects by itself; with a persistent broker it misses nothing while away.
    std::string persistent_id;
  };
  MqttProbe(int port, const std::string& filter);
  MqttProbe(int port, const std::string& filter, const Options& options);
  bool connected() const;
  ~MqttProbe();
  std::vector<MqttMessage> messages() const;
  std::vector<MqttMessage> messagesOn(const std::string& topic) const;
  // Waits until `pred(messages())` is true.
  bool waitFor(const std::function<bool(const std::vector<MqttMessage>&)>& pred,
               std::chrono::milliseconds timeout) const;
  // Waits until at least `count` messages arrived on exactly `topic`.
  bool waitForCount(const std::string& topic, std::size_t count,
                    std::chrono::milliseconds timeout) const;
  void publish(const std::string& topic, const std::string& payload, int qos = 1,
               bool retain = false);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// coap-client-openssl wrappers (it exits 0 even on errors, so we read its output).
struct CoapResult {
  bool ok = false;   // got a 2.xx response
  std::string code;  // e.g. "2.05", "4.04", empty on timeout
  std::string payload;
  std::string log;  // coap-client's own output (-v 6), for a failure message
};
// Runs `coap-client-openssl -v 6 -m METHOD [-f PAYLOADFILE] -B SECONDS -o FILE [OPTIONS] URI`.
// The code is read from the PDU log lines of -v 6 (see harness.cpp), the payload from the -o
// file. `options` go before the URI, e.g. DTLS credentials {"-u", identity, "-k", key}.
CoapResult coapRequest(const std::string& method, const std::string& uri,
                       const std::string& payload = "", std::chrono::seconds timeout = 5s,
                       const std::vector<std::string>& options = {});
// Observes `uri` for `duration` (coap-client -s): one entry per response/notification
// received, in order (payload as logged by coap-client, per block).
std::vector<CoapResult> coapObserve(const std::string& uri, std::chrono::seconds duration);

// Paths of the binaries under test.
// The binaries under test: this build's, or C2M_GATEWAY_BIN / C2M_SIM_BIN (CI's sanitizer
// phase runs the normal build's tests against the sanitized gateway).
std::string gatewayBinary();
std::string simulatorBinary();
// True when the gateway under test runs under a sanitizer (this build is one, or
// C2M_GATEWAY_SANITIZED=1 says the C2M_GATEWAY_BIN is): memory and speed figures differ.
bool gatewaySanitized();
std::string sourceDir();

}  // namespace coap2mqtt::test
