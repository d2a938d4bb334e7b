// SQLite registry store: schema and migrations, round trips, read-only access from a
// second process, rename/remove cascades, touch buffering, and consistency after SIGKILL.
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "registry/store.h"
#include "tests/unit/temp_dir.h"

namespace coap2mqtt::registry {
namespace {

using Clock = std::chrono::system_clock;
using std::chrono::milliseconds;
using unit::TempDir;

// Times survive a round trip at millisecond precision.
Clock::time_point atMs(std::int64_t ms) {
  return Clock::time_point(milliseconds(ms));
}

// The test's own connection, bypassing Store: to plant bad files and to check the file.
class RawDb {
 public:
  explicit RawDb(const std::string& path, int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) {
    sqlite3* raw = nullptr;
    const int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
    db_.reset(raw);
    if (rc != SQLITE_OK) throw std::runtime_error("raw open " + path + ": " + errmsg());
    if (sqlite3_busy_timeout(db_.get(), 5000) != SQLITE_OK) throw std::runtime_error(errmsg());
  }
  void exec(const std::string& sql) {
    if (sqlite3_exec(db_.get(), sql.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK) {
      throw std::runtime_error(sql + ": " + errmsg());
    }
  }
  // All rows, columns joined with '|'.
  std::vector<std::string> rows(const std::string& sql) {
    sqlite3_stmt* raw = nullptr;
    if (sqlite3_prepare_v2(db_.get(), sql.c_str(), -1, &raw, nullptr) != SQLITE_OK) {
      throw std::runtime_error(sql + ": " + errmsg());
    }
    std::unique_ptr<sqlite3_stmt, decltype(&sqlite3_finalize)> stmt(raw, &sqlite3_finalize);
    std::vector<std::string> out;
    int rc;
    while ((rc = sqlite3_step(stmt.get())) == SQLITE_ROW) {
      std::string row;
      for (int i = 0; i < sqlite3_column_count(stmt.get()); ++i) {
        if (i) row += '|';
        const auto* t = reinterpret_cast<const char*>(sqlite3_column_text(stmt.get(), i));
        row += t ? t : "NULL";
      }
      out.push_back(std::move(row));
    }
    if (rc != SQLITE_DONE) throw std::runtime_error(sql + ": " + errmsg());
    return out;
  }
  std::string one(const std::string& sql) {
    auto r = rows(sql);
    if (r.size() != 1) throw std::runtime_error(sql + ": expected one row");
    return r[0];
  }
  long long integer(const std::string& sql) { return std::stoll(one(sql)); }

 private:
  std::string errmsg() const { return db_ ? sqlite3_errmsg(db_.get()) : "out of memory"; }
  struct Closer {
    void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
  };
  std::unique_ptr<sqlite3, Closer> db_;
};

Resource makeResource(std::string path, std::vector<std::string> rt = {}) {
  Resource r;
  r.path = std::move(path);
  r.rt = std::move(rt);
  return r;
}

Device makeDevice(std::string name, int resources = 0) {
  Device d;
  d.name = std::move(name);
  d.uri = "coap://127.0.0.1:5683";
  d.source = Source::Multicast;
  d.first_seen = atMs(1'700'000'000'000);
  d.last_seen = atMs(1'700'000'001'000);
  for (int i = 0; i < resources; ++i) d.resources.push_back(makeResource("/r" + std::to_string(i)));
  return d;
}

void expectSameResource(const Resource& a, const Resource& b) {
  SCOPED_TRACE(a.path);
  EXPECT_EQ(a.path, b.path);
  EXPECT_EQ(a.rt, b.rt);
  EXPECT_EQ(a.ifs, b.ifs);
  EXPECT_EQ(a.ct, b.ct);
  EXPECT_EQ(a.obs, b.obs);
  EXPECT_EQ(a.sz, b.sz);
  EXPECT_EQ(a.title, b.title);
}

void expectSameDevice(const Device& a, const Device& b) {
  SCOPED_TRACE(a.name);
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.uri, b.uri);
  EXPECT_EQ(a.source, b.source);
  EXPECT_EQ(a.online, b.online);
  EXPECT_EQ(a.first_seen, b.first_seen);
  EXPECT_EQ(a.last_seen, b.last_seen);
  EXPECT_EQ(a.friendly_name, b.friendly_name);
  ASSERT_EQ(a.resources.size(), b.resources.size());
  for (std::size_t i = 0; i < a.resources.size(); ++i) {
    expectSameResource(a.resources[i], b.resources[i]);
  }
}

// Runs `f`, expecting std::runtime_error whose message contains every one of `needles`.
template <typename F>
void expectThrowMentioning(F&& f, std::initializer_list<std::string> needles) {
  try {
    f();
    ADD_FAILURE() << "no exception";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    for (const std::string& n : needles) {
      EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
    }
  }
}

TEST(Store, CreatesCurrentSchemaInNewFile) {
  TempDir dir;
  const std::string path = dir.path("new.db");
  {
    Store store(path);
    EXPECT_EQ(store.schemaVersion(), Store::currentSchemaVersion());
    EXPECT_GE(Store::currentSchemaVersion(), 1);
    EXPECT_TRUE(store.loadAll().empty());
  }
  RawDb raw(path);
  EXPECT_EQ(raw.integer("PRAGMA user_version"), Store::currentSchemaVersion());
  EXPECT_EQ(raw.one("PRAGMA journal_mode"), "wal");  // persistent in the file
  EXPECT_EQ(raw.rows("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name"),
            (std::vector<std::string>{"devices", "rd_registrations", "resources"}));
}

// Issue 17, finding 12: registry.db holds device addresses: the gateway's user only, whatever
// the umask (SQLite gives its -wal and -shm files the main file's mode).
TEST(Store, CreatesItsFilesReadableByTheOwnerOnly) {
  TempDir dir;
  const std::string path = dir.path("registry.db");
  Store store(path);
  store.save(makeDevice("a", 1));
  for (const std::string& f : {path, path + "-wal"}) {
    ASSERT_TRUE(std::filesystem::exists(f)) << f;
    EXPECT_EQ(std::filesystem::status(f).permissions() & std::filesystem::perms::all,
              std::filesystem::perms::owner_read | std::filesystem::perms::owner_write)
        << f;
  }
}

// Issue 16: the loop-thread rule is asserted, not only written in comments.
TEST(StoreDeathTest, AWriteFromAnotherThreadThanTheOpenersAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  TempDir dir;
  EXPECT_DEATH(
      {
        Store store(dir.path("owned.db"));
        Device d;
        d.name = "x";
        d.uri = "coap://127.0.0.1";
        std::thread other([&] { store.save(d); });
        other.join();
      },
      "off the thread that opened it");
}

TEST(Store, MigratesAnEmptyFile) {
  TempDir dir;
  const std::string path = dir.path("empty.db");
  { std::ofstream(path).flush(); }  // zero bytes: an empty SQLite database, version 0
  ASSERT_TRUE(std::filesystem::exists(path));
  Store store(path);
  EXPECT_EQ(store.schemaVersion(), Store::currentSchemaVersion());
  store.save(makeDevice("a", 1));
  EXPECT_EQ(store.loadAll().size(), 1u);
}

TEST(Store, RoundTripsEveryField) {
  TempDir dir;
  Store store(dir.path("r.db"));

  Device full;
  full.name = "kitchen-sensor";
  full.friendly_name = "Kitchen: temperature & humidity ünïcödé";
  full.uri = "coap://[fe80::1%25eth0]:5683";
  full.source = Source::ResourceDirectory;
  full.online = true;
  full.first_seen = atMs(1'600'000'000'123);
  full.last_seen = atMs(1'700'000'000'456);
  Resource t;
  t.path = "/sensors/temp";
  t.rt = {"temperature-c", "oic.r.temperature"};
  t.ifs = {"sensor", "core.s"};
  t.ct = {0, 50, 65535};
  t.obs = true;
  t.sz = 1234;
  t.title = "Temperature, \"quoted\"; with separators";
  Resource bare;  // every optional absent, every list empty
  bare.path = "/a";
  Resource zero;
  zero.path = "/z";
  zero.sz = 0;
  zero.title = "";  // empty, not absent
  zero.ct = {0};
  // Deliberately not in path order: the stored order is the saved one.
  full.resources = {t, bare, zero};

  Device other = makeDevice("a-static");
  other.source = Source::Static;
  other.online = false;
  Device multicast = makeDevice("m");
  multicast.source = Source::Multicast;
  Device pushed = makeDevice("p", 0);  // published to /ps (issue 20; schema v3)
  pushed.source = Source::Pushed;

  store.save(full);
  store.save(other);
  store.save(multicast);
  store.save(pushed);
  const std::vector<Device> loaded = store.loadAll();
  ASSERT_EQ(loaded.size(), 4u);  // ordered by name
  expectSameDevice(loaded[0], other);
  expectSameDevice(loaded[1], full);
  expectSameDevice(loaded[2], multicast);
  expectSameDevice(loaded[3], pushed);
}

TEST(Store, ReopenKeepsData) {
  TempDir dir;
  const std::string path = dir.path("reopen.db");
  Device d = makeDevice("dev", 5);
  d.friendly_name = "keeper";
  { Store(path).save(d); }
  Store again(path);
  const auto loaded = again.loadAll();
  ASSERT_EQ(loaded.size(), 1u);
  expectSameDevice(loaded[0], d);
}

TEST(Store, SaveReplacesResourcesAndKeepsFirstSeen) {
  TempDir dir;
  Store store(dir.path("s.db"));
  Device d = makeDevice("dev", 3);
  store.save(d);
  Device later = makeDevice("dev", 0);
  later.resources = {makeResource("/new")};
  later.first_seen = atMs(1'800'000'000'000);  // ignored: the stored one stays
  later.last_seen = atMs(1'800'000'000'000);
  later.uri = "coap://10.0.0.2";
  store.save(later);
  const auto loaded = store.loadAll();
  ASSERT_EQ(loaded.size(), 1u);
  EXPECT_EQ(loaded[0].first_seen, d.first_seen);
  EXPECT_EQ(loaded[0].last_seen, later.last_seen);
  EXPECT_EQ(loaded[0].uri, "coap://10.0.0.2");
  ASSERT_EQ(loaded[0].resources.size(), 1u);
  EXPECT_EQ(loaded[0].resources[0].path, "/new");
}

TEST(Store, UnsetFirstSeenBecomesNow) {
  TempDir dir;
  Store store(dir.path("fs.db"));
  Device d = makeDevice("dev");
  d.first_seen = {};
  const auto before = Clock::now() - milliseconds(1);
  store.save(d);
  const auto after = Clock::now() + milliseconds(1);
  const auto loaded = store.loadAll();
  ASSERT_EQ(loaded.size(), 1u);
  EXPECT_GE(loaded[0].first_seen, before);
  EXPECT_LE(loaded[0].first_seen, after);
}

TEST(Store, DuplicatePathKeepsTheFirstLikeFindResource) {
  TempDir dir;
  Store store(dir.path("dup.db"));
  Device d = makeDevice("dev");
  d.resources = {makeResource("/x", {"first"}), makeResource("/y"), makeResource("/x", {"second"})};
  store.save(d);
  const auto loaded = store.loadAll();
  ASSERT_EQ(loaded.size(), 1u);
  ASSERT_EQ(loaded[0].resources.size(), 2u);
  EXPECT_EQ(loaded[0].resources[0].rt, std::vector<std::string>{"first"});
  EXPECT_EQ(loaded[0].findResource("/x")->rt, d.findResource("/x")->rt);
}

TEST(Store, RefusesListItemsThatWouldNotRoundTrip) {
  TempDir dir;
  Store store(dir.path("bad.db"));
  Device d = makeDevice("dev");
  d.resources = {makeResource("/x", {"two words"})};
  EXPECT_THROW(store.save(d), std::invalid_argument);
  d.resources = {makeResource("/x", {""})};
  EXPECT_THROW(store.save(d), std::invalid_argument);
  EXPECT_TRUE(store.loadAll().empty());  // nothing half-written
}

TEST(Store, FailedSaveLeavesPreviousVersionIntact) {
  TempDir dir;
  const std::string path = dir.path("atomic.db");
  Store store(path);
  store.save(makeDevice("dev", 3));
  {
    RawDb raw(path);  // make the third resource insert fail inside save()'s transaction
    raw.exec(
        "CREATE TRIGGER boom BEFORE INSERT ON resources WHEN NEW.path = '/boom' "
        "BEGIN SELECT RAISE(ABORT, 'boom'); END");
  }
  Device next = makeDevice("dev");
  next.uri = "coap://changed";
  next.resources = {makeResource("/ok"), makeResource("/boom")};
  // The database refuses this change itself: retrying cannot help, so it is dropped
  // (not kept pending, where it would hold up every later write) and said so.
  EXPECT_EQ(store.save(next), WriteResult::Rejected);
  EXPECT_NE(store.lastError().find("boom"), std::string::npos) << store.lastError();
  EXPECT_EQ(store.stats().rejected, 1u);
  EXPECT_EQ(store.pendingWrites(), 0u);
  const auto loaded = store.loadAll();
  ASSERT_EQ(loaded.size(), 1u);
  EXPECT_EQ(loaded[0].uri, "coap://127.0.0.1:5683");
  EXPECT_EQ(loaded[0].resources.size(), 3u);
  // The store stays usable: statements were reset, the transaction rolled back.
  EXPECT_EQ(store.save(makeDevice("other", 2)), WriteResult::Written);
  EXPECT_EQ(store.loadAll().size(), 2u);
}

TEST(Store, RefusesNewerSchemaVersion) {
  TempDir dir;
  const std::string path = dir.path("future.db");
  { Store(path).save(makeDevice("dev", 1)); }
  { RawDb(path).exec("PRAGMA user_version = 99"); }
  expectThrowMentioning([&] { Store s(path); }, {path, "99", "newer"});
  expectThrowMentioning([&] { Store s(path, Store::Mode::ReadOnly); }, {path, "99"});
  RawDb raw(path);  // untouched
  EXPECT_EQ(raw.integer("PRAGMA user_version"), 99);
  EXPECT_EQ(raw.integer("SELECT count(*) FROM resources"), 1);
}

TEST(Store, RefusesAFileThatIsNotADatabase) {
  TempDir dir;
  const std::string path = dir.path("text.db");
  {
    std::ofstream out(path);
    for (int i = 0; i < 200; ++i) out << "this is not an SQLite database, just some text\n";
  }
  expectThrowMentioning([&] { Store s(path); }, {path, "not a database"});
  expectThrowMentioning([&] { Store s(path, Store::Mode::ReadOnly); }, {path});
}

TEST(Store, RefusesAnotherProgramsDatabase) {
  TempDir dir;
  const std::string path = dir.path("foreign.db");
  { RawDb(path).exec("CREATE TABLE devices (id INTEGER PRIMARY KEY)"); }
  expectThrowMentioning([&] { Store s(path); }, {path, "other program"});
  { RawDb(path).exec("PRAGMA application_id = 42; PRAGMA user_version = 1"); }
  expectThrowMentioning([&] { Store s(path); }, {path, "application_id"});
}

TEST(Store, ReadOnlyNeedsAnExistingDatabaseWithSchema) {
  TempDir dir;
  const std::string missing = dir.path("missing.db");
  expectThrowMentioning([&] { Store s(missing, Store::Mode::ReadOnly); }, {missing});
  EXPECT_FALSE(std::filesystem::exists(missing));  // and did not create it

  const std::string empty = dir.path("empty.db");
  { std::ofstream(empty).flush(); }
  expectThrowMentioning([&] { Store s(empty, Store::Mode::ReadOnly); }, {empty, "schema"});
}

TEST(Store, ReadOnlySeesARunningWriter) {
  TempDir dir;
  const std::string path = dir.path("shared.db");
  Store writer(path);
  writer.save(makeDevice("first", 5));
  Store reader(path, Store::Mode::ReadOnly);
  EXPECT_EQ(reader.schemaVersion(), Store::currentSchemaVersion());
  auto seen = reader.loadAll();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].resources.size(), 5u);

