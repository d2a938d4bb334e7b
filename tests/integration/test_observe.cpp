// The observe engine: reordering, block-wise notifications, reloads that keep or cancel.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <csignal>
#include <functional>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "gateway/coap_link.h"
#include "gateway/event_loop.h"
#include "gateway/outbox.h"
#include "tests/integration/gateway_process.h"
#include "tests/integration/harness.h"

namespace coap2mqtt::test {
namespace {

// A CoAP message as the scripted devices below read it.
struct CoapMessage {
  std::uint8_t type = 0;
  std::uint16_t mid = 0;
  std::string token;
  std::string path;
  bool observe = false;
};

std::optional<CoapMessage> parseCoap(const std::string& b) {
  if (b.size() < 4) return std::nullopt;
  CoapMessage r;
  r.type = (static_cast<std::uint8_t>(b[0]) >> 4) & 3;
  std::size_t tkl = b[0] & 0x0f;
  r.mid = static_cast<std::uint16_t>((static_cast<std::uint8_t>(b[2]) << 8) |
                                     static_cast<std::uint8_t>(b[3]));
  if (b.size() < 4 + tkl) return std::nullopt;
  r.token = b.substr(4, tkl);
  std::size_t i = 4 + tkl;
  unsigned number = 0;
  while (i < b.size() && static_cast<std::uint8_t>(b[i]) != 0xff) {
    unsigned delta = static_cast<std::uint8_t>(b[i]) >> 4;
    unsigned length = b[i] & 0x0f;
    ++i;
    if (delta == 13) delta = 13 + static_cast<std::uint8_t>(b[i++]);
    if (length == 13) length = 13 + static_cast<std::uint8_t>(b[i++]);
    number += delta;
    if (number == 11) r.path += "/" + b.substr(i, length);
    if (number == 6) r.observe = length == 0 || b[i] == 0;
    i += length;
  }
  return r;
}

// A 2.05 response or notification. type: 0 CON, 1 NON, 2 ACK.
std::string coapResponse(std::uint8_t type, std::uint16_t mid, const std::string& token,
                         std::optional<std::uint32_t> observe, unsigned ct,
                         const std::string& payload) {
  std::string m;
  m.push_back(static_cast<char>(0x40 | (type << 4) | token.size()));
  m.push_back(0x45);  // 2.05
  m.push_back(static_cast<char>(mid >> 8));
  m.push_back(static_cast<char>(mid & 0xff));
  m += token;
  unsigned last = 0;
  if (observe) {
    m.push_back(static_cast<char>((6 << 4) | 1));
    m.push_back(static_cast<char>(*observe & 0xff));
    last = 6;
  }
  if (ct == 0) {
    m.push_back(static_cast<char>((12 - last) << 4));
  } else {
    m.push_back(static_cast<char>(((12 - last) << 4) | 1));
    m.push_back(static_cast<char>(ct));
  }
  m.push_back(static_cast<char>(0xff));
  m += payload;
  return m;
}

// A scripted CoAP device on a UDP socket: answers discovery and the observe registration
// of /seq itself, then sends the notifications the test asks for, in the order given: NON,
// or CON when `on_ack` is set, which is called with each notification's value as soon as
// its ACK arrives. With `stray`, it then sends one CON notification of an observation the
// gateway never made, acts as if the gateway's RST were lost (sends it again, as a device
// that did not hear it would) and counts the RSTs that come for it (strayRsts()).
class ScriptedDevice {
 public:
  explicit ScriptedDevice(std::vector<std::uint32_t> sequence,
                          std::function<void(std::uint32_t)> on_ack = {}, bool stray = false)
      : sequence_(std::move(sequence)), on_ack_(std::move(on_ack)), stray_(stray) {
    fd_ = bindLoopbackUdp(&port_);
    thread_ = std::thread([this] { run(); });
  }
  ~ScriptedDevice() {
    stop_ = true;
    thread_.join();
    close(fd_);
  }
  int port() const { return port_; }
  bool registered() const { return registered_; }
  int strayRsts() const { return stray_rsts_; }

