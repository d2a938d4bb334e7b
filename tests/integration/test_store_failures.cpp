// Issue 16, acceptance 3, and issue 17, finding 2: the registry's database failing, or a
// hostile datagram aimed at it, costs neither the daemon nor a device.
//
// - The registry locked by another connection (BEGIN EXCLUSIVE from this test process: a
//   lock works as root, where chmod does not) while a new device answers a multicast round
//   and another registers in the Resource Directory: the gateway stays up, keeps bridging,
//   announces both on MQTT, logs the failure at most once per interval, and writes both
//   devices once the lock is gone.
// - A multicast answer and an RD registration carrying </a>;sz=9223372036854775808 (which
//   made Store::save throw, outside any try, and ended the daemon): it stays up and both
//   devices are stored.
//
// Everything runs in a private network namespace (root and `ip netns`; skipped otherwise):
// its lo is multicast capable, so 224.0.1.187 and the fixed ports are ours alone. The test
// process reaches MQTT through a mosquitto_sub tap inside the namespace and the database
// through the file system.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/integration/harness.h"
#include "tests/integration/netns.h"
#include "tests/integration/ns_gateway.h"

namespace coap2mqtt::test {
namespace {

using Clock = std::chrono::steady_clock;

// What a failure that repeats is logged at most once per (gateway/repeated_failure.h).
constexpr auto kLogInterval = 10s;

// Another connection holding the registry's write lock, as a second process would.
class DbLock {
 public:
  explicit DbLock(const std::string& path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
      const std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
      sqlite3_close(db_);
      throw std::runtime_error("open " + path + ": " + msg);
    }
    sqlite3_busy_timeout(db_, 5000);  // the daemon's own writes are short
    exec("BEGIN EXCLUSIVE");
  }
  ~DbLock() { sqlite3_close_v2(db_); }  // rolls back if still held
  DbLock(const DbLock&) = delete;
  DbLock& operator=(const DbLock&) = delete;
  void release() { exec("COMMIT"); }

 private:
  void exec(const char* sql) {
    if (sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) != SQLITE_OK) {
      throw std::runtime_error(std::string(sql) + ": " + sqlite3_errmsg(db_));
    }
  }
  sqlite3* db_ = nullptr;
};

// One column of every row of `sql` on the file, read-only.
std::vector<std::string> column(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  std::vector<std::string> out;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK) {
      while (sqlite3_step(stmt) == SQLITE_ROW) {
        const auto* t = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
        out.emplace_back(t != nullptr ? t : "NULL");
      }
    }
    sqlite3_finalize(stmt);
  }
  sqlite3_close_v2(db);
  return out;
}

class StoreFailures : public NsGatewayTest {
 protected:
  std::string dbPath() const { return dir_.file("registry.db"); }

  void startGateway() { NsGatewayTest::startGateway("store-gw", "3s", "3s"); }

  Process& startSim(const std::string& address, int count, bool multicast) {
    return NsGatewayTest::startSim(address, count, multicast, 500);
  }

  // POST /rd on the gateway with coap-client inside the namespace, sent from the base's
  // host (the RD takes a base only from its own host); its log.
  std::string registerInRd(const std::string& ep, const std::string& base,
                           const std::string& links) {
    const std::string host = base.substr(7, base.rfind(':') - 7);  // coap://HOST:port
    std::string out;
    ns_->run({"coap-client-openssl", "-v", "6", "-m", "post", "-B", "5", "-t", "40", "-a", host,
              "-e", links,
              "coap://127.0.0.1:" + std::to_string(kGatewayPort) + "/rd?ep=" + ep +
                  "&lt=600&base=" + base},
             &out, 15s);
    return out;
  }

  // `coap2mqtt devices --json` (reads the file only, read-only: runs on the host).
  nlohmann::json devices(std::string* raw = nullptr) {
    Process p({gatewayBinary(), "devices", "--json", "-c", dir_.file("gateway.toml")},
              dir_.file("devices-" + std::to_string(++devices_runs_) + ".json"));
    const int rc = p.stop(0, 20s);
    const std::string out = p.output();
    if (raw != nullptr) *raw = out;
    if (rc != 0) return nlohmann::json();
    const auto start = out.find('[');
    if (start == std::string::npos) return nlohmann::json();
    return nlohmann::json::parse(out.substr(start), nullptr, false);
  }