  writer.save(makeDevice("second", 2));  // later commits are visible to the next load
  seen = reader.loadAll();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[1].name, "second");

  EXPECT_THROW(reader.save(makeDevice("x")), std::logic_error);
  EXPECT_THROW(reader.touch("first", Clock::now(), true), std::logic_error);
  EXPECT_THROW(reader.remove("first"), std::logic_error);
  EXPECT_THROW(reader.rename("first", "y"), std::logic_error);
  EXPECT_EQ(writer.loadAll().size(), 2u);
}

TEST(Store, RenameMovesResourcesAndHistory) {
  TempDir dir;
  const std::string path = dir.path("rename.db");
  Store store(path);
  Device d = makeDevice("old", 4);
  d.friendly_name = "lamp";
  store.save(d);
  store.save(makeDevice("taken", 1));

  EXPECT_EQ(store.rename("nobody", "new"), RenameResult::NotRenamed);
  EXPECT_EQ(store.rename("old", "taken"), RenameResult::NotRenamed);
  EXPECT_EQ(store.rename("old", "old"), RenameResult::Renamed);  // no-op on a known device
  EXPECT_EQ(store.rename("nobody", "nobody"), RenameResult::NotRenamed);
  ASSERT_EQ(store.rename("old", "new"), RenameResult::Renamed);

  const auto loaded = store.loadAll();
  ASSERT_EQ(loaded.size(), 2u);
  Device expected = d;
  expected.name = "new";
  expectSameDevice(loaded[0], expected);
  RawDb raw(path);
  EXPECT_EQ(raw.integer("SELECT count(*) FROM resources WHERE device = 'old'"), 0);
  EXPECT_EQ(raw.integer("SELECT count(*) FROM resources WHERE device = 'new'"), 4);
  EXPECT_EQ(raw.integer("SELECT count(*) FROM resources WHERE device = 'taken'"), 1);
}

