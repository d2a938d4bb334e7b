// Acceptance 1 of issue 4: multicast discovery across a real link. Two network namespaces
// joined by a veth pair: Debian's coap-server-openssl in A answers on 224.0.1.187 and on
// ff02::fd; the gateway and a mosquitto run in B with no [[coap.device]] at all. The gateway
// must find both servers, store them with their resources and bridge /time to MQTT.
//
// Needs root and `ip netns`; skipped otherwise. Everything it creates (two namespaces, the
// veth pair inside them, the processes in them) is removed when the test ends.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tests/integration/harness.h"

namespace coap2mqtt::test {
namespace {

struct RunResult {
  int rc = -1;
  std::string output;
};

// Runs argv to completion (stdout+stderr captured), killing it after `limit`.
RunResult run(const std::vector<std::string>& argv, std::chrono::milliseconds limit = 10s) {
  static int counter = 0;
  TempDir dir;
  Process p(argv, dir.file("run-" + std::to_string(++counter) + ".log"));
  RunResult r;
  r.rc = p.stop(0, limit);  // signal 0: only wait
  if (r.rc == -1) p.stop(SIGKILL, 2s);
  r.output = p.output();
  return r;
}

bool ipNetnsUsable() {
  if (::geteuid() != 0) return false;
  try {
    return run({"ip", "netns", "list"}).rc == 0;
  } catch (const std::exception&) {
    return false;
  }
}

// Two namespaces, A and B, joined by a veth pair (one end in each), with IPv4 addresses,
// loopback up and a multicast route on the veth. The destructor deletes both namespaces,
// which also destroys the veth pair.
class NetnsPair {
 public:
  NetnsPair()
      : a_("c2m-" + std::to_string(::getpid()) + "-a"),
        b_("c2m-" + std::to_string(::getpid()) + "-b"),
        veth_a_("c2v" + std::to_string(::getpid()) + "a"),
        veth_b_("c2v" + std::to_string(::getpid()) + "b") {
    try {
      must({"ip", "netns", "add", a_});
      created_a_ = true;
      must({"ip", "netns", "add", b_});
      created_b_ = true;
      // Created inside A, the peer moved to B: the host never holds either end.
      must({"ip", "-n", a_, "link", "add", veth_a_, "type", "veth", "peer", "name", veth_b_,
            "netns", b_});
      setUp(a_, veth_a_, addrA() + "/24");
      setUp(b_, veth_b_, addrB() + "/24");
    } catch (...) {
      remove();
      throw;
    }
  }
  ~NetnsPair() { remove(); }
  NetnsPair(const NetnsPair&) = delete;
  NetnsPair& operator=(const NetnsPair&) = delete;

  const std::string& a() const { return a_; }
  const std::string& b() const { return b_; }
  const std::string& vethA() const { return veth_a_; }
  const std::string& vethB() const { return veth_b_; }
  static std::string addrA() { return "10.77.0.1"; }
  static std::string addrB() { return "10.77.0.2"; }

  // argv run inside namespace `ns` (`ip netns exec NS …`).
  static std::vector<std::string> in(const std::string& ns, std::vector<std::string> argv) {
    argv.insert(argv.begin(), {"ip", "netns", "exec", ns});
    return argv;
  }

  // The IPv6 link-local address of `dev` in `ns` once duplicate address detection is done
  // ("" until then).
  static std::string linkLocal(const std::string& ns, const std::string& dev) {
    RunResult r = run({"ip", "-n", ns, "-6", "addr", "show", "dev", dev, "scope", "link"});
    if (r.rc != 0) return "";
    std::istringstream in(r.output);
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream words(line);
      std::string word, address;
      bool tentative = false;
      while (words >> word) {
        if (word == "inet6" && words >> address) continue;
        if (word == "tentative") tentative = true;
      }
      if (!address.empty() && !tentative) return address.substr(0, address.find('/'));
    }
    return "";
  }

