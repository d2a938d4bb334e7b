#pragma once
// Network namespaces for integration tests: a private loopback (optionally multicast
// capable) where fixed ports such as 5683 and 1883 are free, and nothing the test does
// can reach the host's interfaces. Needs root; see NetNs::available().
//
// The test process itself stays in the host namespace, so it cannot talk to anything on
// the namespace's loopback: run every peer with NetNs::exec(), the broker with
// NsMosquitto and read MQTT through NsMqttTap (mosquitto_sub inside the namespace).
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "tests/integration/harness.h"

namespace coap2mqtt::test {

class NetNs {
 public:
  struct Options {
    // `ip link set lo multicast on` and `ip route add 224.0.0.0/4 dev lo`: IPv4 multicast
    // sent on lo comes back to the groups joined on lo.
    bool multicast_lo = false;
  };

  // Creates "c2m-<pid>-<n>" (`ip netns add`) with lo up. Throws std::runtime_error (with
  // the command's output) on failure; whatever was created is deleted again.
  NetNs();
  explicit NetNs(Options options);
  // Kills (SIGKILL) every process still in the namespace, then `ip netns delete`.
  ~NetNs();
  NetNs(const NetNs&) = delete;
  NetNs& operator=(const NetNs&) = delete;

  const std::string& name() const { return name_; }

  // `argv` prefixed with `ip netns exec NAME`, for Process.
  std::vector<std::string> exec(std::vector<std::string> argv) const;

  // Runs `argv` inside the namespace to completion (killed after `timeout`). Returns the
  // exit code (128+N if killed by signal N, -1 on timeout); stdout+stderr in *output.
  int run(std::vector<std::string> argv, std::string* output = nullptr,
          std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;

  // socket(2) created inside the namespace (the calling thread enters it for the call and
  // comes back), so the test process itself can send and receive there. Throws on error.
  int socket(int domain, int type, int protocol = 0) const;

  // Processes in the namespace (`ip netns pids`).
  std::vector<int> pids() const;

  // A file in the namespace's scratch directory (0777), e.g. for logs.
  std::string file(const std::string& name) const { return dir_.file(name); }
  const TempDir& dir() const { return dir_; }

  // True when we are root and a namespace can be created and deleted here. When false,
  // *why says what is missing (for GTEST_SKIP()).
  static bool available(std::string* why = nullptr);

 private:
  void setUp(const Options& options);
  void tearDown() noexcept;

  std::string name_;
  TempDir dir_;
  bool created_ = false;
};

// A mosquitto inside `ns` on 127.0.0.1:`port` (a fixed port is fine: the namespace's
// ports are all free). Ready when constructed (a mosquitto_pub inside the namespace got
// through); throws with its log otherwise.
class NsMosquitto {
 public:
  explicit NsMosquitto(const NetNs& ns, int port = 1883);
  ~NsMosquitto();
  NsMosquitto(const NsMosquitto&) = delete;
  NsMosquitto& operator=(const NsMosquitto&) = delete;

  int port() const { return port_; }
  // Valid inside the namespace only.
  std::string uri() const { return "mqtt://127.0.0.1:" + std::to_string(port_); }
  std::string output() const;

 private:
  const NetNs& ns_;
  TempDir dir_;
  int port_;
  std::unique_ptr<Process> proc_;
};

// `mosquitto_sub -v -t FILTER` inside the namespace: every message it prints as
// "topic payload" (one line; payloads containing a newline are not supported).
class NsMqttTap {
 public:
  struct Message {
    std::string topic;
    std::string payload;
  };

  // Ready when constructed: it has seen its own probe message on `<filter root>`.
  NsMqttTap(const NetNs& ns, int port, const std::string& filter = "#");
  ~NsMqttTap();
  NsMqttTap(const NsMqttTap&) = delete;
  NsMqttTap& operator=(const NsMqttTap&) = delete;

  std::vector<Message> messages() const;
  std::vector<Message> messagesOn(const std::string& topic) const;
  // Distinct topics seen so far for which `keep(topic)` is true (all when empty).
  std::set<std::string> topics(const std::function<bool(const std::string&)>& keep = {}) const;
  // Polls until `pred(messages())` holds or `timeout` passes; returns the last value.
  bool waitFor(const std::function<bool(const std::vector<Message>&)>& pred,
               std::chrono::milliseconds timeout) const;
  std::string output() const;

 private:
  std::unique_ptr<Process> proc_;
  std::string log_;
};

}  // namespace coap2mqtt::test