TEST(Store, RemoveCascadesToResources) {
  TempDir dir;
  const std::string path = dir.path("remove.db");
  Store store(path);
  store.save(makeDevice("gone", 5));
  store.save(makeDevice("stays", 2));
  store.remove("gone");
  store.remove("never-existed");  // not an error
  const auto loaded = store.loadAll();
  ASSERT_EQ(loaded.size(), 1u);
  EXPECT_EQ(loaded[0].name, "stays");
  RawDb raw(path);
  EXPECT_EQ(raw.integer("SELECT count(*) FROM resources WHERE device = 'gone'"), 0);
  EXPECT_EQ(raw.integer("SELECT count(*) FROM resources"), 2);
}

TEST(Store, TouchesAreBufferedUntilFlush) {
  TempDir dir;
  const std::string path = dir.path("touch.db");
  Store store(path);
  Device a = makeDevice("a", 1);
  Device b = makeDevice("b", 1);
  store.save(a);
  store.save(b);
  Store reader(path, Store::Mode::ReadOnly);

  store.touch("a", atMs(1'750'000'000'000), true);
  store.touch("a", atMs(1'750'000'000'500), true);  // same device: replaces
  store.touch("b", atMs(1'750'000'000'600), true);
  store.touch("ghost", atMs(1'750'000'000'700), true);  // unknown: dropped at flush
  EXPECT_EQ(store.pendingTouches(), 3u);
  for (const Device& d : reader.loadAll()) {
    EXPECT_EQ(d.last_seen, a.last_seen) << d.name;
    EXPECT_FALSE(d.online) << d.name;
  }

  store.flush();
  EXPECT_EQ(store.pendingTouches(), 0u);
  const auto seen = reader.loadAll();
  ASSERT_EQ(seen.size(), 2u);  // no row for "ghost"
  EXPECT_EQ(seen[0].last_seen, atMs(1'750'000'000'500));
  EXPECT_TRUE(seen[0].online);
  EXPECT_EQ(seen[1].last_seen, atMs(1'750'000'000'600));
  EXPECT_EQ(seen[0].resources.size(), 1u);  // a touch leaves the rest alone
  EXPECT_EQ(seen[0].first_seen, a.first_seen);

  store.flush();  // nothing pending: no-op
  EXPECT_EQ(store.pendingTouches(), 0u);
}

TEST(Store, SaveSupersedesAnEarlierTouch) {
  // Buffering must not change the outcome: touch then save ends with the saved values,
  // exactly as if the touch had been written at once.
  TempDir dir;
  Store store(dir.path("order.db"));
  Device d = makeDevice("dev");
  d.online = true;
  store.save(d);
  store.touch("dev", atMs(1'900'000'000'000), true);
  d.online = false;
  store.save(d);
  EXPECT_EQ(store.pendingTouches(), 0u);
  store.flush();
  auto loaded = store.loadAll();
  ASSERT_EQ(loaded.size(), 1u);
  EXPECT_FALSE(loaded[0].online);
  EXPECT_EQ(loaded[0].last_seen, d.last_seen);

  // ...and a touch after the save is applied by the next flush.
  store.touch("dev", atMs(1'900'000'000'000), true);
  store.flush();
  loaded = store.loadAll();
  EXPECT_TRUE(loaded[0].online);
  EXPECT_EQ(loaded[0].last_seen, atMs(1'900'000'000'000));
}

TEST(Store, PendingTouchFollowsRenameAndDiesWithRemove) {
  TempDir dir;
  Store store(dir.path("follow.db"));
  store.save(makeDevice("old"));
  store.save(makeDevice("doomed"));
  store.touch("old", atMs(1'900'000'000'000), true);
  store.touch("new", atMs(1'950'000'000'000), false);  // for a name not stored (yet)
  store.touch("doomed", atMs(1'900'000'000'000), true);
  ASSERT_EQ(store.rename("old", "new"), RenameResult::Renamed);
  store.remove("doomed");
  EXPECT_EQ(store.pendingTouches(), 1u);
  store.flush();
  const auto loaded = store.loadAll();
  ASSERT_EQ(loaded.size(), 1u);
  EXPECT_EQ(loaded[0].name, "new");
  EXPECT_EQ(loaded[0].last_seen, atMs(1'900'000'000'000));  // old's touch, not new's
  EXPECT_TRUE(loaded[0].online);
}

TEST(Store, DestructorFlushesForgottenTouches) {
  TempDir dir;
  const std::string path = dir.path("dtor.db");
  {
    Store store(path);
    store.save(makeDevice("dev"));
    store.touch("dev", atMs(1'900'000'000'000), true);
  }
  const auto loaded = Store(path, Store::Mode::ReadOnly).loadAll();
  ASSERT_EQ(loaded.size(), 1u);
  EXPECT_EQ(loaded[0].last_seen, atMs(1'900'000'000'000));
}

// --- Resource Directory registrations (schema v2) ------------------------------------

// Schema version 1 exactly as migration 1 created it (a frozen copy: the test must keep
// describing the files coap2mqtt 1 wrote, whatever later migrations do).
constexpr const char* kSchemaV1 = R"sql(
CREATE TABLE devices (
  name          TEXT    NOT NULL PRIMARY KEY,
  friendly_name TEXT    NOT NULL DEFAULT '',
  uri           TEXT    NOT NULL,
  source        TEXT    NOT NULL CHECK (source IN ('static', 'multicast', 'rd')),
  online        INTEGER NOT NULL CHECK (online IN (0, 1)),
  first_seen    INTEGER NOT NULL,
  last_seen     INTEGER NOT NULL
) STRICT;
CREATE TABLE resources (
  device TEXT    NOT NULL REFERENCES devices (name) ON DELETE CASCADE ON UPDATE CASCADE,
  path   TEXT    NOT NULL,
  ord    INTEGER NOT NULL,
  rt     TEXT    NOT NULL DEFAULT '',
  ifs    TEXT    NOT NULL DEFAULT '',
  ct     TEXT    NOT NULL DEFAULT '',
  obs    INTEGER NOT NULL CHECK (obs IN (0, 1)),
  sz     INTEGER CHECK (sz IS NULL OR sz >= 0),
  title  TEXT,
  PRIMARY KEY (device, path)
) STRICT;
PRAGMA application_id = 1127370065;
)sql";