 private:
  // Waits up to 2 s for the ACK of `mid` (requests arriving meanwhile are not answered).
  bool awaitAck(std::uint16_t mid) { return awaitReply(mid, 2); }
  // Waits up to 2 s for an ACK (type 2) or RST (type 3) of `mid`.
  bool awaitReply(std::uint16_t mid, std::uint8_t type) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (!stop_ && std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 50) <= 0) continue;
      char buf[1500];
      ssize_t n = recv(fd_, buf, sizeof buf, 0);
      auto r = parseCoap(std::string(buf, n > 0 ? static_cast<std::size_t>(n) : 0));
      if (r && r->type == type && r->mid == mid) return true;
    }
    return false;
  }

  void run() {
    sockaddr_in peer{};
    std::string token;
    std::uint16_t mid = 0x4000;
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 50) <= 0) continue;
      char buf[1500];
      socklen_t len = sizeof peer;
      ssize_t n = recvfrom(fd_, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&peer), &len);
      auto r = parseCoap(std::string(buf, n > 0 ? static_cast<std::size_t>(n) : 0));
      if (!r || r->type != 0) continue;  // only CON requests need answers here
      auto send = [&](const std::string& m) {
        sendto(fd_, m.data(), m.size(), 0, reinterpret_cast<sockaddr*>(&peer), len);
      };
      if (r->path == "/.well-known/core") {
        send(coapResponse(2, r->mid, r->token, std::nullopt, 40, "</seq>;obs;ct=0"));
      } else if (r->path == "/seq" && r->observe && !registered_) {
        token = r->token;
        send(coapResponse(2, r->mid, token, sequence_.front(), 0,
                          std::to_string(sequence_.front())));
        registered_ = true;
        for (std::size_t k = 1; k < sequence_.size(); ++k) {
          std::this_thread::sleep_for(std::chrono::milliseconds(100));  // pacing, not sync
          const std::uint16_t this_mid = mid++;
          send(coapResponse(on_ack_ ? 0 : 1, this_mid, token, sequence_[k], 0,
                            std::to_string(sequence_[k])));
          if (on_ack_ && awaitAck(this_mid)) on_ack_(sequence_[k]);
        }
        if (stray_) {
          const std::uint16_t stray_mid = mid++;
          const std::string stray = coapResponse(0, stray_mid, "stray-tk", 99, 0, "99");
          send(stray);
          if (awaitReply(stray_mid, 3)) ++stray_rsts_;
          send(stray);  // the retransmission: the gateway's libcoap takes it for a duplicate
          const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
          while (!stop_ && std::chrono::steady_clock::now() < until) {
            if (awaitReply(stray_mid, 3)) ++stray_rsts_;
          }
        }
      } else {
        send(coapResponse(2, r->mid, r->token, std::nullopt, 0, ""));
      }
    }
  }

  std::vector<std::uint32_t> sequence_;
  std::function<void(std::uint32_t)> on_ack_;
  bool stray_ = false;
  std::atomic<int> stray_rsts_{0};
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<bool> registered_{false};
  std::thread thread_;
};

TEST(Observe, ReorderedNotificationIsNotPublishedAfterANewerOne) {
  TempDir dir;
  Mosquitto broker;
  // 10 after 11 is stale (RFC 7641 §3.4), and 11 repeated is a duplicate.
  ScriptedDevice device({9, 11, 10, 11, 12});
  MqttProbe probe(broker.port(), "c2m/scripted/seq");
  auto gateway =
      startGateway(dir, baseConfig(broker, dir) + "[[coap.device]]\nname = \"scripted\"\nuri = " +
                            "\"coap://127.0.0.1:" + std::to_string(device.port()) +
                            "\"\n\n[[rule]]\nname = \"seq\"\nmatch = { path = \"/seq\" }\n"
                            "topic = \"c2m/{device}/{path}\"\npayload = \"raw\"\n");
  ASSERT_TRUE(probe.waitFor(
      [](const std::vector<MqttMessage>& msgs) {
        return !msgs.empty() && msgs.back().payload == "12";
      },
      10s))
      << gateway->output();
  std::vector<std::string> got;
  for (const auto& m : probe.messages()) got.push_back(m.payload);
  EXPECT_EQ(got, (std::vector<std::string>{"9", "11", "12"})) << gateway->output();
}

