#include "tests/integration/ns_gateway.h"

namespace coap2mqtt::test {

namespace {

constexpr const char* kAnswererPy = R"py(
import socket, struct, sys
group, port, address, links, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4].encode(), int(sys.argv[5])
rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
rx.bind((group, port))
rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
              struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton("127.0.0.1")))
txs = []
for i in range(count):
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind((address, port + i))
    txs.append(tx)
print("READY", flush=True)
while True:
    data, peer = rx.recvfrom(2048)
    if len(data) < 4 or data[0] >> 6 != 1 or data[1] != 1:
        continue
    tkl = data[0] & 0x0F
    # NON 2.05, the request's MID and token, Content-Format 40, the links.
    answer = bytes([0x50 | tkl, 0x45]) + data[2:4] + data[4:4 + tkl] + bytes([0xC1, 40, 0xFF])
    for tx in txs:
        tx.sendto(answer + links, peer)
    print("ANSWERED", peer, flush=True)
)py";

}  // namespace

void NsGatewayTest::SetUp() {
  std::string why;
  if (!NetNs::available(&why)) GTEST_SKIP() << why;
  ns_ = std::make_unique<NetNs>(NetNs::Options{.multicast_lo = true});
  broker_ = std::make_unique<NsMosquitto>(*ns_, kMqttPort);
  tap_ = std::make_unique<NsMqttTap>(*ns_, kMqttPort, "c2m/#");
}

void NsGatewayTest::TearDown() {
  // Processes before the namespace they run in.
  gateway_.reset();
  for (auto& p : peers_) p.reset();
  tap_.reset();
  broker_.reset();
  ns_.reset();
}

void NsGatewayTest::startGateway(const std::string& name, const std::string& request_timeout,
                                 const std::string& window, const std::string& extra) {
  dir_.write("gateway.toml",
             "[gateway]\nname = \"" + name + "\"\nstate_dir = \"" + dir_.path() +
                 "\"\n\n[coap]\nlisten = [\"127.0.0.1:" + std::to_string(kGatewayPort) +
                 "\"]\nrequest_timeout = \"" + request_timeout +
                 "\"\nretry_interval = \"1s\"\n\n[coap.discovery]\nmulticast = [\"" + kGroup +
                 "\"]\ninterfaces = [\"lo\"]\nport = " + std::to_string(kCoapPort) +
                 "\nwindow = \"" + window + "\"\ninterval = \"1h\"\n\n[mqtt]\nuri = " +
                 "\"mqtt://127.0.0.1:" + std::to_string(kMqttPort) + "\"\nclient_id = \"" + name +
                 "\"\nbase_topic = \"c2m\"\n\n[[rule]]\nname = \"counter\"\n" +
                 "match = { path = \"/sensors/counter\" }\ntopic = \"c2m/{device}/{path}\"\n\n" +
                 extra);
  gateway_ = std::make_unique<Process>(
      ns_->exec({gatewayBinary(), "run", "-c", dir_.file("gateway.toml"), "-l", "debug"}),
      dir_.file("gateway.log"));
}

Process& NsGatewayTest::startSim(const std::string& address, int count, bool multicast,
                                 int leisure_ms, const std::vector<std::string>& extra) {
  std::vector<std::string> argv{simulatorBinary(),
                                "--devices",
                                std::to_string(count),
                                "--address",
                                address,
                                "--address-step",
                                "--port",
                                std::to_string(kCoapPort),
                                "--interval",
                                "300",
                                "--leisure",
                                std::to_string(leisure_ms)};
  if (multicast) argv.insert(argv.end(), {"--multicast", kGroup});
  argv.insert(argv.end(), extra.begin(), extra.end());
  peers_.push_back(std::make_unique<Process>(
      ns_->exec(argv), ns_->file("sim-" + std::to_string(peers_.size()) + ".log")));
  EXPECT_TRUE(peers_.back()->waitForOutput("READY", 20s)) << peers_.back()->output();
  return *peers_.back();
}

Process& NsGatewayTest::startAnswerer(const std::string& address, const std::string& links,
                                      int ports) {
  dir_.write("answerer.py", kAnswererPy);
  peers_.push_back(std::make_unique<Process>(
      ns_->exec({"python3", dir_.file("answerer.py"), kGroup, std::to_string(kCoapPort), address,
                 links, std::to_string(ports)}),
      ns_->file("answerer-" + std::to_string(peers_.size()) + ".log")));
  EXPECT_TRUE(peers_.back()->waitForOutput("READY", 10s)) << peers_.back()->output();
  return *peers_.back();
}

void NsGatewayTest::publish(const std::string& topic, const std::string& payload) {
  ns_->run({"mosquitto_pub", "-p", std::to_string(kMqttPort), "-t", topic, "-m", payload}, nullptr,
           5s);
}

std::size_t NsGatewayTest::values(const std::string& device) const {
  return tap_->messagesOn("c2m/" + device + "/sensors/counter").size();
}

std::string NsGatewayTest::dump() const {
  std::string out = "gateway log (tail):\n";
  const std::string log = gateway_ ? gateway_->output() : "";
  out += log.size() > 6000 ? log.substr(log.size() - 6000) : log;
  out += "\nmqtt (bridge topics):\n";
  for (const auto& m : tap_->messages()) {
    if (m.topic.find("/bridge/") != std::string::npos) out += m.topic + " " + m.payload + "\n";
  }
  return out;
}

}  // namespace coap2mqtt::test