std::vector<Link> parseLinks(std::string_view text) {
  LinkFormatResult r = parseLinkFormat(text);
  if (!r.ok()) throw std::runtime_error("test links do not parse: " + r.error->message);
  return std::move(r.links);
}

RdRegistration makeRegistration(std::string location, std::string ep,
                                std::string_view links = "</t>;obs") {
  RdRegistration r;
  r.location = std::move(location);
  r.ep = std::move(ep);
  r.base = "coap://127.0.0.1:40123";
  r.lifetime = std::chrono::seconds(60);
  r.links = parseLinks(links);
  return r;
}

void expectSameLinks(const std::vector<Link>& a, const std::vector<Link>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    SCOPED_TRACE(a[i].target);
    EXPECT_EQ(a[i].target, b[i].target);
    ASSERT_EQ(a[i].attributes.size(), b[i].attributes.size());
    for (std::size_t j = 0; j < a[i].attributes.size(); ++j) {
      EXPECT_EQ(a[i].attributes[j].name, b[i].attributes[j].name);
      EXPECT_EQ(a[i].attributes[j].value, b[i].attributes[j].value);
    }
    EXPECT_EQ(a[i].rt, b[i].rt);
    EXPECT_EQ(a[i].ifs, b[i].ifs);
    EXPECT_EQ(a[i].ct, b[i].ct);
    EXPECT_EQ(a[i].obs, b[i].obs);
    EXPECT_EQ(a[i].sz, b[i].sz);
    EXPECT_EQ(a[i].title, b[i].title);
    EXPECT_EQ(a[i].anchor, b[i].anchor);
  }
}

void expectSameRegistration(const StoredRdRegistration& loaded, const RdRegistration& r,
                            Clock::time_point expires_at) {
  SCOPED_TRACE(r.location);
  EXPECT_EQ(loaded.registration.location, r.location);
  EXPECT_EQ(loaded.registration.ep, r.ep);
  EXPECT_EQ(loaded.registration.sector, r.sector);
  EXPECT_EQ(loaded.registration.base, r.base);
  EXPECT_EQ(loaded.registration.et, r.et);
  EXPECT_EQ(loaded.registration.lifetime, r.lifetime);
  EXPECT_EQ(loaded.registration.expires, std::chrono::steady_clock::time_point{});
  EXPECT_EQ(loaded.expires_at, expires_at);
  expectSameLinks(loaded.registration.links, r.links);
}

std::vector<std::string> locations(const std::vector<StoredRdRegistration>& loaded) {
  std::vector<std::string> out;
  for (const auto& s : loaded) out.push_back(s.registration.location);
  return out;
}

TEST(StoreRd, RoundTripsEveryField) {
  TempDir dir;
  const std::string path = dir.path("rd.db");
  RdRegistration full;
  full.location = "/rd/42";
  full.ep =
      "node \"7\", K\xc3\xbc"
      "che; a\\b";
  full.sector = "floor-3";
  full.base = "coap://[2001:db8::1]:5683";
  full.et = "tag:example.com,2020:platform";
  full.lifetime = std::chrono::seconds(4294967295);  // the largest lt RFC 9176 allows
  full.expires = std::chrono::steady_clock::time_point{} + std::chrono::hours(5);  // not stored
  full.links = parseLinks(
      "</sensors>;ct=40;title=\"Sensor Index, \\\"main\\\"; K\xc3\xbc"
      "che\","
      "</sensors/temp>;rt=\"temperature-c oic.r.temperature\";if=sensor;obs;sz=1234,"
      "<http://www.example.com/sensors/t123>;anchor=\"/sensors/temp\";rel=describedby,"
      "</t>;ct=\"0 50 65535\";x=\"a,b;c\";y=\"C:\\\\dir\\\\\";z=\"\";bare;title*=UTF-8'de'n%c3%a4,"
      "<>");
  ASSERT_EQ(full.links.size(), 5u);
  RdRegistration bare = makeRegistration("/rd/7", "bare", "");  // no links, no d, no et
  bare.lifetime = std::chrono::seconds(1);
  const Clock::time_point full_expiry = atMs(1'700'000'123'456);
  const Clock::time_point bare_expiry = atMs(0);  // the epoch itself is a value, too
  {
    Store store(path);
    store.saveRdRegistration(full, full_expiry);
    store.saveRdRegistration(bare, bare_expiry);
  }
  Store store(path);  // from the file, not from anything cached
  std::vector<SkippedRdRegistration> skipped;
  const auto loaded = store.loadRdRegistrations(&skipped);
  EXPECT_TRUE(skipped.empty());
  ASSERT_EQ(loaded.size(), 2u);
  expectSameRegistration(loaded[0], bare, bare_expiry);  // /rd/7 before /rd/42
  expectSameRegistration(loaded[1], full, full_expiry);
  EXPECT_TRUE(store.loadAll().empty());  // registrations are not devices
}