// Issue 6: a device forgets a CON notification once it has our ACK, so the ACK must wait
// until the message is in the outbox. The device kills the gateway the moment its last
// ACK arrives, with the broker away: every ACKed value must be in outbox.db.
TEST(Observe, AckedConNotificationIsInTheOutboxEvenIfTheGatewayDiesAtOnce) {
  TempDir dir;
  Mosquitto broker;
  broker.stop();  // everything at QoS 1 goes to the outbox and stays there
  std::atomic<int> gateway_pid{0};
  std::mutex acked_mutex;
  std::vector<std::string> acked;
  const std::vector<std::uint32_t> sequence{1, 2, 3, 4, 5, 6};
  ScriptedDevice device(sequence, [&](std::uint32_t value) {
    {
      std::lock_guard<std::mutex> lock(acked_mutex);
      acked.push_back(std::to_string(value));
    }
    if (value == sequence.back() && gateway_pid > 0) kill(gateway_pid, SIGKILL);
  });
  auto gateway =
      startGateway(dir, baseConfig(broker, dir) + "[[coap.device]]\nname = \"scripted\"\nuri = " +
                            "\"coap://127.0.0.1:" + std::to_string(device.port()) +
                            "\"\n\n[[rule]]\nname = \"seq\"\nmatch = { path = \"/seq\" }\n"
                            "topic = \"c2m/{device}/{path}\"\npayload = \"raw\"\nqos = 1\n");
  gateway_pid = gateway->pid();
  ASSERT_EQ(gateway->stop(0, 15s), 128 + SIGKILL) << gateway->output();
  {
    std::lock_guard<std::mutex> lock(acked_mutex);
    ASSERT_EQ(acked.size(), sequence.size() - 1) << "every CON notification was ACKed";
  }
  std::vector<std::string> stored;
  gateway::Outbox outbox(dir.file("outbox.db"), {});
  for (const auto& m : outbox.read(0, 1000)) {
    if (m.topic == "c2m/scripted/seq") stored.push_back(m.payload);
  }
  // The registration's answer (1) and every ACKed notification, in order.
  EXPECT_EQ(stored, (std::vector<std::string>{"1", "2", "3", "4", "5", "6"})) << gateway->output();
}

// libcoap#1306 again, for a notification we reject: the gateway RSTs a CON notification of
// an observation it does not know, and when that RST is lost its libcoap drops the
// retransmission as a duplicate without answering. The device would retransmit into that
// silence for up to MAX_TRANSMIT_SPAN, and NSTART=1 holds back every notification of the
// gateway's new registration meanwhile (a 20 % loss run once stayed silent after healing).
// While the device stays quiet, the gateway sends the RST again.
TEST(Observe, RejectedConNotificationIsRejectedAgainWhenTheDeviceRetransmitsIt) {
  TempDir dir;
  Mosquitto broker;
  ScriptedDevice device(
      {1, 2, 3}, [](std::uint32_t) {}, true);
  auto gateway =
      startGateway(dir, baseConfig(broker, dir) + "[[coap.device]]\nname = \"scripted\"\nuri = " +
                            "\"coap://127.0.0.1:" + std::to_string(device.port()) +
                            "\"\n\n[[rule]]\nname = \"seq\"\nmatch = { path = \"/seq\" }\n"
                            "topic = \"c2m/{device}/{path}\"\npayload = \"raw\"\n");
  EXPECT_TRUE(waitUntil([&] { return device.strayRsts() >= 2; }, 20s))
      << device.strayRsts() << " RST(s)\n"
      << gateway->output();
}

