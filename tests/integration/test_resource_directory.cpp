// Acceptance 3 of issue 4: the gateway as an RFC 9176 Resource Directory, on loopback.
// Devices that multicast cannot reach register themselves (POST /rd?ep=…&lt=…); the gateway
// then bridges them exactly like discovered ones, and lets them go when the registration
// expires or is deleted. The registering device is our simulator (a real CoAP server): it is
// registered on its behalf with base=coap://127.0.0.1:<its port>, since coap-client cannot
// serve resources itself.
#include <gtest/gtest.h>

#include <algorithm>
#include <csignal>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "tests/integration/gateway_process.h"
#include "tests/integration/harness.h"

namespace coap2mqtt::test {
namespace {

struct CoapReply {
  std::string code;  // "2.01", "4.00", … ; empty on timeout
  std::string payload;
  std::string location;  // Location-Path options joined with '/', e.g. "/rd/1"
  std::string log;       // coap-client's output, for failure messages
};

// One request with coap-client-openssl; argv goes straight to exec, so '&' in the URI needs
// no quoting. `extra` comes before the URI (e.g. {"-e", body, "-t", "40"} or {"-p", port}).
CoapReply coap(const std::string& method, const std::string& uri,
               std::vector<std::string> extra = {}) {
  TempDir dir;
  std::vector<std::string> argv = {"coap-client-openssl", "-v", "6", "-m", method, "-B", "5", "-o",
                                   dir.file("payload")};
  argv.insert(argv.end(), extra.begin(), extra.end());
  argv.push_back(uri);
  Process p(argv, dir.file("client.log"));
  if (p.stop(0, 12s) == -1) p.stop(SIGKILL, 2s);
  CoapReply r;
  r.log = p.output();
  // -v 6 logs every PDU as "v:1 t:ACK c:2.01 i:… {…} [ Location-Path:rd, Location-Path:1 ]";
  // the last line with a response code (not 0.00, not a method) is the answer.
  std::istringstream in(r.log);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("v:1 t:", 0) != 0) continue;
    std::istringstream fields(line);
    std::string v, t, c;
    fields >> v >> t >> c;
    if (c.size() != 6 || c.compare(0, 2, "c:") != 0 || c[3] != '.' || c == "c:0.00") continue;
    r.code = c.substr(2);
    r.location.clear();
    for (std::size_t pos = line.find("Location-Path:"); pos != std::string::npos;
         pos = line.find("Location-Path:", pos + 1)) {
      std::size_t start = pos + std::string("Location-Path:").size();
      std::size_t end = line.find_first_of(", ]", start);
      r.location += "/" + line.substr(start, end - start);
    }
  }
  std::ifstream body(dir.file("payload"), std::ios::binary);
  r.payload.assign(std::istreambuf_iterator<char>(body), std::istreambuf_iterator<char>());
  return r;
}