TEST(StoreRd, OrderedByLocationNumber) {
  TempDir dir;
  Store store(dir.path("order.db"));
  for (const char* location : {"/rd/10", "/rd/2", "/rd/1", "/rd/100", "/rd/9"}) {
    store.saveRdRegistration(makeRegistration(location, std::string("ep") + location), atMs(1'000));
  }
  EXPECT_EQ(locations(store.loadRdRegistrations()),
            (std::vector<std::string>{"/rd/1", "/rd/2", "/rd/9", "/rd/10", "/rd/100"}));
}

TEST(StoreRd, SaveReplacesTheRegistrationAtTheSameLocation) {
  TempDir dir;
  const std::string path = dir.path("upsert.db");
  Store store(path);
  RdRegistration first = makeRegistration("/rd/1", "node1", "</a>;rt=x,</b>");
  first.sector = "s";
  first.et = "old-et";
  store.saveRdRegistration(first, atMs(1'000));
  store.saveRdRegistration(makeRegistration("/rd/2", "node2"), atMs(2'000));

  RdRegistration second = makeRegistration("/rd/1", "node1", "</c>;title=\"new\"");
  second.base = "coap://10.0.0.9";
  second.lifetime = std::chrono::seconds(3600);
  // sector and et back to empty: every column is replaced, none kept from the old row.
  store.saveRdRegistration(second, atMs(5'000));

  const auto loaded = store.loadRdRegistrations();
  ASSERT_EQ(loaded.size(), 2u);
  expectSameRegistration(loaded[0], second, atMs(5'000));
  EXPECT_EQ(loaded[1].registration.ep, "node2");
  EXPECT_EQ(RawDb(path).integer("SELECT count(*) FROM rd_registrations"), 2);
}

TEST(StoreRd, RemoveDeletesOnlyThatLocation) {
  TempDir dir;
  Store store(dir.path("rm.db"));
  store.save(makeDevice("dev", 1));
  store.saveRdRegistration(makeRegistration("/rd/1", "a"), atMs(1'000));
  store.saveRdRegistration(makeRegistration("/rd/2", "b"), atMs(1'000));
  store.removeRdRegistration("/rd/1");
  store.removeRdRegistration("/rd/99");  // not an error
  store.removeRdRegistration("");
  EXPECT_EQ(locations(store.loadRdRegistrations()), std::vector<std::string>{"/rd/2"});
  store.removeRdRegistration("/rd/2");
  EXPECT_TRUE(store.loadRdRegistrations().empty());
  EXPECT_EQ(store.loadAll().size(), 1u);  // devices untouched
}

TEST(StoreRd, RefusesWhatWouldNotLoadBack) {
  TempDir dir;
  Store store(dir.path("refuse.db"));
  RdRegistration r = makeRegistration("/rd/1", "a");
  r.links[0].target = "a>b";  // not something the parser produces
  EXPECT_THROW(store.saveRdRegistration(r, atMs(0)), std::invalid_argument);
  r = makeRegistration("/rd/1", "a");
  r.links[0].attributes.push_back(LinkAttribute{"x", std::string("line\nbreak")});
  EXPECT_THROW(store.saveRdRegistration(r, atMs(0)), std::invalid_argument);
  r = makeRegistration("/rd/1", "a");
  r.lifetime = std::chrono::seconds(0);
  EXPECT_THROW(store.saveRdRegistration(r, atMs(0)), std::invalid_argument);
  r.lifetime = std::chrono::seconds(4294967296);
  EXPECT_THROW(store.saveRdRegistration(r, atMs(0)), std::invalid_argument);
  EXPECT_TRUE(store.loadRdRegistrations().empty());
}

TEST(StoreRd, SkipsRowsThatNoLongerMakeSense) {
  TempDir dir;
  const std::string path = dir.path("skip.db");
  Store store(path);
  store.saveRdRegistration(makeRegistration("/rd/1", "broken-links"), atMs(1'000));
  store.saveRdRegistration(makeRegistration("/rd/2", "good"), atMs(2'000));
  store.saveRdRegistration(makeRegistration("/rd/3", "zero-lifetime"), atMs(3'000));
  store.saveRdRegistration(makeRegistration("/rd/4", "far-future"), atMs(4'000));
  {
    RawDb raw(path);
    raw.exec("UPDATE rd_registrations SET links = '</a>;ct=x,<unclosed' WHERE location = '/rd/1'");
    raw.exec("UPDATE rd_registrations SET lifetime_s = 0 WHERE location = '/rd/3'");
    // Beyond what system_clock can represent in nanoseconds: saturates, no overflow.
    raw.exec(
        "UPDATE rd_registrations SET expires_ms = 9223372036854775807 WHERE location = '/rd/4'");
  }
  std::vector<SkippedRdRegistration> skipped;
  const auto loaded = store.loadRdRegistrations(&skipped);
  EXPECT_EQ(locations(loaded), (std::vector<std::string>{"/rd/2", "/rd/4"}));
  ASSERT_EQ(skipped.size(), 2u);
  EXPECT_EQ(skipped[0].location, "/rd/1");
  EXPECT_NE(skipped[0].reason.find("link-format"), std::string::npos) << skipped[0].reason;
  EXPECT_EQ(skipped[1].location, "/rd/3");
  EXPECT_NE(skipped[1].reason.find("lifetime"), std::string::npos) << skipped[1].reason;
  ASSERT_EQ(loaded.size(), 2u);
  EXPECT_GT(loaded[1].expires_at, Clock::now() + std::chrono::hours(24 * 365 * 100));
  EXPECT_EQ(store.loadRdRegistrations().size(), 2u);  // without the out-parameter, too
}

TEST(StoreRd, LatestRepresentableExpiryRoundTrips) {
  TempDir dir;
  Store store(dir.path("max.db"));
  store.saveRdRegistration(makeRegistration("/rd/1", "a"), Clock::time_point::max());
  const auto loaded = store.loadRdRegistrations();
  ASSERT_EQ(loaded.size(), 1u);
  EXPECT_LE(Clock::time_point::max() - loaded[0].expires_at, milliseconds(1));
}

TEST(StoreRd, ReadOnlyLoadsRegistrationsAndCannotChangeThem) {
  TempDir dir;
  const std::string path = dir.path("ro.db");
  Store writer(path);
  const RdRegistration r = makeRegistration("/rd/3", "node3", "</x>;rt=\"a b\"");
  writer.saveRdRegistration(r, atMs(123'456));
  Store reader(path, Store::Mode::ReadOnly);
  const auto loaded = reader.loadRdRegistrations();
  ASSERT_EQ(loaded.size(), 1u);
  expectSameRegistration(loaded[0], r, atMs(123'456));
  EXPECT_THROW(reader.saveRdRegistration(r, atMs(0)), std::logic_error);
  EXPECT_THROW(reader.removeRdRegistration("/rd/3"), std::logic_error);
  writer.removeRdRegistration("/rd/3");  // later commits are visible to the next load
  EXPECT_TRUE(reader.loadRdRegistrations().empty());
}

TEST(StoreRd, MigratesAVersion1DatabaseKeepingItsDevices) {
  TempDir dir;
  const std::string path = dir.path("v1.db");
  {
    RawDb raw(path);
    raw.exec("PRAGMA journal_mode = WAL");
    raw.exec(std::string("BEGIN; ") + kSchemaV1 + "PRAGMA user_version = 1; COMMIT;");
    raw.exec(
        "INSERT INTO devices VALUES ('old-node', 'Old node', 'coap://10.0.0.1:5683', 'rd', 1, "
        "1600000000123, 1700000000456)");
    raw.exec(
        "INSERT INTO resources VALUES ('old-node', '/t', 0, 'temperature-c', 'sensor', "
        "'0 50', 1, 12, 'Temp, \"quoted\"')");
    raw.exec("INSERT INTO resources VALUES ('old-node', '/a', 1, '', '', '', 0, NULL, NULL)");
  }
  // A reader does not migrate: it asks for the daemon to do it, and leaves the file alone.
  expectThrowMentioning([&] { Store s(path, Store::Mode::ReadOnly); }, {path, "older"});
  EXPECT_EQ(RawDb(path).integer("PRAGMA user_version"), 1);

  {
    Store store(path);
    EXPECT_EQ(store.schemaVersion(), Store::currentSchemaVersion());
    EXPECT_GE(store.schemaVersion(), 2);
    const auto devices = store.loadAll();
    ASSERT_EQ(devices.size(), 1u);
    const Device& d = devices[0];
    EXPECT_EQ(d.name, "old-node");
    EXPECT_EQ(d.friendly_name, "Old node");
    EXPECT_EQ(d.uri, "coap://10.0.0.1:5683");
    EXPECT_EQ(d.source, Source::ResourceDirectory);
    EXPECT_TRUE(d.online);
    EXPECT_EQ(d.first_seen, atMs(1'600'000'000'123));
    EXPECT_EQ(d.last_seen, atMs(1'700'000'000'456));
    ASSERT_EQ(d.resources.size(), 2u);
    EXPECT_EQ(d.resources[0].path, "/t");
    EXPECT_EQ(d.resources[0].rt, std::vector<std::string>{"temperature-c"});
    EXPECT_EQ(d.resources[0].ct, (std::vector<unsigned>{0, 50}));
    EXPECT_TRUE(d.resources[0].obs);
    EXPECT_EQ(d.resources[0].sz, std::optional<std::size_t>(12));
    EXPECT_EQ(d.resources[0].title, std::optional<std::string>("Temp, \"quoted\""));
    EXPECT_EQ(d.resources[1].path, "/a");
    EXPECT_EQ(d.resources[1].title, std::nullopt);
    EXPECT_TRUE(store.loadRdRegistrations().empty());
    store.saveRdRegistration(makeRegistration("/rd/1", "old-node"), atMs(9'000));
  }
  RawDb raw(path);
  EXPECT_EQ(raw.integer("PRAGMA user_version"), Store::currentSchemaVersion());
  EXPECT_EQ(raw.integer("PRAGMA application_id"), 1127370065);
  EXPECT_EQ(raw.rows("PRAGMA integrity_check"), std::vector<std::string>{"ok"});
  EXPECT_EQ(raw.one("SELECT strict FROM pragma_table_list WHERE name = 'rd_registrations'"), "1");
  EXPECT_EQ(raw.one("SELECT location, ep, sector, et, lifetime_s, expires_ms, links "
                    "FROM rd_registrations"),
            "/rd/1|old-node|||60|9000|</t>;obs");
  // And the migrated file now opens read-only, registrations included.
  Store reader(path, Store::Mode::ReadOnly);
  EXPECT_EQ(reader.loadAll().size(), 1u);
  EXPECT_EQ(reader.loadRdRegistrations().size(), 1u);
}

TEST(StoreRd, StillRefusesASchemaNewerThanItsOwn) {
  TempDir dir;
  const std::string path = dir.path("v-next.db");
  {
    Store store(path);
    store.saveRdRegistration(makeRegistration("/rd/1", "a"), atMs(1'000));
  }
  const int next = Store::currentSchemaVersion() + 1;
  { RawDb(path).exec("PRAGMA user_version = " + std::to_string(next)); }
  expectThrowMentioning([&] { Store s(path); }, {path, std::to_string(next), "newer"});
  expectThrowMentioning([&] { Store s(path, Store::Mode::ReadOnly); },
                        {path, std::to_string(next)});
  RawDb raw(path);  // untouched
  EXPECT_EQ(raw.integer("PRAGMA user_version"), next);
  EXPECT_EQ(raw.integer("SELECT count(*) FROM rd_registrations"), 1);
}

// --- writes the file cannot take: pending, flushed later (issue 16) ------------------

// Another connection holding the write lock, as a second process would
// (`BEGIN EXCLUSIVE`): every write of the store meets SQLITE_BUSY after its busy timeout.
class Lock {
 public:
  explicit Lock(const std::string& path) : raw_(path) { raw_.exec("BEGIN EXCLUSIVE"); }
  ~Lock() {
    if (held_) release();
  }
  void release() {
    raw_.exec("COMMIT");
    held_ = false;
  }

 private:
  RawDb raw_;
  bool held_ = true;
};

double secondsOf(const std::function<void()>& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

TEST(StorePending, WritesWhileAnotherConnectionHoldsTheLockAreKeptAndLandAfterIt) {
  TempDir dir;
  const std::string path = dir.path("locked.db");
  Store store(path);
  ASSERT_EQ(store.save(makeDevice("stays", 1)), WriteResult::Written);
  ASSERT_EQ(store.save(makeDevice("goes", 1)), WriteResult::Written);
  ASSERT_EQ(store.saveRdRegistration(makeRegistration("/rd/1", "old-ep"), atMs(1'000)),
            WriteResult::Written);
  Store reader(path, Store::Mode::ReadOnly);

  Lock lock(path);
  // The first write waits for the lock for the store's short busy timeout, not seconds;
  // it neither throws nor blocks the caller for long.
  WriteResult first = WriteResult::Written;
  const double waited = secondsOf([&] { first = store.save(makeDevice("new", 3)); });
  EXPECT_EQ(first, WriteResult::Pending);
  EXPECT_GE(waited, 0.8 * std::chrono::duration<double>(Store::kWriteBusyTimeout).count());
  EXPECT_LT(waited, 1.0);
  EXPECT_NE(store.lastError().find("locked"), std::string::npos) << store.lastError();

  // The ones after it join the pending writes without trying the file: no wait at all.
  const double rest = secondsOf([&] {
    EXPECT_EQ(store.remove("goes"), WriteResult::Pending);
    EXPECT_EQ(store.saveRdRegistration(makeRegistration("/rd/2", "rd-ep"), atMs(2'000)),
              WriteResult::Pending);
    EXPECT_EQ(store.removeRdRegistration("/rd/1"), WriteResult::Pending);
    EXPECT_EQ(store.rename("stays", "renamed"), RenameResult::Pending);
    store.touch("renamed", atMs(1'800'000'000'000), true);
    for (int i = 0; i < 100; ++i) {
      EXPECT_EQ(store.save(makeDevice("burst" + std::to_string(i % 10), 2)), WriteResult::Pending);
    }
  });
  EXPECT_LT(rest, 0.5) << "100 writes waited for the lock one by one";
  EXPECT_EQ(store.pendingWrites(), 5u + 10u) << "one per device name and location, in order";
  EXPECT_EQ(store.pendingTouches(), 1u);
  EXPECT_EQ(store.stats().deferred, 105u);
  EXPECT_EQ(store.stats().rejected, 0u);

  // `coap2mqtt devices` (a read-only store in another process) still reads: WAL.
  std::vector<Device> seen;
  EXPECT_NO_THROW(seen = reader.loadAll());
  EXPECT_EQ(seen.size(), 2u);

  // A flush under the lock fails, keeps everything, and says so.
  EXPECT_THROW(store.flush(), std::runtime_error);
  EXPECT_EQ(store.stats().failed_flushes, 1u);
  EXPECT_EQ(store.pendingWrites(), 15u);
  EXPECT_EQ(store.pendingTouches(), 1u);
  EXPECT_EQ(store.loadAll().size(), 2u) << "reads see the file, not pending writes";

  lock.release();
  ASSERT_NO_THROW(store.flush());
  EXPECT_EQ(store.pendingWrites(), 0u);
  EXPECT_EQ(store.pendingTouches(), 0u);
  std::vector<std::string> names;
  for (const Device& d : reader.loadAll()) names.push_back(d.name);
  EXPECT_EQ(names,
            (std::vector<std::string>{"burst0", "burst1", "burst2", "burst3", "burst4", "burst5",
                                      "burst6", "burst7", "burst8", "burst9", "new", "renamed"}));
  const auto all = reader.loadAll();
  const auto renamed =
      std::find_if(all.begin(), all.end(), [](const Device& d) { return d.name == "renamed"; });
  ASSERT_NE(renamed, all.end());
  EXPECT_EQ(renamed->last_seen, atMs(1'800'000'000'000)) << "the touch after the rename";
  EXPECT_TRUE(renamed->online);
  EXPECT_EQ(renamed->resources.size(), 1u);
  EXPECT_EQ(locations(reader.loadRdRegistrations()), std::vector<std::string>{"/rd/2"});

  // Writing again: at once.
  EXPECT_EQ(store.save(makeDevice("after", 1)), WriteResult::Written);
  EXPECT_EQ(reader.loadAll().size(), 13u);
}

TEST(StorePending, PendingSaveAndRemoveOfOneNameEndAsIfEachHadBeenWrittenAtOnce) {
  TempDir dir;
  const std::string path = dir.path("order.db");
  Store store(path);
  Device x = makeDevice("x", 2);
  Device y = makeDevice("y", 2);
  Device w = makeDevice("w", 2);
  for (const Device& d : {x, y, w}) ASSERT_EQ(store.save(d), WriteResult::Written);
  Device z3 = makeDevice("z", 3);
  {
    Lock lock(path);
    // remove, then save: the saved one stays, as a new device (its own first_seen).
    Device x2 = makeDevice("x", 4);
    x2.first_seen = atMs(1'800'000'000'000);
    EXPECT_EQ(store.remove("x"), WriteResult::Pending);
    EXPECT_EQ(store.save(x2), WriteResult::Pending);
    // save, then remove: gone.
    EXPECT_EQ(store.save(makeDevice("y", 5)), WriteResult::Pending);
    EXPECT_EQ(store.remove("y"), WriteResult::Pending);
    // save, remove, save of a name not stored: the last save.
    EXPECT_EQ(store.save(makeDevice("z", 1)), WriteResult::Pending);
    EXPECT_EQ(store.remove("z"), WriteResult::Pending);
    EXPECT_EQ(store.save(z3), WriteResult::Pending);
    // save, save of a stored device: the last one, first_seen kept from the file.
    Device w2 = makeDevice("w", 1);
    w2.first_seen = atMs(1'900'000'000'000);
    w2.uri = "coap://w2";
    EXPECT_EQ(store.save(makeDevice("w", 3)), WriteResult::Pending);
    EXPECT_EQ(store.save(w2), WriteResult::Pending);
    // remove, save, remove, save: a new device again.
    EXPECT_EQ(store.remove("w"), WriteResult::Pending);
    EXPECT_EQ(store.save(w2), WriteResult::Pending);
    EXPECT_EQ(store.pendingWrites(), 4u) << "the latest per name";
    EXPECT_THROW(store.flush(), std::runtime_error);
  }
  store.flush();
  const auto loaded = store.loadAll();
  ASSERT_EQ(loaded.size(), 3u);
  EXPECT_EQ(loaded[0].name, "w");
  EXPECT_EQ(loaded[0].uri, "coap://w2");
  EXPECT_EQ(loaded[0].first_seen, atMs(1'900'000'000'000)) << "removed in between: new";
  EXPECT_EQ(loaded[0].resources.size(), 1u);
  EXPECT_EQ(loaded[1].name, "x");
  EXPECT_EQ(loaded[1].first_seen, atMs(1'800'000'000'000));
  EXPECT_EQ(loaded[1].resources.size(), 4u);
  expectSameDevice(loaded[2], z3);
  RawDb raw(path);
  EXPECT_EQ(raw.integer("SELECT count(*) FROM resources"), 1 + 4 + 3);
}

TEST(StorePending, SaveAfterSaveOfAStoredDeviceKeepsItsFirstSeen) {
  TempDir dir;
  const std::string path = dir.path("keep.db");
  Store store(path);
  ASSERT_EQ(store.save(makeDevice("w", 2)), WriteResult::Written);
  {
    Lock lock(path);
    Device w2 = makeDevice("w", 1);
    w2.first_seen = atMs(1'900'000'000'000);
    EXPECT_EQ(store.save(makeDevice("w", 3)), WriteResult::Pending);
    EXPECT_EQ(store.save(w2), WriteResult::Pending);
  }
  store.flush();
  const auto loaded = store.loadAll();
  ASSERT_EQ(loaded.size(), 1u);
  EXPECT_EQ(loaded[0].first_seen, makeDevice("w").first_seen);
  EXPECT_EQ(loaded[0].resources.size(), 1u);
}

TEST(StorePending, APendingRenameHappensOnlyIfItStillCanAtFlush) {
  TempDir dir;
  const std::string path = dir.path("rename.db");
  Store store(path);
  ASSERT_EQ(store.save(makeDevice("a", 1)), WriteResult::Written);
  ASSERT_EQ(store.save(makeDevice("b", 2)), WriteResult::Written);
  store.touch("a", atMs(1'800'000'000'000), true);  // before the renames: lands on "a"/"c"
  {
    Lock lock(path);
    EXPECT_EQ(store.rename("a", "b"), RenameResult::Pending);  // "b" is taken: no-op
    EXPECT_EQ(store.rename("a", "c"), RenameResult::Pending);
    EXPECT_EQ(store.save(makeDevice("a", 3)), WriteResult::Pending);  // a new "a" after it
    EXPECT_EQ(store.rename("nobody", "d"), RenameResult::Pending);
  }
  store.flush();
  const auto loaded = store.loadAll();
  ASSERT_EQ(loaded.size(), 3u);
  EXPECT_EQ(loaded[0].name, "a");
  EXPECT_EQ(loaded[0].resources.size(), 3u);
  EXPECT_EQ(loaded[1].name, "b");
  EXPECT_EQ(loaded[1].resources.size(), 2u);
  EXPECT_EQ(loaded[2].name, "c");
  EXPECT_EQ(loaded[2].resources.size(), 1u);
  EXPECT_EQ(loaded[2].last_seen, atMs(1'800'000'000'000)) << "the touch moved along";
  EXPECT_TRUE(loaded[2].online);
}

TEST(StorePending, ARefusedWriteIsDroppedAloneWhenFlushed) {
  TempDir dir;
  const std::string path = dir.path("refused.db");
  Store store(path);
  {
    RawDb raw(path);
    raw.exec(
        "CREATE TRIGGER boom BEFORE INSERT ON resources WHEN NEW.path = '/boom' "
        "BEGIN SELECT RAISE(ABORT, 'boom'); END");
  }
  Device bad = makeDevice("bad");
  bad.resources = {makeResource("/ok"), makeResource("/boom")};
  {
    Lock lock(path);
    EXPECT_EQ(store.save(makeDevice("good1", 1)), WriteResult::Pending);
    EXPECT_EQ(store.save(bad), WriteResult::Pending);
    EXPECT_EQ(store.save(makeDevice("good2", 2)), WriteResult::Pending);
  }
  EXPECT_NO_THROW(store.flush());
  EXPECT_EQ(store.pendingWrites(), 0u);
  EXPECT_EQ(store.stats().rejected, 1u);
  EXPECT_NE(store.lastError().find("boom"), std::string::npos) << store.lastError();
  const auto loaded = store.loadAll();
  ASSERT_EQ(loaded.size(), 2u);
  EXPECT_EQ(loaded[0].name, "good1");
  EXPECT_EQ(loaded[1].name, "good2");
  RawDb raw(path);
  EXPECT_EQ(raw.integer("SELECT count(*) FROM resources WHERE device = 'bad'"), 0)
      << "its savepoint undid the part that had been written";
}

TEST(StorePending, TouchesStayBatchedAndSurviveAFailedFlush) {
  TempDir dir;
  const std::string path = dir.path("touch.db");
  Store store(path);
  for (int i = 0; i < 50; ++i) store.save(makeDevice("d" + std::to_string(i)));
  {
    Lock lock(path);
    for (int round = 0; round < 3; ++round) {
      for (int i = 0; i < 50; ++i) {
        store.touch("d" + std::to_string(i), atMs(1'800'000'000'000 + round * 1000 + i), true);
      }
    }
    EXPECT_EQ(store.pendingTouches(), 50u) << "the latest per device";
    EXPECT_EQ(store.pendingWrites(), 0u) << "touches are not writes";
    EXPECT_THROW(store.flush(), std::runtime_error);
    EXPECT_EQ(store.pendingTouches(), 50u);
  }
  store.flush();
  EXPECT_EQ(store.pendingTouches(), 0u);
  for (const Device& d : store.loadAll()) {
    const int i = std::stoi(d.name.substr(1));
    EXPECT_EQ(d.last_seen, atMs(1'800'000'000'000 + 2000 + i)) << d.name;
    EXPECT_TRUE(d.online) << d.name;
  }
}

TEST(StorePending, TheDestructorWritesWhatIsPending) {
  TempDir dir;
  const std::string path = dir.path("dtor.db");
  {
    Store store(path);
    {
      Lock lock(path);
      EXPECT_EQ(store.save(makeDevice("late", 2)), WriteResult::Pending);
    }
  }
  const auto loaded = Store(path, Store::Mode::ReadOnly).loadAll();
  ASSERT_EQ(loaded.size(), 1u);
  EXPECT_EQ(loaded[0].name, "late");
}

// The same random writes to two stores: one writes at once, the other has the file
// locked now and then (its writes going pending) and flushes when it can. Both files must
// end the same: pending writes change when a write lands, never what the file holds.
TEST(StorePending, RandomWritesEndTheSameWithOrWithoutALock) {
  const unsigned seed = std::random_device{}();
  RecordProperty("seed", std::to_string(seed));
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  TempDir dir;
  const std::string path_a = dir.path("a.db");
  Store direct(dir.path("direct.db"));
  Store locked(path_a);
  std::unique_ptr<Lock> lock;
  const std::vector<std::string> names{"n0", "n1", "n2", "n3"};
  const auto pick = [&](const std::vector<std::string>& from) { return from[rng() % from.size()]; };
  for (int step = 0; step < 400; ++step) {
    const int what = static_cast<int>(rng() % 100);
    const std::string name = pick(names);
    if (what < 30) {
      Device d = makeDevice(name, static_cast<int>(rng() % 4));
      d.uri = "coap://step" + std::to_string(step);
      d.first_seen = atMs(1'700'000'000'000 + step);
      d.last_seen = atMs(1'700'000'100'000 + step);
      direct.save(d);
      locked.save(d);
    } else if (what < 45) {
      direct.remove(name);
      locked.remove(name);
    } else if (what < 55) {
      const std::string to = pick(names);
      direct.rename(name, to);
      locked.rename(name, to);
    } else if (what < 75) {
      const auto t = atMs(1'750'000'000'000 + step);
      const bool online = rng() % 2 == 0;
      direct.touch(name, t, online);
      locked.touch(name, t, online);
    } else if (what < 82) {
      const std::string location = "/rd/" + std::to_string(rng() % 3);
      const RdRegistration r = makeRegistration(location, "ep" + std::to_string(step));
      direct.saveRdRegistration(r, atMs(step));
      locked.saveRdRegistration(r, atMs(step));
    } else if (what < 86) {
      const std::string location = "/rd/" + std::to_string(rng() % 3);
      direct.removeRdRegistration(location);
      locked.removeRdRegistration(location);
    } else if (what < 93) {
      // The lock comes or goes.
      if (lock) {
        lock.reset();
      } else {
        lock = std::make_unique<Lock>(path_a);
      }
    } else {
      direct.flush();
      const bool anything = locked.pendingWrites() + locked.pendingTouches() > 0;
      try {
        locked.flush();
        ASSERT_FALSE(lock && anything) << "a flush under the lock succeeded";
      } catch (const std::runtime_error&) {
        ASSERT_TRUE(lock) << "a flush without the lock failed: " << locked.lastError();
      }
    }
  }
  lock.reset();
  direct.flush();
  locked.flush();
  EXPECT_GT(locked.stats().deferred, 0u) << "the lock never caught a write";
  const auto a = direct.loadAll();
  const auto b = locked.loadAll();
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) expectSameDevice(b[i], a[i]);
  const auto ra = direct.loadRdRegistrations();
  const auto rb = locked.loadRdRegistrations();
  ASSERT_EQ(ra.size(), rb.size());
  for (std::size_t i = 0; i < ra.size(); ++i) {
    expectSameRegistration(rb[i], ra[i].registration, ra[i].expires_at);
  }
}

// Issue 17, finding 2: `</a>;sz=9223372036854775808` in a multicast answer made save()
// throw. The parser now leaves such an sz unset; a Resource built otherwise with one
// beyond INT64_MAX is stored with its size unknown.
TEST(Store, AnSzBeyondInt64MaxIsStoredAsUnknownNotThrown) {
  TempDir dir;
  Store store(dir.path("sz.db"));
  const auto links = parseLinks("</a>;sz=9223372036854775808;obs,</b>;sz=9223372036854775807");
  Device d = makeDevice("hostile");
  for (const Link& l : links) {
    Resource r = makeResource(*targetPath(l.target));
    r.obs = l.obs;
    r.sz = l.sz;
    d.resources.push_back(r);
  }
  Resource by_hand = makeResource("/c");
  by_hand.sz = std::numeric_limits<std::size_t>::max();
  d.resources.push_back(by_hand);
  ASSERT_EQ(store.save(d), WriteResult::Written) << store.lastError();
  const auto loaded = store.loadAll();
  ASSERT_EQ(loaded.size(), 1u);
  ASSERT_EQ(loaded[0].resources.size(), 3u);
  EXPECT_FALSE(loaded[0].resources[0].sz.has_value());
  EXPECT_TRUE(loaded[0].resources[0].obs);
  EXPECT_EQ(loaded[0].resources[1].sz,
            std::optional<std::size_t>(std::numeric_limits<std::int64_t>::max()));
  EXPECT_FALSE(loaded[0].resources[2].sz.has_value());

  // An RD registration carrying it round-trips too.
  RdRegistration r = makeRegistration("/rd/1", "hostile", "</a>;sz=9223372036854775808;obs");
  ASSERT_EQ(store.saveRdRegistration(r, atMs(1'000)), WriteResult::Written);
  const auto regs = store.loadRdRegistrations();
  ASSERT_EQ(regs.size(), 1u);
  expectSameRegistration(regs[0], r, atMs(1'000));
}

// --- crash consistency --------------------------------------------------------------

constexpr int kCrashDevices = 200;
constexpr int kCrashResources = 5;

// Every row a save writes carries the same generation, so a device whose resources come
// from two different saves (a torn write) is visible.
Device crashDevice(int index, long generation) {
  Device d;
  d.name = "dev" + std::to_string(index);
  d.uri = "coap://10.0.0." + std::to_string(index % 250) + "/gen" + std::to_string(generation);
  d.source = Source::Multicast;
  d.online = true;
  d.first_seen = atMs(1'700'000'000'000);
  d.last_seen = atMs(1'700'000'000'000 + generation);
  for (int r = 0; r < kCrashResources; ++r) {
    Resource res;
    res.path = "/res" + std::to_string(r);
    res.rt = {"gen" + std::to_string(generation), "sensor"};
    res.ct = {0, 50};
    res.obs = r % 2 == 0;
    res.sz = generation;
    res.title = "gen" + std::to_string(generation);
    d.resources.push_back(std::move(res));
  }
  return d;
}

// Child: write as fast as possible until killed. Never returns.
[[noreturn]] void crashWriter(const std::string& path, unsigned seed) {
  try {
    Store store(path);
    std::mt19937 rng(seed);
    for (long gen = 1;; ++gen) {
      for (int i = 0; i < kCrashDevices; ++i) {
        store.save(crashDevice(i, gen));
        store.touch("dev" + std::to_string(rng() % kCrashDevices), Clock::now(), rng() % 2);
        if (i % 50 == 49) store.flush();
      }
      // Renames, removals and re-adds exercise the cascades under fire.
      const int victim = static_cast<int>(rng() % kCrashDevices);
      const std::string name = "dev" + std::to_string(victim);
      if (store.rename(name, "renamed") == RenameResult::Renamed) store.rename("renamed", name);
      store.remove("dev" + std::to_string((victim + 1) % kCrashDevices));
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "crash writer: %s\n", e.what());
    _exit(3);
  }
}

TEST(StoreCrash, SigkillAtAnyMomentLeavesAConsistentDatabase) {
  TempDir dir;
  const std::string path = dir.path("crash.db");
  const unsigned seed = std::random_device{}();
  RecordProperty("seed", std::to_string(seed));
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  // Mostly short delays (kills during open/migration of a new file, too), some longer.
  std::uniform_int_distribution<int> delay_ms(1, 250);

  constexpr int kRounds = 8;
  int rounds_with_devices = 0;
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    std::fflush(nullptr);  // nothing buffered gets written twice by the child
    const pid_t pid = fork();
    ASSERT_GE(pid, 0) << "fork failed";
    if (pid == 0) crashWriter(path, seed + static_cast<unsigned>(round));
    std::this_thread::sleep_for(milliseconds(delay_ms(rng)));
    ASSERT_EQ(kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "the writer ended by itself (status " << status << "), see its stderr";

    if (!std::filesystem::exists(path)) continue;  // killed before even creating it
    {
      // Raw checks first: the file as the killed process left it (WAL recovery included).
      RawDb raw(path);
      EXPECT_EQ(raw.rows("PRAGMA integrity_check"), std::vector<std::string>{"ok"});
      EXPECT_TRUE(raw.rows("PRAGMA foreign_key_check").empty());
    }
    // Then the store itself must open it (migrating if killed before v1 committed).
    Store store(path);
    EXPECT_EQ(store.schemaVersion(), Store::currentSchemaVersion());
    const std::vector<Device> devices = store.loadAll();
    EXPECT_LE(devices.size(), static_cast<std::size_t>(kCrashDevices));
    std::set<std::string> names;
    for (const Device& d : devices) {
      SCOPED_TRACE(d.name);
      EXPECT_TRUE(names.insert(d.name).second);
      const bool renamed = d.name == "renamed";
      EXPECT_TRUE(renamed || d.name.rfind("dev", 0) == 0);
      ASSERT_EQ(d.resources.size(), static_cast<std::size_t>(kCrashResources));
      // All resources and the device row from one and the same save.
      const std::string gen = d.uri.substr(d.uri.rfind('/') + 1);
      for (int r = 0; r < kCrashResources; ++r) {
        const Resource& res = d.resources[static_cast<std::size_t>(r)];
        EXPECT_EQ(res.path, "/res" + std::to_string(r));
        ASSERT_TRUE(res.title.has_value());
        EXPECT_EQ(*res.title, gen);
        ASSERT_EQ(res.rt.size(), 2u);
        EXPECT_EQ(res.rt[0], gen);
        EXPECT_EQ(res.sz, std::optional<std::size_t>(std::stoul(gen.substr(3))));
      }
    }
    if (!devices.empty()) ++rounds_with_devices;
  }
  // The test is only meaningful if the writer got somewhere before being killed.
  EXPECT_GE(rounds_with_devices, kRounds / 2);
}

}  // namespace
}  // namespace coap2mqtt::registry