TEST(Observe, FourKilobyteResourceArrivesWholeThroughBlockwise) {
  TempDir dir;
  Mosquitto broker;
  const int port = freeUdpPort();
  Process server({"coap-server-openssl", "-A", "127.0.0.1", "-p", std::to_string(port)},
                 dir.file("server.log"));
  const std::string uri = "coap://127.0.0.1:" + std::to_string(port);
  ASSERT_TRUE(waitUntil([&] { return coapRequest("get", uri + "/time").ok; }, 10s));
  std::string big;
  for (int i = 0; big.size() < 4096; ++i) big += "line " + std::to_string(i) + " of a 4 KiB body\n";
  big.resize(4096);
  ASSERT_TRUE(coapRequest("put", uri + "/example_data", big).ok);
  MqttProbe probe(broker.port(), "c2m/big/example_data");
  auto gateway = startGateway(
      dir, baseConfig(broker, dir) + "[[coap.device]]\nname = \"big\"\nuri = \"" + uri +
               "\"\n\n[[rule]]\nname = \"data\"\nmatch = { path = \"/example_data\" }\n"
               "topic = \"c2m/{device}/{path}\"\npayload = \"raw\"\n");
  ASSERT_TRUE(probe.waitForCount("c2m/big/example_data", 1, 10s)) << gateway->output();
  EXPECT_EQ(probe.messagesOn("c2m/big/example_data").front().payload, big);

  // A change is notified whole as well.
  std::string changed = big;
  changed.replace(0, 7, "CHANGED");
  ASSERT_TRUE(coapRequest("put", uri + "/example_data", changed).ok);
  EXPECT_TRUE(probe.waitFor(
      [&](const std::vector<MqttMessage>& msgs) { return msgs.back().payload == changed; }, 10s))
      << gateway->output();
}

TEST(Observe, ReloadKeepsUnchangedObservationsAndCancelsRemovedOnes) {
  TempDir dir;
  Mosquitto broker;
  const int port = freeUdpPortRange(1);
  Process sim({simulatorBinary(), "--devices", "1", "--address", "127.0.0.1", "--port",
               std::to_string(port), "--interval", "200"},
              dir.file("sim.log"));
  ASSERT_TRUE(sim.waitForOutput("READY", 10s));
  MqttProbe probe(broker.port(), "#");
  const std::string rules =
      "[[rule]]\nname = \"counter\"\nmatch = { path = \"/sensors/counter\" }\n"
      "topic = \"old/{device}/{path}\"\n\n"
      "[[rule]]\nname = \"temp\"\nmatch = { path = \"/sensors/temp\" }\n"
      "topic = \"old/{device}/{path}\"\n";
  dir.write("rules.toml", rules);
  std::string config = baseConfig(broker, dir) + "[[coap.device]]\nname = \"dev0\"\nuri = " +
                       "\"coap://127.0.0.1:" + std::to_string(port) + "\"\n";
  config.replace(config.find("[coap]\n"), 0, "rules = [\"rules.toml\"]\n\n");
  auto gateway = startGateway(dir, config);
  ASSERT_TRUE(probe.waitForCount("old/dev0/sensors/counter", 2, 10s)) << gateway->output();
  ASSERT_TRUE(probe.waitForCount("old/dev0/sensors/temp", 2, 10s)) << gateway->output();
  EXPECT_EQ(sim.countInOutput("GET /sensors/counter"), 1u) << sim.output();
  EXPECT_EQ(sim.countInOutput("GET /sensors/temp"), 1u) << sim.output();

  // A broken rule file: the old rules keep working.
  dir.write("rules.toml", rules + "[[rule]]\nname = \"broken\"\nmode = \"sometimes\"\n");
  kill(gateway->pid(), SIGHUP);
  ASSERT_TRUE(gateway->waitForOutput("keeping the old rules", 10s)) << gateway->output();
  const std::size_t n = probe.messagesOn("old/dev0/sensors/counter").size();
  EXPECT_TRUE(probe.waitForCount("old/dev0/sensors/counter", n + 2, 10s));

  // The counter moves to a new topic and the temperature rule goes away.
  dir.write("rules.toml",
            "[[rule]]\nname = \"counter\"\nmatch = { path = \"/sensors/counter\" }\n"
            "topic = \"new/{device}/{path}\"\n");
  kill(gateway->pid(), SIGHUP);
  ASSERT_TRUE(probe.waitForCount("new/dev0/sensors/counter", 2, 10s)) << gateway->output();
  // The device got exactly one more GET for /sensors/temp: the deregistration (Observe=1).
  EXPECT_TRUE(sim.waitForOutput("GET /sensors/temp", 1s));
  EXPECT_TRUE(waitUntil([&] { return sim.countInOutput("GET /sensors/temp") == 2u; }, 5s))
      << sim.output();
  // ... and the counter was not observed again.
  EXPECT_EQ(sim.countInOutput("GET /sensors/counter"), 1u) << sim.output();
  const std::size_t temps = probe.messagesOn("old/dev0/sensors/temp").size();
  // Later counter values prove time has passed; no temperature came with them.
  const std::size_t c = probe.messagesOn("new/dev0/sensors/counter").size();
  ASSERT_TRUE(probe.waitForCount("new/dev0/sensors/counter", c + 5, 10s));
  EXPECT_EQ(probe.messagesOn("old/dev0/sensors/temp").size(), temps);
}