bool contains(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

class ResourceDirectory : public ::testing::Test {
 protected:
  void SetUp() override {
    sim_port_ = freeUdpPort();
    sim_ = std::make_unique<Process>(
        std::vector<std::string>{simulatorBinary(), "--devices", "1", "--address", "127.0.0.1",
                                 "--port", std::to_string(sim_port_), "--interval", "200"},
        dir_.file("sim.log"));
    ASSERT_TRUE(sim_->waitForOutput("READY", 10s)) << sim_->output();
    probe_ = std::make_unique<MqttProbe>(broker_.port(), "coap2mqtt/#");
    gw_port_ = freeUdpPort();
    gateway_ = startGateway(
        dir_, "[gateway]\nname = \"rd-gw\"\nstate_dir = \"" + dir_.path() +
                  "\"\n\n[coap]\nlisten = [\"127.0.0.1:" + std::to_string(gw_port_) +
                  "\"]\nrequest_timeout = \"3s\"\nretry_interval = \"1s\"\n\n"
                  "[mqtt]\nuri = \"" +
                  broker_.uri() +
                  "\"\n\n[[rule]]\nname = \"counter\"\nmatch = { path = \"/sensors/counter\" }\n"
                  "topic = \"coap2mqtt/{device}/{path}\"\n");
    ASSERT_TRUE(waitUntil(
        [&] { return !gateway_->running() || !coap("get", gw("/.well-known/core")).code.empty(); },
        10s));
    ASSERT_TRUE(gateway_->running()) << gateway_->output();
  }

  // The gateway's own CoAP endpoint.
  std::string gw(const std::string& path_and_query) const {
    return "coap://127.0.0.1:" + std::to_string(gw_port_) + path_and_query;
  }
  std::string simBase() const { return "coap://127.0.0.1:" + std::to_string(sim_port_); }

  // Registers the simulator as `ep` (lifetime `lt` s): 2.01 and a location expected.
  CoapReply registerSim(const std::string& ep, int lt) {
    return coap("post", gw("/rd?ep=" + ep + "&lt=" + std::to_string(lt) + "&base=" + simBase()),
                {"-e", "</sensors/counter>;obs;rt=\"counter\";ct=50", "-t", "40"});
  }

  // Payloads of bridge/event messages of `type` about device `name`.
  std::vector<nlohmann::json> events(const std::string& type, const std::string& name) const {
    std::vector<nlohmann::json> out;
    for (const auto& m : probe_->messagesOn("coap2mqtt/bridge/event")) {
      auto j = nlohmann::json::parse(m.payload, nullptr, false);
      if (j.is_discarded() || j.value("type", "") != type || !j.contains("data")) continue;
      if (j["data"].value("name", "") == name) out.push_back(j["data"]);
    }
    return out;
  }
  bool waitForEvent(const std::string& type, const std::string& name,
                    std::chrono::milliseconds timeout) const {
    return waitUntil([&] { return !events(type, name).empty(); }, timeout);
  }

  std::vector<std::string> availability(const std::string& name) const {
    std::vector<std::string> out;
    for (const auto& m : probe_->messagesOn("coap2mqtt/" + name + "/availability"))
      out.push_back(m.payload);
    return out;
  }
  bool waitForAvailability(const std::string& name, const std::string& state,
                           std::chrono::milliseconds timeout) const {
    return waitUntil(
        [&] {
          auto a = availability(name);
          return !a.empty() && a.back() == state;
        },
        timeout);
  }

  std::size_t counterValues(const std::string& name) const {
    return probe_->messagesOn("coap2mqtt/" + name + "/sensors/counter").size();
  }

  std::string dump() const {
    std::string out = "gateway log:\n" + gateway_->output() + "\nmqtt:\n";
    for (const auto& m : probe_->messages()) {
      if (!contains(m.topic, "/sensors/")) out += m.topic + " " + m.payload + "\n";
    }
    return out;
  }

  TempDir dir_;
  Mosquitto broker_;
  int sim_port_ = 0;
  int gw_port_ = 0;
  std::unique_ptr<Process> sim_;
  std::unique_ptr<MqttProbe> probe_;
  std::unique_ptr<Process> gateway_;
};

TEST_F(ResourceDirectory, AdvertisedInTheGatewaysWellKnownCore) {
  CoapReply wk = coap("get", gw("/.well-known/core"));
  EXPECT_EQ(wk.code, "2.05") << wk.log;
  EXPECT_TRUE(contains(wk.payload, "</rd>")) << wk.payload;
  EXPECT_TRUE(contains(wk.payload, "rt=\"core.rd\"")) << wk.payload;
  // The lookup interfaces are advertised too (RFC 9176 §4.3).
  EXPECT_TRUE(contains(wk.payload, "</rd-lookup/ep>")) << wk.payload;
  EXPECT_TRUE(contains(wk.payload, "</rd-lookup/res>")) << wk.payload;
  // Discovery of the RD by resource type (RFC 9176 §4.3: GET /.well-known/core?rt=core.rd*).
  CoapReply filtered = coap("get", gw("/.well-known/core?rt=core.rd"));
  EXPECT_EQ(filtered.code, "2.05") << filtered.log;
  EXPECT_TRUE(contains(filtered.payload, "</rd>")) << filtered.payload;
}

TEST_F(ResourceDirectory, RegisteredDeviceIsBridgedLookedUpAndDeleted) {
  CoapReply reg = registerSim("node7", 60);
  ASSERT_EQ(reg.code, "2.01") << reg.log << dump();
  ASSERT_EQ(reg.location.rfind("/rd/", 0), 0u) << "Location-Path: " << reg.location << "\n"
                                               << reg.log;
  ASSERT_GT(reg.location.size(), 4u) << reg.log;

  // Joined like a discovered device, but from the RD.
  ASSERT_TRUE(waitForEvent("device_joined", "node7", 10s)) << dump();
  auto joined = events("device_joined", "node7").front();
  EXPECT_EQ(joined.value("source", ""), "rd") << joined.dump();
  EXPECT_EQ(joined.value("uri", ""), simBase()) << joined.dump();
  EXPECT_TRUE(waitForAvailability("node7", "online", 10s)) << dump();
  // Observed and bridged: several counter values, in order, as JSON.
  ASSERT_TRUE(probe_->waitForCount("coap2mqtt/node7/sensors/counter", 3, 15s)) << dump();
  long last = -1;
  for (const auto& m : probe_->messagesOn("coap2mqtt/node7/sensors/counter")) {
    auto j = nlohmann::json::parse(m.payload, nullptr, false);
    ASSERT_TRUE(j.is_object() && j.contains("seq")) << m.payload;
    EXPECT_GT(j["seq"].get<long>(), last) << m.payload;
    last = j["seq"].get<long>();
  }
  // In the retained device list.
  EXPECT_TRUE(probe_->waitFor(
      [](const std::vector<MqttMessage>& msgs) {
        for (auto it = msgs.rbegin(); it != msgs.rend(); ++it) {
          if (it->topic != "coap2mqtt/bridge/devices") continue;
          return contains(it->payload, "\"name\":\"node7\"") &&
                 contains(it->payload, "\"source\":\"rd\"");
        }
        return false;
      },
      10s))
      << dump();

  // GET /rd/<n>: the registration's links.
  CoapReply read = coap("get", gw(reg.location));
  EXPECT_EQ(read.code, "2.05") << read.log;
  EXPECT_TRUE(contains(read.payload, "</sensors/counter>")) << read.payload;

  // Endpoint lookup: all, by ep, by a prefix, and a miss.
  for (const std::string query : {"", "?ep=node7", "?ep=node*"}) {
    CoapReply ep = coap("get", gw("/rd-lookup/ep" + query));
    EXPECT_EQ(ep.code, "2.05") << query << "\n" << ep.log;
    EXPECT_TRUE(contains(ep.payload, "<" + reg.location + ">")) << query << ": " << ep.payload;
    EXPECT_TRUE(contains(ep.payload, "ep=\"node7\"")) << query << ": " << ep.payload;
    EXPECT_TRUE(contains(ep.payload, "base=\"" + simBase() + "\"")) << query << ": " << ep.payload;
  }
  CoapReply miss = coap("get", gw("/rd-lookup/ep?ep=node8"));
  EXPECT_FALSE(contains(miss.payload, "node7")) << miss.payload;

  // Resource lookup: the target resolved against the registration's base.
  for (const std::string query : {"", "?rt=counter", "?ep=node7"}) {
    CoapReply res = coap("get", gw("/rd-lookup/res" + query));
    EXPECT_EQ(res.code, "2.05") << query << "\n" << res.log;
    EXPECT_TRUE(contains(res.payload, "<" + simBase() + "/sensors/counter>"))
        << query << ": " << res.payload;
    // RFC 6690 allows a single relation type unquoted.
    EXPECT_TRUE(contains(res.payload, "rt=\"counter\"") || contains(res.payload, "rt=counter"))
        << query << ": " << res.payload;
    EXPECT_TRUE(contains(res.payload, "obs")) << query << ": " << res.payload;
  }
  CoapReply res_miss = coap("get", gw("/rd-lookup/res?rt=temperature"));
  EXPECT_FALSE(contains(res_miss.payload, "/sensors/counter")) << res_miss.payload;

  // The registry has it, with its resource.
  auto devices = Process({gatewayBinary(), "devices", "--json", "-c", dir_.file("gateway.toml")},
                         dir_.file("devices.log"));
  ASSERT_EQ(devices.stop(0, 10s), 0) << devices.output();
  auto list =
      nlohmann::json::parse(devices.output().substr(devices.output().find('[')), nullptr, false);
  ASSERT_TRUE(list.is_array()) << devices.output();
  auto node = std::find_if(list.begin(), list.end(),
                           [](const nlohmann::json& d) { return d.value("name", "") == "node7"; });
  ASSERT_NE(node, list.end()) << list.dump(2);
  EXPECT_EQ(node->value("source", ""), "rd");
  EXPECT_EQ(node->value("uri", ""), simBase());
  ASSERT_TRUE(node->contains("resources"));
  EXPECT_TRUE(std::any_of((*node)["resources"].begin(), (*node)["resources"].end(),
                          [](const nlohmann::json& r) {
                            return r.value("path", "") == "/sensors/counter" &&
                                   r.value("obs", false);
                          }))
      << node->dump(2);

  // DELETE: gone from the RD, the gateway says it left and stops bridging it.
  CoapReply del = coap("delete", gw(reg.location));
  EXPECT_EQ(del.code, "2.02") << del.log;
  EXPECT_TRUE(waitForEvent("device_left", "node7", 10s)) << dump();
  EXPECT_EQ(coap("get", gw(reg.location)).code, "4.04");
  EXPECT_EQ(coap("delete", gw(reg.location)).code, "4.04");
  EXPECT_FALSE(contains(coap("get", gw("/rd-lookup/ep")).payload, "node7"));
  EXPECT_FALSE(contains(coap("get", gw("/rd-lookup/res")).payload, "/sensors/counter"));
  // The retained availability is cleared (an empty retained message deletes it).
  EXPECT_TRUE(waitUntil(
      [&] {
        auto a = availability("node7");
        return !a.empty() && a.back().empty();
      },
      5s))
      << dump();
  std::this_thread::sleep_for(1500ms);  // in-flight notifications settle
  const std::size_t after_delete = counterValues("node7");
  std::this_thread::sleep_for(2s);  // the simulator notifies every 200 ms
  EXPECT_EQ(counterValues("node7"), after_delete) << "still bridged after DELETE";
}

// RFC 9176 §7 (issue 17): an expired registration takes away what it created, so that
// registrations cannot pile up as devices without end.
TEST_F(ResourceDirectory, RegistrationExpiresAfterItsLifetimeAndTheDeviceIsRemoved) {
  const auto t0 = std::chrono::steady_clock::now();
  CoapReply reg = registerSim("node7", 3);
  ASSERT_EQ(reg.code, "2.01") << reg.log << dump();
  ASSERT_TRUE(waitForAvailability("node7", "online", 10s)) << dump();
  ASSERT_TRUE(probe_->waitForCount("coap2mqtt/node7/sensors/counter", 2, 10s)) << dump();

  // No update: removed once the 3 s lifetime has run out, not before.
  ASSERT_TRUE(waitForEvent("device_left", "node7", 10s)) << dump();
  const auto elapsed = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(elapsed, 2900ms) << "removed before the lifetime ran out";
  EXPECT_TRUE(waitForAvailability("node7", "", 5s)) << "retained availability not cleared\n"
                                                    << dump();
  EXPECT_EQ(coap("get", gw(reg.location)).code, "4.04") << "the registration should be gone";
  EXPECT_FALSE(contains(coap("get", gw("/rd-lookup/ep")).payload, "node7"));
  // The observation ends with the registration although the simulator is still there.
  std::this_thread::sleep_for(1500ms);
  const std::size_t after_expiry = counterValues("node7");
  std::this_thread::sleep_for(3s);
  EXPECT_EQ(counterValues("node7"), after_expiry) << "still bridged after expiry\n" << dump();

  // Registering again brings it back, under the same name, bridged again.
  CoapReply again = registerSim("node7", 60);
  ASSERT_EQ(again.code, "2.01") << again.log;
  EXPECT_TRUE(waitForAvailability("node7", "online", 10s)) << dump();
  EXPECT_TRUE(probe_->waitForCount("coap2mqtt/node7/sensors/counter", after_expiry + 3, 15s))
      << "not bridged after re-registration\n"
      << dump();
  EXPECT_EQ(events("device_joined", "node7").size(), 2u) << "joined, left, joined again";
}

TEST_F(ResourceDirectory, RefreshedRegistrationOutlivesItsOriginalLifetime) {
  const auto t0 = std::chrono::steady_clock::now();
  CoapReply reg = registerSim("node7", 3);
  ASSERT_EQ(reg.code, "2.01") << reg.log << dump();
  ASSERT_TRUE(waitForAvailability("node7", "online", 10s)) << dump();

  // Refresh (POST /rd/<n>, no body) every second for three lifetimes.
  while (std::chrono::steady_clock::now() - t0 < 9s) {
    CoapReply upd = coap("post", gw(reg.location));
    EXPECT_EQ(upd.code, "2.04") << upd.log;
    std::this_thread::sleep_for(1s);
  }
  EXPECT_EQ(availability("node7").back(), "online") << dump();
  EXPECT_TRUE(events("device_offline", "node7").empty()) << dump();
  EXPECT_TRUE(events("device_left", "node7").empty()) << dump();
  EXPECT_EQ(coap("get", gw(reg.location)).code, "2.05");
  // Still bridged: values keep coming.
  const std::size_t before = counterValues("node7");
  EXPECT_TRUE(probe_->waitForCount("coap2mqtt/node7/sensors/counter", before + 3, 5s)) << dump();

  // An update may also change the lifetime; then, left alone, it expires.
  CoapReply upd = coap("post", gw(reg.location + "?lt=2"));
  EXPECT_EQ(upd.code, "2.04") << upd.log;
  EXPECT_TRUE(waitForEvent("device_left", "node7", 8s)) << dump();

  // Updating an unknown (or expired) registration is 4.04.
  EXPECT_EQ(coap("post", gw(reg.location)).code, "4.04");
  EXPECT_EQ(coap("post", gw("/rd/9999")).code, "4.04");
}

TEST_F(ResourceDirectory, BadRegistrationsAreRejectedAndNothingIsRegistered) {
  const std::string body = "</sensors/counter>;obs";
  // No ep: 4.00 (RFC 9176 §5: ep is mandatory here, we have no other source of a name).
  CoapReply no_ep = coap("post", gw("/rd?lt=60&base=" + simBase()), {"-e", body});
  EXPECT_EQ(no_ep.code, "4.00") << no_ep.log;
  // Lifetime out of range or not a number.
  EXPECT_EQ(coap("post", gw("/rd?ep=bad1&lt=0&base=" + simBase()), {"-e", body}).code, "4.00");
  EXPECT_EQ(coap("post", gw("/rd?ep=bad2&lt=soon&base=" + simBase()), {"-e", body}).code, "4.00");
  // A body that is not link-format.
  EXPECT_EQ(coap("post", gw("/rd?ep=bad3&lt=60&base=" + simBase()), {"-e", "<unterminated"}).code,
            "4.00");
  // Another content-format than link-format: 4.15.
  EXPECT_EQ(coap("post", gw("/rd?ep=bad4&lt=60&base=" + simBase()), {"-e", "{}", "-t", "50"}).code,
            "4.15");
  // Only POST creates registrations.
  EXPECT_EQ(coap("get", gw("/rd")).code, "4.05");

  CoapReply ep = coap("get", gw("/rd-lookup/ep"));
  EXPECT_EQ(ep.code, "2.05") << ep.log;
  EXPECT_TRUE(ep.payload.empty()) << ep.payload;
  std::this_thread::sleep_for(1s);
  for (const auto& m : probe_->messagesOn("coap2mqtt/bridge/event")) {
    EXPECT_FALSE(contains(m.payload, "device_joined")) << m.payload;
  }
  EXPECT_EQ(gateway_->countInOutput("registered as"), 0u) << gateway_->output();
}

TEST_F(ResourceDirectory, WithoutBaseTheRequestsSourceIsTheDevicesAddress) {
  // coap-client bound to a known local port stands for a device registering itself.
  const int client_port = freeUdpPort();
  CoapReply reg =
      coap("post", gw("/rd?ep=node9&lt=60"), {"-p", std::to_string(client_port), "-e", "</t>;obs"});
  ASSERT_EQ(reg.code, "2.01") << reg.log;
  const std::string base = "coap://127.0.0.1:" + std::to_string(client_port);
  CoapReply ep = coap("get", gw("/rd-lookup/ep?ep=node9"));
  EXPECT_TRUE(contains(ep.payload, "base=\"" + base + "\"")) << ep.payload;
  CoapReply res = coap("get", gw("/rd-lookup/res?ep=node9"));
  EXPECT_TRUE(contains(res.payload, "<" + base + "/t>")) << res.payload;
  ASSERT_TRUE(waitForEvent("device_joined", "node9", 10s)) << dump();
  EXPECT_EQ(events("device_joined", "node9").front().value("uri", ""), base);
}

TEST_F(ResourceDirectory, ReRegistrationKeepsTheLocationAndFollowsAMovedDevice) {
  // A second simulated device: the same endpoint will move there.
  const int other_port = freeUdpPort();
  Process other({simulatorBinary(), "--devices", "1", "--address", "127.0.0.1", "--port",
                 std::to_string(other_port), "--interval", "200", "--name-prefix", "moved"},
                dir_.file("sim-moved.log"));
  ASSERT_TRUE(other.waitForOutput("READY", 10s)) << other.output();
  const std::string other_base = "coap://127.0.0.1:" + std::to_string(other_port);

  CoapReply reg = registerSim("node7", 60);
  ASSERT_EQ(reg.code, "2.01") << reg.log;
  ASSERT_TRUE(probe_->waitForCount("coap2mqtt/node7/sensors/counter", 2, 10s)) << dump();
  const std::string first = probe_->messagesOn("coap2mqtt/node7/sensors/counter").back().payload;

  // The same endpoint registers again from the same place: same registration, same device.
  CoapReply same = registerSim("node7", 60);
  EXPECT_EQ(same.code, "2.01") << same.log;
  EXPECT_EQ(same.location, reg.location) << "RFC 9176 §5: (ep, d) identifies the registration";

  // Then from elsewhere (a new address after a reboot, say): the gateway must follow it.
  CoapReply moved =
      coap("post", gw("/rd?ep=node7&lt=60&base=" + other_base), {"-e", "</sensors/counter>;obs"});
  EXPECT_EQ(moved.code, "2.01") << moved.log;
  EXPECT_EQ(moved.location, reg.location);
  CoapReply ep = coap("get", gw("/rd-lookup/ep?ep=node7"));
  EXPECT_TRUE(contains(ep.payload, "base=\"" + other_base + "\"")) << ep.payload;
  EXPECT_TRUE(waitUntil(
      [&] {
        auto values = probe_->messagesOn("coap2mqtt/node7/sensors/counter");
        return !values.empty() && contains(values.back().payload, "\"device\":\"moved");
      },
      10s))
      << "values should now come from the moved device (first ones: " << first << ")\n"
      << dump()
      << "\nlast value: " << probe_->messagesOn("coap2mqtt/node7/sensors/counter").back().payload;
  EXPECT_EQ(events("device_joined", "node7").size(), 1u) << dump();
  EXPECT_EQ(availability("node7").back(), "online");
}

// Registrations outlive a gateway restart (the device is re-observed from the registry at
// once, issue 4 "Restart"), but not their lifetime: a registration that is not updated ends,
// restart or not, and the device goes offline.
TEST_F(ResourceDirectory, LifetimeStillEndsTheRegistrationAfterAGatewayRestart) {
  const auto t0 = std::chrono::steady_clock::now();
  CoapReply reg = registerSim("node7", 6);
  ASSERT_EQ(reg.code, "2.01") << reg.log;
  ASSERT_TRUE(probe_->waitForCount("coap2mqtt/node7/sensors/counter", 2, 10s)) << dump();

  ASSERT_EQ(gateway_->stop(15, 10s), 0) << gateway_->output();
  const std::string first_log = gateway_->output();
  gateway_ =
      std::make_unique<Process>(std::vector<std::string>{gatewayBinary(), "run", "-c",
                                                         dir_.file("gateway.toml"), "-l", "debug"},
                                dir_.file("gateway-2.log"));
  ASSERT_TRUE(waitUntil(
      [&] { return !gateway_->running() || !coap("get", gw("/.well-known/core")).code.empty(); },
      10s))
      << gateway_->output();
  // Bridged again without a new registration (from the registry).
  const std::size_t n = counterValues("node7");
  ASSERT_TRUE(probe_->waitForCount("coap2mqtt/node7/sensors/counter", n + 2, 10s)) << dump();

  // 6 s after registering, with no update, node7 must be gone (removed with its
  // registration: availability cleared).
  EXPECT_TRUE(waitUntil(
      [&] {
        auto a = availability("node7");
        return !a.empty() && a.back().empty();
      },
      std::chrono::duration_cast<std::chrono::milliseconds>(t0 + 6s + 5s -
                                                            std::chrono::steady_clock::now())))
      << "lifetime 6 s, "
      << std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - t0)
             .count()
      << " s since registration, still online\nlookup after restart: "
      << coap("get", gw("/rd-lookup/ep")).payload << "\nfirst run:\n"
      << first_log << "\n"
      << dump();
}