 private:
  static void must(const std::vector<std::string>& argv) {
    RunResult r = run(argv);
    if (r.rc != 0) {
      std::string cmd;
      for (const auto& a : argv) cmd += a + " ";
      throw std::runtime_error(cmd + "failed (" + std::to_string(r.rc) + "): " + r.output);
    }
  }
  static void setUp(const std::string& ns, const std::string& dev, const std::string& cidr) {
    must({"ip", "-n", ns, "link", "set", "lo", "up"});
    must({"ip", "-n", ns, "addr", "add", cidr, "dev", dev});
    must({"ip", "-n", ns, "link", "set", dev, "up"});
    must({"ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", dev});
  }

  void remove() {
    if (created_a_) run({"ip", "netns", "del", a_});
    if (created_b_) run({"ip", "netns", "del", b_});
    created_a_ = created_b_ = false;
  }

  std::string a_, b_, veth_a_, veth_b_;
  bool created_a_ = false;
  bool created_b_ = false;
};

// "fe80::1%eth0" → "coap-fe80--1-eth0", as gateway/device_names.h documents.
std::string nameForHost(const std::string& host) {
  std::string out = "coap-";
  for (char c : host) out.push_back(std::isalnum(static_cast<unsigned char>(c)) ? c : '-');
  return out;
}

// "topic payload" lines of `mosquitto_sub -v` whose topic is exactly `topic`.
std::vector<std::string> payloadsOn(const std::string& tap, const std::string& topic) {
  std::vector<std::string> out;
  std::istringstream in(tap);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() > topic.size() && line.compare(0, topic.size() + 1, topic + " ") == 0) {
      out.push_back(line.substr(topic.size() + 1));
    }
  }
  return out;
}

const nlohmann::json* findDevice(const nlohmann::json& list, const std::string& name) {
  for (const auto& d : list) {
    if (d.value("name", "") == name) return &d;
  }
  return nullptr;
}