TEST(Observe, RestartedDeviceIsObservedAgainWithinTenSeconds) {
  TempDir dir;
  Mosquitto broker;
  const int port = freeUdpPortRange(1);
  const std::vector<std::string> sim_argv{simulatorBinary(),    "--devices",  "1",
                                          "--address",          "127.0.0.1",  "--port",
                                          std::to_string(port), "--interval", "200"};
  auto sim = std::make_unique<Process>(sim_argv, dir.file("sim.log"));
  ASSERT_TRUE(sim->waitForOutput("READY", 10s));
  MqttProbe probe(broker.port(), "c2m/dev0/sensors/counter");
  auto gateway = startGateway(
      dir, baseConfig(broker, dir) + "[[coap.device]]\nname = \"dev0\"\nuri = " +
               "\"coap://127.0.0.1:" + std::to_string(port) +
               "\"\n\n[[rule]]\nname = \"counter\"\nmatch = { path = \"/sensors/counter\" }\n"
               "topic = \"c2m/{device}/{path}\"\n");
  ASSERT_TRUE(probe.waitForCount("c2m/dev0/sensors/counter", 5, 10s)) << gateway->output();

  // The device reboots: a new process that knows nothing of our observation, whose
  // sequence numbers start again from the beginning.
  sim->stop(9);
  sim = std::make_unique<Process>(sim_argv, dir.file("sim2.log"));
  ASSERT_TRUE(sim->waitForOutput("READY", 10s));
  const auto back = std::chrono::steady_clock::now();
  const std::size_t before = probe.messages().size();
  ASSERT_TRUE(probe.waitFor(
      [&](const std::vector<MqttMessage>& msgs) {
        return msgs.size() > before;  // the old process is gone: anything new is from the new one
      },
      10s))
      << gateway->output();
  EXPECT_LT(std::chrono::steady_clock::now() - back, 10s);
  EXPECT_TRUE(sim->waitForOutput("GET /sensors/counter", 1s)) << "registered again";

  // The per-device counters say what happened (admin request "info").
  MqttProbe admin(broker.port(), "c2m/bridge/response/#");
  ASSERT_TRUE(admin.connected());
  admin.publish("c2m/bridge/request/info", R"({"transaction":"counters"})");
  ASSERT_TRUE(admin.waitForCount("c2m/bridge/response/info", 1, 10s)) << gateway->output();
  const auto info = nlohmann::json::parse(admin.messagesOn("c2m/bridge/response/info")[0].payload);
  const auto& dev0 = info["data"]["per_device"]["dev0"];
  EXPECT_GE(dev0.value("notifications", 0), 5) << info.dump();
  EXPECT_GE(dev0.value("reregistrations", 0) + dev0.value("failures", 0), 1) << info.dump();
}

// A device played by the test itself on a loopback UDP socket: it receives and sends when
// the test says so.
class UdpPeer {
 public:
  UdpPeer() { fd_ = bindLoopbackUdp(&port_); }
  ~UdpPeer() { close(fd_); }
  int port() const { return port_; }
  // The next message (its sender is where send() goes), or nullopt after `timeout`.
  std::optional<CoapMessage> receive(std::chrono::milliseconds timeout) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return std::nullopt;
    char buf[1500];
    peer_len_ = sizeof peer_;
    const ssize_t n =
        recvfrom(fd_, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&peer_), &peer_len_);
    return parseCoap(std::string(buf, n > 0 ? static_cast<std::size_t>(n) : 0));
  }
  void send(const std::string& m) {
    sendto(fd_, m.data(), m.size(), 0, reinterpret_cast<sockaddr*>(&peer_), peer_len_);
  }

 private:
  int fd_ = -1;
  int port_ = 0;
  sockaddr_in peer_{};
  socklen_t peer_len_ = sizeof peer_;
};

