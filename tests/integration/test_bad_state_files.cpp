// Issue 17, finding 10: a corrupt or foreign database in state_dir made the constructors
// throw, and systemd restarted the daemon every 5 s, forever, bridging nothing.
//
// - The registry is a cache of what was learned: a file that is not a usable database (not
//   SQLite, another program's, corrupt) is moved aside to registry.db.corrupt-<time> with an
//   error line and the gateway starts clean; one that cannot be opened at all leaves a
//   registry in memory. Either way the configured device is bridged.
// - The outbox may hold messages a device considers delivered: a corrupt one is moved
//   aside, never deleted, and said at error level.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "tests/integration/gateway_process.h"
#include "tests/integration/harness.h"

namespace coap2mqtt::test {
namespace {

namespace fs = std::filesystem;

const char* kCounterRule =
    "[[rule]]\nname = \"counter\"\nmatch = { path = \"/sensors/counter\" }\n"
    "topic = \"c2m/{device}/{path}\"\n";

const std::string kGarbage = [] {
  std::string s;
  for (int i = 0; i < 400; ++i)
    s += "this is not an SQLite database, line " + std::to_string(i) + "\n";
  return s;
}();

// Files in `dir` whose name starts with `prefix`.
std::vector<fs::path> filesStartingWith(const std::string& dir, const std::string& prefix) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename().string().rfind(prefix, 0) == 0) out.push_back(e.path());
  }
  return out;
}

std::string contents(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// An SQLite file of some other program: one table of its own.
void writeForeignDatabase(const std::string& path) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "CREATE TABLE their_data(x); INSERT INTO their_data VALUES (42);",
                         nullptr, nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
}

class BadStateFiles : public ::testing::Test {
 protected:
  // One configured device (a simulator); the gateway on `dir_` as it is now.
  void startBridging() {
    const int port = freeUdpPortRange(1);
    sim_ = startSim(dir_, port, 1);
    probe_ = std::make_unique<MqttProbe>(broker_.port(), "c2m/#");
    gateway_ = startGateway(dir_, baseConfig(broker_, dir_) + simDevices(port, 1) + kCounterRule);
  }
  bool bridged() const {
    return probe_->waitForCount("c2m/dev0/sensors/counter", 3, 20s) && gateway_->running();
  }

  TempDir dir_;
  Mosquitto broker_;
  std::unique_ptr<Process> sim_;
  std::unique_ptr<MqttProbe> probe_;
  std::unique_ptr<Process> gateway_;
};

TEST_F(BadStateFiles, ARegistryThatIsNotADatabaseIsMovedAsideAndTheDeviceIsBridged) {
  dir_.write("registry.db", kGarbage);
  startBridging();
  EXPECT_TRUE(bridged()) << gateway_->output();
  const auto aside = filesStartingWith(dir_.path(), "registry.db.corrupt-");
  ASSERT_EQ(aside.size(), 1u) << gateway_->output();
  EXPECT_EQ(contents(aside[0]), kGarbage) << "the bad file is kept as it was";
  EXPECT_EQ(gateway_->countInOutput("moved it aside to " + aside[0].string()), 1u)
      << gateway_->output();
  // The fresh registry works: the device is written to it.
  Process cli({gatewayBinary(), "devices", "--json", "-c", dir_.file("gateway.toml")},
              dir_.file("devices.log"));
  EXPECT_EQ(cli.stop(0, 20s), 0) << cli.output();
  EXPECT_NE(cli.output().find("\"dev0\""), std::string::npos) << cli.output();
}

TEST_F(BadStateFiles, AnotherProgramsDatabaseIsMovedAsideNotAddedTo) {
  writeForeignDatabase(dir_.file("registry.db"));
  startBridging();
  EXPECT_TRUE(bridged()) << gateway_->output();
  const auto aside = filesStartingWith(dir_.path(), "registry.db.corrupt-");
  ASSERT_EQ(aside.size(), 1u) << gateway_->output();
  EXPECT_EQ(gateway_->countInOutput("some other program"), 1u) << gateway_->output();
  // Untouched: still theirs alone.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2(aside[0].c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(
      sqlite3_prepare_v2(db, "SELECT group_concat(name) FROM sqlite_schema", -1, &stmt, nullptr),
      SQLITE_OK);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0)), "their_data");
  sqlite3_finalize(stmt);
  sqlite3_close(db);
}

// A registry.db that cannot be opened at all (here a directory; a read-only or full file
// system is the same case): the configured device is bridged from memory.
TEST_F(BadStateFiles, ARegistryThatCannotBeOpenedLeavesTheConfiguredDeviceBridged) {
  fs::create_directory(dir_.file("registry.db"));
  startBridging();
  EXPECT_TRUE(bridged()) << gateway_->output();
  EXPECT_EQ(gateway_->countInOutput("running with a registry in memory"), 1u) << gateway_->output();
  EXPECT_TRUE(fs::is_directory(dir_.file("registry.db"))) << "not ours to move";
}

// registry.db on a read-only file system (a bind mount in a private mount namespace: root
// ignores file modes): a configured device that is not in it yet is still bridged.
TEST_F(BadStateFiles, AReadOnlyRegistryStillBridgesANewConfiguredDevice) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root for a read-only bind mount";
  // A first run writes registry.db with dev0 in it.
  startBridging();
  ASSERT_TRUE(bridged()) << gateway_->output();
  ASSERT_EQ(gateway_->stop(15, 10s), 0) << gateway_->output();

  // The second run has another device, "fresh", and cannot write the file.
  const int port = freeUdpPortRange(1);
  auto fresh_sim = startSim(dir_, port, 1, "200", "fresh-sim.log");
  dir_.write("gateway.toml", baseConfig(broker_, dir_) + simDevices(port, 1) + kCounterRule);
  std::string toml = contents(dir_.file("gateway.toml"));
  const std::string old_name = "name = \"dev0\"";
  toml.replace(toml.find(old_name), old_name.size(), "name = \"fresh\"");
  dir_.write("gateway.toml", toml);
  const std::string db = dir_.file("registry.db");
  gateway_ = std::make_unique<Process>(
      std::vector<std::string>{"unshare", "-m", "sh", "-c",
                               "mount --bind \"$1\" \"$1\" && mount -o remount,bind,ro \"$1\" && "
                               "exec \"$2\" run -c \"$3\" -l debug",
                               "sh", db, gatewayBinary(), dir_.file("gateway.toml")},
      dir_.file("gateway-ro.log"));
  EXPECT_TRUE(probe_->waitForCount("c2m/fresh/sensors/counter", 3, 20s)) << gateway_->output();
  EXPECT_TRUE(gateway_->running()) << gateway_->output();
}

TEST_F(BadStateFiles, ACorruptOutboxIsMovedAsideLoudlyAndNeverDeleted) {
  dir_.write("outbox.db", kGarbage);
  startBridging();
  EXPECT_TRUE(bridged()) << gateway_->output();
  const auto aside = filesStartingWith(dir_.path(), "outbox.db.corrupt-");
  ASSERT_EQ(aside.size(), 1u) << gateway_->output();
  EXPECT_EQ(contents(aside[0]), kGarbage);
  EXPECT_EQ(gateway_->countInOutput("MOVED IT ASIDE to " + aside[0].string()), 1u)
      << gateway_->output();
  EXPECT_EQ(gateway_->countInOutput("error outbox:"), 1u) << "said at error level\n"
                                                          << gateway_->output();
}

}  // namespace
}  // namespace coap2mqtt::test