TEST(DiscoveryNetns, DiscoversIpv4AndIpv6ServersAcrossVethAndBridgesTime) {
  if (!ipNetnsUsable()) GTEST_SKIP() << "needs root and `ip netns`";
  TempDir dir;
  // Declared first: destroyed last, after every process that runs inside it.
  NetnsPair net;

  // A: one coap-server per group. Bound to the wildcard address (bound to a unicast
  // address, it would not receive multicast).
  Process server4(NetnsPair::in(net.a(), {"coap-server-openssl", "-A", "0.0.0.0", "-g",
                                          "224.0.1.187", "-G", net.vethA(), "-p", "5683"}),
                  dir.file("server4.log"));
  // The IPv6 server's group join needs the interface's link-local address (DAD, ~1-2 s).
  std::string ll_a;
  ASSERT_TRUE(waitUntil(
      [&] {
        ll_a = NetnsPair::linkLocal(net.a(), net.vethA());
        return !ll_a.empty();
      },
      10s));
  std::string ll_b;
  ASSERT_TRUE(waitUntil(
      [&] {
        ll_b = NetnsPair::linkLocal(net.b(), net.vethB());
        return !ll_b.empty();
      },
      10s));
  // Its TCP bind clashes with the first server's and is logged; UDP is what matters.
  Process server6(NetnsPair::in(net.a(), {"coap-server-openssl", "-A", "::", "-g", "ff02::fd", "-G",
                                          net.vethA(), "-p", "5683"}),
                  dir.file("server6.log"));

  // B: a broker on B's own loopback, a tap on it, then the gateway.
  const std::string mqtt_port = "18999";
  dir.write("mosquitto.conf",
            "listener " + mqtt_port + " 127.0.0.1\nallow_anonymous true\npersistence false\n");
  Process broker(NetnsPair::in(net.b(), {"mosquitto", "-c", dir.file("mosquitto.conf")}),
                 dir.file("mosquitto.log"));
  ASSERT_TRUE(waitUntil(
      [&] {
        return run(NetnsPair::in(net.b(),
                                 {"mosquitto_pub", "-p", mqtt_port, "-t", "c2m/ping", "-m", "x"}),
                   3s)
                   .rc == 0;
      },
      10s))
      << broker.output();
  Process tap(NetnsPair::in(net.b(), {"mosquitto_sub", "-p", mqtt_port, "-t", "#", "-v"}),
              dir.file("tap.log"));
  ASSERT_TRUE(waitUntil(
      [&] {
        run(NetnsPair::in(net.b(),
                          {"mosquitto_pub", "-p", mqtt_port, "-t", "c2m/tap", "-m", "ready"}),
            3s);
        return tap.output().find("c2m/tap ready") != std::string::npos;
      },
      10s))
      << tap.output();

  ::mkdir(dir.file("state").c_str(), 0777);
  dir.write("gateway.toml", "[gateway]\nname = \"mc\"\nstate_dir = \"" + dir.file("state") +
                                "\"\n\n[coap]\nretry_interval = \"1s\"\n\n"
                                "[coap.discovery]\nmulticast = [\"224.0.1.187\", \"ff02::fd\"]\n"
                                "interfaces = [\"" +
                                net.vethB() +
                                "\"]\nwindow = \"6s\"\ninterval = \"60s\"\n\n"
                                "[mqtt]\nuri = \"mqtt://127.0.0.1:" +
                                mqtt_port +
                                "\"\n\n[[rule]]\nname = \"time\"\nmatch = { path = \"/time\" }\n"
                                "topic = \"mc/{device}/{path}\"\npayload = \"raw\"\n");
  Process gateway(NetnsPair::in(net.b(), {gatewayBinary(), "run", "-c", dir.file("gateway.toml"),
                                          "-l", "debug"}),
                  dir.file("gateway.log"));

  // Devices answer from their unicast address; the gateway names them after it. The
  // IPv6 one carries B's interface as the zone (that is where the gateway reaches it).
  const std::string dev4 = "coap-10-77-0-1";
  const std::string uri4 = "coap://10.77.0.1:5683";
  const std::string host6 = ll_a + "%" + net.vethB();
  const std::string dev6 = nameForHost(host6);
  const std::string uri6 = "coap://[" + host6 + "]:5683";

  ASSERT_TRUE(gateway.waitForOutput("discovery: 2 device(s) answered", 20s))
      << gateway.output() << "\nserver4:\n"
      << server4.output() << "\nserver6:\n"
      << server6.output();

  // Two /time values from each, on the rule's topic: discovered, observed, bridged.
  const std::string time4 = "mc/" + dev4 + "/time";
  const std::string time6 = "mc/" + dev6 + "/time";
  EXPECT_TRUE(waitUntil(
      [&] {
        std::string t = tap.output();
        return payloadsOn(t, time4).size() >= 2 && payloadsOn(t, time6).size() >= 2;
      },
      20s))
      << "tap:\n"
      << tap.output() << "\ngateway:\n"
      << gateway.output();
  std::string t = tap.output();
  EXPECT_GE(payloadsOn(t, time4).size(), 2u) << t;
  EXPECT_GE(payloadsOn(t, time6).size(), 2u) << t;

  // Lifecycle on MQTT: joined events, online availability, the retained device list.
  auto events = payloadsOn(t, "coap2mqtt/bridge/event");
  for (const auto& [name, uri] : std::map<std::string, std::string>{{dev4, uri4}, {dev6, uri6}}) {
    bool joined = std::any_of(events.begin(), events.end(), [&](const std::string& p) {
      auto j = nlohmann::json::parse(p, nullptr, false);
      return !j.is_discarded() && j.value("type", "") == "device_joined" && j.contains("data") &&
             j["data"].value("name", "") == name && j["data"].value("uri", "") == uri &&
             j["data"].value("source", "") == "multicast";
    });
    EXPECT_TRUE(joined) << name << " " << uri << "\nevents:\n" << t;
    auto avail = payloadsOn(t, "coap2mqtt/" + name + "/availability");
    ASSERT_FALSE(avail.empty()) << name << "\n" << t;
    EXPECT_EQ(avail.back(), "online");
  }
  EXPECT_TRUE(waitUntil(
      [&] {
        auto lists = payloadsOn(tap.output(), "coap2mqtt/bridge/devices");
        if (lists.empty()) return false;
        auto j = nlohmann::json::parse(lists.back(), nullptr, false);
        return j.is_array() && findDevice(j, dev4) != nullptr && findDevice(j, dev6) != nullptr;
      },
      10s))
      << tap.output();

  // The registry: both stored, source multicast, with /time (observable) among their
  // resources. `devices` reads the database read-only while the daemon runs; resources are
  // written once the gateway has them, so poll.
  nlohmann::json list;
  RunResult devices;
  bool stored = waitUntil(
      [&] {
        devices = run({gatewayBinary(), "devices", "--json", "-c", dir.file("gateway.toml")});
        if (devices.rc != 0) return false;
        // The log may carry lines besides the JSON: take from the first '['.
        auto start = devices.output.find('[');
        if (start == std::string::npos) return false;
        list = nlohmann::json::parse(devices.output.substr(start), nullptr, false);
        if (list.is_discarded() || !list.is_array()) return false;
        for (const auto& name : {dev4, dev6}) {
          const nlohmann::json* d = findDevice(list, name);
          if (d == nullptr || !d->contains("resources")) return false;
          const auto& res = (*d)["resources"];
          if (std::none_of(res.begin(), res.end(),
                           [](const nlohmann::json& r) { return r.value("path", "") == "/time"; }))
            return false;
        }
        return true;
      },
      15s);
  ASSERT_TRUE(stored) << "rc " << devices.rc << "\n" << devices.output;
  ASSERT_EQ(list.size(), 2u) << list.dump(2);
  for (const auto& [name, uri] : std::map<std::string, std::string>{{dev4, uri4}, {dev6, uri6}}) {
    const nlohmann::json& d = *findDevice(list, name);
    EXPECT_EQ(d.value("uri", ""), uri) << d.dump(2);
    EXPECT_EQ(d.value("source", ""), "multicast") << d.dump(2);
    EXPECT_TRUE(d.value("online", false)) << d.dump(2);
    std::set<std::string> paths;
    bool time_obs = false;
    for (const auto& r : d["resources"]) {
      paths.insert(r.value("path", ""));
      if (r.value("path", "") == "/time") time_obs = r.value("obs", false);
    }
    EXPECT_TRUE(time_obs) << "/time is observable: " << d.dump(2);
    // coap-server-openssl's other resources, from its /.well-known/core.
    EXPECT_TRUE(paths.count("/example_data") == 1) << d.dump(2);
    EXPECT_TRUE(paths.count("/async") == 1) << d.dump(2);
  }

  // On demand: the admin request runs a round now and answers with who answered.
  const std::string response_topic = "coap2mqtt/bridge/response/discover";
  run(NetnsPair::in(net.b(),
                    {"mosquitto_pub", "-p", mqtt_port, "-t", "coap2mqtt/bridge/request/discover",
                     "-m", R"({"transaction":"d1"})"}),
      3s);
  ASSERT_TRUE(waitUntil([&] { return !payloadsOn(tap.output(), response_topic).empty(); }, 20s))
      << gateway.output();
  auto response =
      nlohmann::json::parse(payloadsOn(tap.output(), response_topic).back(), nullptr, false);
  ASSERT_FALSE(response.is_discarded()) << tap.output();
  EXPECT_EQ(response.value("status", ""), "ok") << response.dump();
  EXPECT_EQ(response.value("transaction", ""), "d1") << response.dump();
  std::set<std::string> answered;
  for (const auto& name : response["data"]["devices"]) answered.insert(name.get<std::string>());
  EXPECT_EQ(answered, (std::set<std::string>{dev4, dev6})) << response.dump();
}

}  // namespace
}  // namespace coap2mqtt::test