// A configured device's name wins over an RD endpoint name (issue 4: "a configured name wins;
// an RD ep next"): an endpoint that registers under the name of a [[coap.device]] elsewhere
// must not take that device over.
TEST(ResourceDirectoryNames, EndpointNamedLikeAConfiguredDeviceDoesNotTakeItOver) {
  TempDir dir;
  Mosquitto broker;
  const int port = freeUdpPortRange(2);
  Process sim({simulatorBinary(), "--devices", "2", "--address", "127.0.0.1", "--port",
               std::to_string(port), "--interval", "200"},
              dir.file("sim.log"));
  ASSERT_TRUE(sim.waitForOutput("READY", 10s)) << sim.output();
  MqttProbe probe(broker.port(), "coap2mqtt/#");
  const int gw_port = freeUdpPort();
  const std::string configured = "coap://127.0.0.1:" + std::to_string(port);
  const std::string other = "coap://127.0.0.1:" + std::to_string(port + 1);
  auto gateway = startGateway(
      dir, "[gateway]\nname = \"rd-gw\"\nstate_dir = \"" + dir.path() +
               "\"\n\n[coap]\nlisten = [\"127.0.0.1:" + std::to_string(gw_port) +
               "\"]\nrequest_timeout = \"3s\"\nretry_interval = \"1s\"\n\n"
               "[[coap.device]]\nname = \"node7\"\nuri = \"" +
               configured + "\"\n\n[mqtt]\nuri = \"" + broker.uri() +
               "\"\n\n[[rule]]\nname = \"counter\"\nmatch = { path = \"/sensors/counter\" }\n"
               "topic = \"coap2mqtt/{device}/{path}\"\n");
  const std::string topic = "coap2mqtt/node7/sensors/counter";
  ASSERT_TRUE(probe.waitForCount(topic, 2, 15s)) << gateway->output();
  ASSERT_TRUE(contains(probe.messagesOn(topic).back().payload, "\"device\":\"dev0\""));

  CoapReply reg = coap(
      "post", "coap://127.0.0.1:" + std::to_string(gw_port) + "/rd?ep=node7&lt=60&base=" + other,
      {"-e", "</sensors/counter>;obs"});
  ASSERT_EQ(reg.code, "2.01") << reg.log;
  // The registered device joins under a name of its own…
  std::string joined_name;
  EXPECT_TRUE(waitUntil(
      [&] {
        for (const auto& m : probe.messagesOn("coap2mqtt/bridge/event")) {
          auto j = nlohmann::json::parse(m.payload, nullptr, false);
          if (!j.is_discarded() && j.value("type", "") == "device_joined" &&
              j["data"].value("uri", "") == other) {
            joined_name = j["data"].value("name", "");
            return true;
          }
        }
        return false;
      },
      10s))
      << gateway->output();
  EXPECT_NE(joined_name, "node7");
  // …and node7 is still the configured device at its configured address.
  std::this_thread::sleep_for(2s);
  const std::size_t n = probe.messagesOn(topic).size();
  ASSERT_TRUE(probe.waitForCount(topic, n + 3, 10s)) << gateway->output();
  EXPECT_TRUE(contains(probe.messagesOn(topic).back().payload, "\"device\":\"dev0\""))
      << "node7 (configured at " << configured
      << ") now bridges another device: " << probe.messagesOn(topic).back().payload;
}