  static const nlohmann::json* find(const nlohmann::json& list, const std::string& name) {
    if (!list.is_array()) return nullptr;
    for (const auto& d : list) {
      if (d.value("name", "") == name) return &d;
    }
    return nullptr;
  }

  static bool hasResource(const nlohmann::json* device, const std::string& path) {
    if (device == nullptr || !device->contains("resources")) return false;
    const auto& rs = (*device)["resources"];
    return std::any_of(rs.begin(), rs.end(),
                       [&](const nlohmann::json& r) { return r.value("path", "") == path; });
  }

  // bridge/event device_joined payloads seen for `name`.
  bool joined(const std::string& name) const {
    for (const auto& m : tap_->messagesOn("c2m/bridge/event")) {
      const auto j = nlohmann::json::parse(m.payload, nullptr, false);
      if (!j.is_discarded() && j.value("type", "") == "device_joined" && j.contains("data") &&
          j["data"].value("name", "") == name) {
        return true;
      }
    }
    return false;
  }

  // The retained bridge/devices list, last version, names.
  std::set<std::string> listed() const {
    std::set<std::string> out;
    const auto lists = tap_->messagesOn("c2m/bridge/devices");
    if (lists.empty()) return out;
    const auto j = nlohmann::json::parse(lists.back().payload, nullptr, false);
    if (!j.is_array()) return out;
    for (const auto& d : j) out.insert(d.value("name", ""));
    return out;
  }

  int devices_runs_ = 0;
};

// Issue 16, acceptance 3.
TEST_F(StoreFailures, ALockedRegistryCostsNeitherTheDaemonNorTheDevicesThatJoinMeanwhile) {
  const std::string known = "coap-127-0-0-10";
  const std::string discovered = "coap-127-0-0-11";
  const std::string registered = "rdnode";
  startSim("127.0.0.10", 1, true);
  startGateway();
  ASSERT_TRUE(waitUntil([&] { return values(known) >= 2; }, 30s)) << dump();
  ASSERT_TRUE(
      waitUntil([&] { return hasResource(find(devices(), known), "/sensors/counter"); }, 10s))
      << dump();

  DbLock lock(dbPath());
  const auto locked_at = Clock::now();
  // (a) A new device answers a multicast round (run on request, as the admin API does).
  startSim("127.0.0.11", 1, true);
  // The RD device: a plain simulator device, registered on its behalf.
  startSim("127.0.0.12", 1, false);
  publish("c2m/bridge/request/discover", R"({"transaction":"locked"})");
  // (b) A device registers in the Resource Directory.
  const std::string reg = registerInRd(registered, "coap://127.0.0.12:5683",
                                       R"(</sensors/counter>;obs;rt="counter";ct=50)");
  EXPECT_NE(reg.find("2.01"), std::string::npos) << reg << dump();

  // Meanwhile: announced on MQTT, bridged, and the known device's values keep coming.
  EXPECT_TRUE(waitUntil([&] { return joined(discovered) && joined(registered); }, 15s)) << dump();
  EXPECT_TRUE(waitUntil(
      [&] {
        const auto names = listed();
        return names.count(discovered) == 1 && names.count(registered) == 1;
      },
      10s))
      << dump();
  const std::size_t known_before = values(known);
  EXPECT_TRUE(waitUntil(
      [&] {
        return values(discovered) >= 2 && values(registered) >= 2 &&
               values(known) >= known_before + 3;
      },
      15s))
      << dump();

  // Hold the lock for more than one log interval, then look at the log.
  while (Clock::now() - locked_at < kLogInterval + 5s) std::this_thread::sleep_for(200ms);
  ASSERT_TRUE(gateway_->running()) << dump();
  EXPECT_GE(values(known), known_before + 10) << "values stopped while the file was locked";

  // `coap2mqtt devices` still reads (WAL), and the lock held: the new devices are not in the
  // file yet.
  std::string raw;
  const nlohmann::json during = devices(&raw);
  ASSERT_TRUE(during.is_array()) << raw;
  EXPECT_NE(find(during, known), nullptr) << raw;
  EXPECT_EQ(find(during, discovered), nullptr) << "written under the lock?\n" << raw;
  EXPECT_EQ(find(during, registered), nullptr) << "written under the lock?\n" << raw;

  // The failure is logged (it carries SQLite's words, whoever logs it), at most once per
  // interval: the window spans two intervals at most, so at most two lines.
  const auto window = Clock::now() - locked_at;
  const std::size_t lines = gateway_->countInOutput("database is locked");
  EXPECT_GE(lines, 1u) << dump();
  const auto intervals = static_cast<std::size_t>(window / kLogInterval) + 1;
  EXPECT_LE(lines, intervals) << "logged more than once per " << kLogInterval.count() << " s over "
                              << std::chrono::duration<double>(window).count() << " s\n"
                              << dump();

  lock.release();
  // Written at the next flush (every 2 s): with resources, and the registration too.
  nlohmann::json after;
  EXPECT_TRUE(waitUntil(
      [&] {
        after = devices(&raw);
        return hasResource(find(after, discovered), "/sensors/counter") &&
               hasResource(find(after, registered), "/sensors/counter");
      },
      15s))
      << raw << dump();
  if (const nlohmann::json* d = find(after, discovered)) {
    EXPECT_EQ(d->value("source", ""), "multicast");
  }
  if (const nlohmann::json* d = find(after, registered)) {
    EXPECT_EQ(d->value("source", ""), "rd");
  }
  EXPECT_EQ(column(dbPath(), "SELECT ep FROM rd_registrations"),
            std::vector<std::string>{registered});
  EXPECT_TRUE(gateway_->running()) << dump();
  EXPECT_EQ(gateway_->countInOutput("database is locked"), lines)
      << "still failing after the lock went\n"
      << dump();
  EXPECT_EQ(gateway_->stop(15, 10s), 0) << dump();
}