// Issue 17: a request's timeout renews the device's session (plain CoAP), which throws away
// whatever is still unread on the old session's socket. After a long loop iteration (a
// loaded machine, a sanitizer) the device's notifications wait there, and the loop reads
// one datagram per socket before it fires the timers that are due: the timeout reads the
// rest first (CoapLink::Impl::onExchangeTimeout, drainIo). Here CoapLink runs in this
// process; a task keeps its loop busy past a request's timeout while the device sends a
// burst of NON notifications: every one of them reaches the observation before the renewal
// ends it.
TEST(ObserveLink, NotificationsQueuedBehindABusyLoopAreReadBeforeATimeoutRenewsTheSession) {
  using gateway::CoapResponse;
  UdpPeer device;
  gateway::EventLoop loop;
  gateway::CoapConfig config;
  config.request_timeout = 500ms;
  gateway::CoapLink link(loop, config);
  std::string error;
  ASSERT_TRUE(link.addDevice("dev", "coap://127.0.0.1:" + std::to_string(device.port()), &error))
      << error;
  std::mutex mutex;
  std::condition_variable burst_cv;
  bool burst_sent = false;
  std::vector<std::string> values;  // what the observation delivered, in order
  std::string ended;                // why it ended
  std::string request_error;
  std::thread loop_thread([&] { loop.run(); });
  struct Join {  // on every way out, before what the loop's tasks use goes
    gateway::EventLoop& loop;
    std::thread& thread;
    ~Join() {
      loop.stop();
      thread.join();
    }
  } join{loop, loop_thread};
  auto locked = [&](auto f) {
    std::lock_guard lock(mutex);
    return f();
  };
  loop.post([&] {
    link.observe("dev", "/seq",
                 [&](const std::optional<CoapResponse>& response, const std::string& why) {
                   std::lock_guard lock(mutex);
                   if (response) {
                     values.push_back(response->payload);
                   } else {
                     ended = why.empty() ? "?" : why;
                   }
                 });
  });
  const auto registration = device.receive(5s);
  ASSERT_TRUE(registration && registration->path == "/seq" && registration->observe);
  device.send(coapResponse(2, registration->mid, registration->token, 1, 0, "1"));
  ASSERT_TRUE(waitUntil([&] { return locked([&] { return values.size() == 1; }); }, 5s));

  // A request the device never answers, then the loop is kept busy until its timeout is
  // past, while the device notifies.
  constexpr std::uint32_t kBurst = 20;
  loop.post([&] {
    const auto due = std::chrono::steady_clock::now() + config.request_timeout;
    link.request("dev", bridge::Method::Get, "/quiet", "", std::nullopt,
                 [&](const std::optional<CoapResponse>& response, const std::string& why) {
                   std::lock_guard lock(mutex);
                   request_error = response ? response->codeString() : why;
                 });
    std::unique_lock lock(mutex);
    burst_cv.wait_for(lock, 10s, [&] { return burst_sent; });
    lock.unlock();
    // The scenario, not a synchronisation: a loop iteration longer than the timeout.
    std::this_thread::sleep_until(due + 200ms);
  });
  const auto quiet = device.receive(5s);  // sent from the busy task: the loop is in it now
  ASSERT_TRUE(quiet && quiet->path == "/quiet");
  for (std::uint32_t seq = 2; seq <= kBurst + 1; ++seq) {
    device.send(coapResponse(1, static_cast<std::uint16_t>(0x7000 + seq), registration->token, seq,
                             0, std::to_string(seq)));
  }
  {
    std::lock_guard lock(mutex);
    burst_sent = true;
  }
  burst_cv.notify_all();

  // The timeout renews the session, which ends the observation too (the gateway's Watch
  // registers again); by then every notification of the burst has been read.
  ASSERT_TRUE(waitUntil([&] { return locked([&] { return !ended.empty(); }); }, 10s));
  std::lock_guard lock(mutex);
  EXPECT_EQ(request_error, "timeout");
  std::vector<std::string> want;
  for (std::uint32_t seq = 1; seq <= kBurst + 1; ++seq) want.push_back(std::to_string(seq));
  EXPECT_EQ(values, want) << "the observation ended with: " << ended;
}

}  // namespace
}  // namespace coap2mqtt::test