TEST_F(ResourceDirectory, EndpointNameIsSanitisedIntoATopicLevel) {
  // '+' is an MQTT wildcard: it must not reach a topic.
  CoapReply reg = registerSim("room+1", 60);
  ASSERT_EQ(reg.code, "2.01") << reg.log;
  ASSERT_TRUE(waitForEvent("device_joined", "room-1", 10s)) << dump();
  EXPECT_TRUE(waitForAvailability("room-1", "online", 10s)) << dump();
  EXPECT_TRUE(probe_->waitForCount("coap2mqtt/room-1/sensors/counter", 2, 10s)) << dump();
  // The RD itself keeps the endpoint name as registered.
  EXPECT_TRUE(contains(coap("get", gw("/rd-lookup/ep")).payload, "ep=\"room+1\""));
}

// Issue 17, finding 1 (RD takeover): another host on the LAN can neither point the gateway
// at a device it does not own (base), nor claim, update, re-point or delete a registration
// it did not make. The attacker is coap-client bound to 127.0.0.2 (-a), the device and its
// registrant are on 127.0.0.1.
TEST_F(ResourceDirectory, AnotherHostCannotTakeOverOrDeleteARegistration) {
  const std::vector<std::string> from_attacker = {"-a", "127.0.0.2"};
  const std::string body = "</sensors/counter>;obs";
  CoapReply reg = registerSim("node7", 60);
  ASSERT_EQ(reg.code, "2.01") << reg.log;
  ASSERT_TRUE(probe_->waitForCount("coap2mqtt/node7/sensors/counter", 2, 10s)) << dump();

  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.begin(), from_attacker.begin(), from_attacker.end());
    return extra;
  };
  // Registering a device at someone else's address (and so blinding or re-pointing it).
  EXPECT_EQ(coap("post", gw("/rd?ep=evil&lt=1&base=" + simBase()), with({"-e", body})).code,
            "4.03");
  // Claiming the endpoint registered by another host.
  EXPECT_EQ(coap("post", gw("/rd?ep=node7&lt=1"), with({"-e", body})).code, "4.03");
  // Updating, re-pointing or deleting another host's registration.
  EXPECT_EQ(coap("post", gw(reg.location + "?lt=1"), from_attacker).code, "4.03");
  EXPECT_EQ(coap("post", gw(reg.location + "?base=coap://127.0.0.2:9"), from_attacker).code,
            "4.03");
  EXPECT_EQ(coap("delete", gw(reg.location), from_attacker).code, "4.03");
  // A registration from the attacker's own address is its own business, and is allowed.
  EXPECT_EQ(coap("post", gw("/rd?ep=attacker&lt=60"), with({"-e", body})).code, "2.01");

  // node7 is untouched: same base, still online, still bridged after the 1 s lifetimes the
  // attacker asked for would have run out.
  std::this_thread::sleep_for(2500ms);
  EXPECT_TRUE(
      contains(coap("get", gw("/rd-lookup/ep?ep=node7")).payload, "base=\"" + simBase() + "\""));
  EXPECT_EQ(availability("node7").back(), "online") << dump();
  EXPECT_TRUE(events("device_left", "node7").empty()) << dump();
  const std::size_t n = counterValues("node7");
  EXPECT_TRUE(probe_->waitForCount("coap2mqtt/node7/sensors/counter", n + 3, 10s)) << dump();
  // The registrant itself may still update and delete.
  EXPECT_EQ(coap("post", gw(reg.location)).code, "2.04");
  EXPECT_EQ(coap("delete", gw(reg.location)).code, "2.02");
  EXPECT_TRUE(waitForEvent("device_left", "node7", 5s)) << dump();
}

// Issue 17, finding 1: locations cannot be guessed (they were /rd/1, /rd/2, ...).
TEST_F(ResourceDirectory, RegistrationLocationsAreNotSequential) {
  CoapReply a = registerSim("node-a", 60);
  CoapReply b = registerSim("node-b", 60);
  ASSERT_EQ(a.code, "2.01") << a.log;
  ASSERT_EQ(b.code, "2.01") << b.log;
  ASSERT_EQ(a.location.rfind("/rd/", 0), 0u) << a.location;
  ASSERT_EQ(b.location.rfind("/rd/", 0), 0u) << b.location;
  const auto id_a = std::stoull(a.location.substr(4));
  const auto id_b = std::stoull(b.location.substr(4));
  EXPECT_NE(id_a, id_b);
  // Random 60-bit numbers: both below a million (or adjacent) has odds of about 1e-12.
  EXPECT_FALSE(id_a < 1000000 && id_b < 1000000) << a.location << " " << b.location;
  EXPECT_GT(id_a > id_b ? id_a - id_b : id_b - id_a, 1u);
}

}  // namespace
}  // namespace coap2mqtt::test