// Issue 17, finding 2: one datagram with sz=9223372036854775808 ended the daemon.
TEST_F(StoreFailures, AnSzBeyondInt64MaxInAMulticastAnswerOrAnRdRegistrationIsStored) {
  const std::string real = "coap-127-0-0-10";
  const std::string hostile = "coap-127-0-0-50";
  const std::string registered = "hostile-rd";
  const std::string links = "</a>;sz=9223372036854775808;obs,</b>;sz=12";
  startSim("127.0.0.10", 1, true);
  Process& answerer = startAnswerer("127.0.0.50", links);
  startGateway();
  ASSERT_TRUE(answerer.waitForOutput("ANSWERED", 15s)) << answerer.output() << dump();
  ASSERT_TRUE(waitUntil([&] { return joined(hostile) || !gateway_->running(); }, 15s)) << dump();
  ASSERT_TRUE(gateway_->running()) << dump();

  const std::string reg = registerInRd(registered, "coap://127.0.0.51:5683", links);
  EXPECT_NE(reg.find("2.01"), std::string::npos) << reg << dump();
  ASSERT_TRUE(waitUntil([&] { return joined(registered) || !gateway_->running(); }, 15s)) << dump();
  ASSERT_TRUE(gateway_->running()) << dump();

  // Both stored, /a without a size, /b with its own; the real device still bridged.
  nlohmann::json list;
  std::string raw;
  EXPECT_TRUE(waitUntil(
      [&] {
        list = devices(&raw);
        return hasResource(find(list, hostile), "/a") && hasResource(find(list, registered), "/a");
      },
      15s))
      << raw << dump();
  for (const std::string& name : {hostile, registered}) {
    const nlohmann::json* d = find(list, name);
    ASSERT_NE(d, nullptr) << name << "\n" << raw;
    for (const auto& r : (*d)["resources"]) {
      if (r.value("path", "") == "/a") {
        EXPECT_FALSE(r.contains("sz")) << r.dump();
        EXPECT_TRUE(r.value("obs", false)) << r.dump();
      }
      if (r.value("path", "") == "/b") {
        EXPECT_EQ(r.value("sz", 0), 12) << r.dump();
      }
    }
  }
  const std::size_t before = values(real);
  EXPECT_TRUE(waitUntil([&] { return values(real) >= before + 3; }, 10s)) << dump();
  EXPECT_TRUE(gateway_->running()) << dump();
  EXPECT_EQ(gateway_->stop(15, 10s), 0) << dump();
}

}  // namespace
}  // namespace coap2mqtt::test
