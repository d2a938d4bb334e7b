#include "registry/store.h"

#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <limits>
#include <list>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>
#include <variant>

#include "registry/sqlite.h"

// Layout of the file (schema version 3):
//
//   devices(name PK, friendly_name, uri, source 'static'|'multicast'|'rd'|'pushed' (v3),
//           online 0|1,
//           first_seen, last_seen)                         times: ms since the Unix epoch
//   resources(device -> devices(name) ON DELETE/UPDATE CASCADE, path, ord, rt, ifs, ct,
//             obs 0|1, sz NULL|>=0, title NULL|text, PK(device, path))
//   rd_registrations(location PK, ep, sector, base, et, lifetime_s, expires_ms, links)  (v2)
//             expires_ms: wall clock, ms since the Unix epoch; links: RFC 6690 link-format
//             as serializeLinkFormat writes it. Independent of devices: a registration
//             lives by its lifetime, the device it created by the registry's rules.
//
// rt, ifs and ct are space-joined lists: RFC 6690 relation types and interface
// descriptions are space-separated tokens, so an item can never contain a space (save()
// refuses one that does rather than store something that would come back split). `ord`
// keeps the order of Device::resources. Both tables are STRICT, so a wrong type is an
// error, not a silent conversion.
//
// Crash consistency comes from SQLite, used the boring way: WAL, every multi-statement
// change in one BEGIN IMMEDIATE ... COMMIT, each migration step in one transaction
// together with its PRAGMA user_version bump. synchronous=NORMAL can lose the last
// commits on power loss (never on a process crash) but never corrupts.
//
// A write the file cannot take (locked, full, I/O error) is kept in memory as a value (Op
// below) and replayed by flush() in the order the writes were made, all in one
// transaction, each in a SAVEPOINT so that one the database refuses is undone alone; see
// store.h for the rules.

namespace coap2mqtt::registry {
namespace {

using Clock = std::chrono::system_clock;

// PRAGMA application_id: "C2MQ". Marks the file as ours so that a path pointing at some
// other program's database is refused instead of having our tables added to it.
constexpr std::int32_t kApplicationId = 0x43324D51;

struct Migration {
  int version;
  const char* sql;
};

// Forward-only. Append a step to change the schema; never edit one that has shipped.
constexpr Migration kMigrations[] = {
    {1, R"sql(
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
)sql"},
    {2, R"sql(
CREATE TABLE rd_registrations (
  location   TEXT    NOT NULL PRIMARY KEY,
  ep         TEXT    NOT NULL,
  sector     TEXT    NOT NULL DEFAULT '',
  base       TEXT    NOT NULL,
  et         TEXT    NOT NULL DEFAULT '',
  lifetime_s INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL,
  links      TEXT    NOT NULL
) STRICT;
)sql"},
    // v3: devices that publish to /ps (source 'pushed'). SQLite cannot change a CHECK in
    // place: both tables are rebuilt (resources first, so that dropping devices cascades
    // into nothing), their rows kept.
    {3, R"sql(
CREATE TABLE devices_v3 (
  name          TEXT    NOT NULL PRIMARY KEY,
  friendly_name TEXT    NOT NULL DEFAULT '',
  uri           TEXT    NOT NULL,
  source        TEXT    NOT NULL CHECK (source IN ('static', 'multicast', 'rd', 'pushed')),
  online        INTEGER NOT NULL CHECK (online IN (0, 1)),
  first_seen    INTEGER NOT NULL,
  last_seen     INTEGER NOT NULL
) STRICT;
INSERT INTO devices_v3 SELECT name, friendly_name, uri, source, online, first_seen, last_seen
  FROM devices;
CREATE TABLE resources_v2 AS SELECT * FROM resources;
DROP TABLE resources;
DROP TABLE devices;
ALTER TABLE devices_v3 RENAME TO devices;
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
INSERT INTO resources SELECT device, path, ord, rt, ifs, ct, obs, sz, title FROM resources_v2;
DROP TABLE resources_v2;
)sql"},
};

static_assert(kApplicationId == 1127370065, "keep the v1 migration's literal in sync");

constexpr bool migrationsAreConsecutive() {
  int expected = 1;
  for (const Migration& m : kMigrations) {
    if (m.version != expected++) return false;
  }
  return true;
}
static_assert(migrationsAreConsecutive(), "migration versions must be 1, 2, 3, ...");

constexpr int kCurrentVersion = std::size(kMigrations);

using sqlite::Db;
using sqlite::Run;
using sqlite::Savepoint;
using sqlite::Statement;
using sqlite::Transaction;

std::int64_t toMs(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

Clock::time_point fromMs(std::int64_t ms) {
  return Clock::time_point(
      std::chrono::duration_cast<Clock::duration>(std::chrono::milliseconds(ms)));
}

// fromMs, saturating: a row written by hand (or by a clock gone mad) must not overflow
// the time_point's representation.
Clock::time_point fromMsSaturating(std::int64_t ms) {
  using Ms = std::chrono::milliseconds;
  constexpr auto kMax = std::chrono::duration_cast<Ms>(Clock::duration::max()).count();
  constexpr auto kMin = std::chrono::duration_cast<Ms>(Clock::duration::min()).count();
  if (ms >= kMax) return Clock::time_point(std::chrono::duration_cast<Clock::duration>(Ms(kMax)));
  if (ms <= kMin) return Clock::time_point(std::chrono::duration_cast<Clock::duration>(Ms(kMin)));
  return fromMs(ms);
}

// RFC 9176 §5: lt is 1..2^32-1 seconds.
constexpr std::int64_t kMaxRdLifetimeS = 4294967295;

// Room for serializeLinkFormat's output to be longer than the registration's payload was.
constexpr std::size_t kMaxStoredLinksBytes = std::size_t{16} * 1024 * 1024;

std::optional<Source> sourceFromString(std::string_view s) {
  for (Source source :
       {Source::Static, Source::Multicast, Source::ResourceDirectory, Source::Pushed}) {
    if (s == toString(source)) return source;
  }
  return std::nullopt;
}

// Items must be non-empty and free of spaces to survive the space-joined encoding. The
// link-format parser only ever produces such items (it splits on SP/HTAB).
void checkListItems(const Device& device, const Resource& resource, const char* attr,
                    const std::vector<std::string>& items) {
  for (const std::string& item : items) {
    if (item.empty() || item.find_first_of(" \t\r\n") != std::string::npos) {
      throw std::invalid_argument("registry store: device '" + device.name + "' resource '" +
                                  resource.path + "': " + attr + " value '" + item +
                                  "' is empty or contains whitespace");
    }
  }
}

std::string joinWords(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& item : items) {
    if (!out.empty()) out += ' ';
    out += item;
  }
  return out;
}

std::string joinNumbers(const std::vector<unsigned>& items) {
  std::string out;
  for (unsigned item : items) {
    if (!out.empty()) out += ' ';
    out += std::to_string(item);
  }
  return out;
}

template <typename F>
void forEachWord(std::string_view s, F&& f) {
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && s[i] == ' ') ++i;
    const std::size_t start = i;
    while (i < s.size() && s[i] != ' ') ++i;
    if (i > start) f(s.substr(start, i - start));
  }
}

std::vector<std::string> splitWords(std::string_view s) {
  std::vector<std::string> out;
  forEachWord(s, [&](std::string_view w) { out.emplace_back(w); });
  return out;
}

// The writes, as values: what a pending write keeps until flush() replays it.
struct SaveDeviceOp {
  Device device;
  std::int64_t first_seen_ms = 0;
  // Supersedes a pending remove of the same name: written as remove + insert, so the row
  // gets this first_seen as it would have, had the remove been written at once. (A save
  // that supersedes a pending save takes over its first_seen and replace.)
  bool replace = false;
};
struct RemoveDeviceOp {
  std::string name;
};
struct RenameDeviceOp {
  std::string from;
  std::string to;
};
struct TouchOp {  // a buffered touch moved into the order by a pending rename
  std::string name;
  std::int64_t last_seen_ms = 0;
  bool online = false;
};
struct SaveRdOp {
  RdRegistration registration;
  std::int64_t expires_ms = 0;
  std::string links;  // serialised and checked already
};
struct RemoveRdOp {
  std::string location;
};
using Op =
    std::variant<SaveDeviceOp, RemoveDeviceOp, RenameDeviceOp, TouchOp, SaveRdOp, RemoveRdOp>;

}  // namespace

struct Store::Impl {
  // The loop-thread rule: the thread that opened the store is the only one that uses it.
  const std::thread::id owner = std::this_thread::get_id();
  void checkThread(const char* entry) const {
    if (std::this_thread::get_id() != owner) [[unlikely]] {
      std::fprintf(stderr, "coap2mqtt: registry::Store::%s called off the thread that opened it\n",
                   entry);
      std::abort();
    }
  }
  struct PendingTouch {
    std::int64_t last_seen_ms;
    bool online;
  };
  using Ops = std::list<Op>;
  using Latest = std::map<std::string, Ops::iterator, std::less<>>;

  std::string path_;
  Mode mode_;
  Db db_;  // declared before the statements: they are finalized first
  Statement user_version_;
  Statement select_devices_;
  Statement select_resources_;
  // Read-write mode only.
  Statement upsert_device_;
  Statement delete_resources_;
  Statement insert_resource_;
  Statement delete_device_;
  Statement device_exists_;
  Statement rename_device_;
  Statement touch_device_;
  Statement upsert_rd_;
  Statement delete_rd_;
  Statement select_rd_;  // both modes
  std::map<std::string, PendingTouch, std::less<>> touches_;
  // Pending writes, in the order they were made; the latest save/remove per device name
  // and per RD location (to be replaced by the next one of the same key).
  Ops ops_;
  Latest latest_device_;
  Latest latest_rd_;
  std::string last_error_;
  StoreStats stats_;

  Impl(std::string path, Mode mode)
      : path_(std::move(path)),
        mode_(mode),
        db_(path_, mode == Mode::ReadWrite ? Db::Mode::ReadWrite : Db::Mode::ReadOnly,
            "registry store " + path_, kOpenBusyTimeout) {}

  [[noreturn]] void failPlain(const std::string& what) const { db_.fail(what); }
  // Not ours to use (sqlite::Error::unusableFile()): the daemon moves such a file aside.
  [[noreturn]] void failUnusable(const std::string& what) const { db_.failUnusable(what); }

  void requireWritable(const char* op) const {
    if (mode_ == Mode::ReadOnly) {
      throw std::logic_error("registry store " + path_ + ": " + op + "() on a read-only store");
    }
  }

  void open() {
    const bool rw = mode_ == Mode::ReadWrite;
    db_.exec("PRAGMA foreign_keys = ON", "enabling foreign keys");
    if (db_.queryInt("PRAGMA foreign_keys") != 1) {
      failPlain("this SQLite has no foreign key support (needed for ON DELETE CASCADE)");
    }

    // The first statement that reads the file: a non-database fails here (SQLITE_NOTADB).
    const std::int64_t version = db_.queryInt("PRAGMA user_version");
    const std::int64_t app_id = db_.queryInt("PRAGMA application_id");
    if (version > kCurrentVersion) {
      failUnusable("database schema version " + std::to_string(version) +
                   " is newer than this coap2mqtt supports (" + std::to_string(kCurrentVersion) +
                   "); refusing to open it, upgrade coap2mqtt or use another database file");
    }
    if (app_id != 0 && app_id != kApplicationId) {
      failUnusable("not a coap2mqtt database (PRAGMA application_id is " + std::to_string(app_id) +
                   ")");
    }
    if (version == 0 && db_.queryInt("SELECT count(*) FROM sqlite_schema") != 0) {
      failUnusable(
          "an SQLite database of some other program (it has tables but no coap2mqtt "
          "schema version); refusing to add tables to it");
    }

    if (rw) {
      const std::string journal = db_.queryText("PRAGMA journal_mode = WAL");
      // A volatile store (":memory:", when the file cannot be used) has no WAL to switch to.
      if (journal != "wal" && !(path_ == ":memory:" && journal == "memory")) {
        failPlain("could not switch to WAL journal mode (got '" + journal + "')");
      }
      db_.exec("PRAGMA synchronous = NORMAL", "setting synchronous=NORMAL");
    } else if (version < kCurrentVersion) {
      failPlain(version == 0 ? std::string("has no coap2mqtt schema yet (the daemon creates it)")
                             : "database schema version " + std::to_string(version) +
                                   " is older than " + std::to_string(kCurrentVersion) +
                                   "; open it read-write once (start the daemon) to migrate");
    }

    user_version_ = db_.prepare("PRAGMA user_version");

    if (rw) migrate();

    select_devices_ = db_.prepare(
        "SELECT name, friendly_name, uri, source, online, first_seen, last_seen "
        "FROM devices ORDER BY name");
    select_resources_ = db_.prepare(
        "SELECT device, path, rt, ifs, ct, obs, sz, title FROM resources ORDER BY device, ord");
    select_rd_ = db_.prepare(
        "SELECT location, ep, sector, base, et, lifetime_s, expires_ms, links "
        "FROM rd_registrations ORDER BY length(location), location");
    if (!rw) return;
    // first_seen is deliberately absent from DO UPDATE: the stored one is kept.
    upsert_device_ = db_.prepare(
        "INSERT INTO devices (name, friendly_name, uri, source, online, first_seen, last_seen) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) "
        "ON CONFLICT (name) DO UPDATE SET friendly_name = excluded.friendly_name, "
        "uri = excluded.uri, source = excluded.source, online = excluded.online, "
        "last_seen = excluded.last_seen");
    delete_resources_ = db_.prepare("DELETE FROM resources WHERE device = ?1");
    // A path listed twice: the first one wins, as in Device::findResource().
    insert_resource_ = db_.prepare(
        "INSERT INTO resources (device, path, ord, rt, ifs, ct, obs, sz, title) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (device, path) DO NOTHING");
    delete_device_ = db_.prepare("DELETE FROM devices WHERE name = ?1");
    device_exists_ = db_.prepare("SELECT 1 FROM devices WHERE name = ?1");
    rename_device_ = db_.prepare("UPDATE devices SET name = ?2 WHERE name = ?1");
    touch_device_ = db_.prepare("UPDATE devices SET last_seen = ?2, online = ?3 WHERE name = ?1");
    upsert_rd_ = db_.prepare(
        "INSERT INTO rd_registrations "
        "(location, ep, sector, base, et, lifetime_s, expires_ms, links) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) "
        "ON CONFLICT (location) DO UPDATE SET ep = excluded.ep, sector = excluded.sector, "
        "base = excluded.base, et = excluded.et, lifetime_s = excluded.lifetime_s, "
        "expires_ms = excluded.expires_ms, links = excluded.links");
    delete_rd_ = db_.prepare("DELETE FROM rd_registrations WHERE location = ?1");
    // From now on the loop thread waits at most this long for a lock.
    db_.setBusyTimeout(kWriteBusyTimeout);
  }

  std::int64_t userVersion() {
    Run run(db_, user_version_, "reading PRAGMA user_version");
    if (!run.step()) failPlain("PRAGMA user_version: no result");
    return run.integer(0);
  }

  void migrate() {
    for (const Migration& m : kMigrations) {
      if (userVersion() >= m.version) continue;
      Transaction tx(db_);
      // Re-read under the write lock: another process may have migrated meanwhile.
      const std::int64_t version = userVersion();
      if (version > kCurrentVersion) {
        failPlain("database schema version " + std::to_string(version) +
                  " is newer than this coap2mqtt supports (" + std::to_string(kCurrentVersion) +
                  ")");
      }
      if (version >= m.version) continue;
      if (version != m.version - 1) {
        failPlain("cannot migrate from schema version " + std::to_string(version) + " to " +
                  std::to_string(m.version));
      }
      db_.exec(m.sql, "migrating to schema version " + std::to_string(m.version));
      db_.exec("PRAGMA user_version = " + std::to_string(m.version),
               "recording schema version " + std::to_string(m.version));
      tx.commit();
    }
  }

  bool exists(std::string_view name) {
    Run run(db_, device_exists_, "looking up a device");
    run.bind(1, name);
    return run.step();
  }

  void dropTouch(std::string_view name) {
    if (auto it = touches_.find(name); it != touches_.end()) touches_.erase(it);
  }

  // ---- applying a write (inside a transaction the caller opened) ----------------------

  // Returns false only for a rename that did not happen (`from` unknown, `to` taken).
  bool apply(const Op& op) {
    return std::visit([this](const auto& o) { return applyOne(o); }, op);
  }

  bool applyOne(const SaveDeviceOp& op) {
    const Device& device = op.device;
    if (op.replace) applyOne(RemoveDeviceOp{device.name});
    {
      Run run(db_, upsert_device_, "saving a device");
      run.bind(1, device.name)
          .bind(2, device.friendly_name)
          .bind(3, device.uri)
          .bind(4, std::string_view(toString(device.source)))
          .bind(5, device.online)
          .bind(6, op.first_seen_ms)
          .bind(7, toMs(device.last_seen));
      run.done();
    }
    {
      Run run(db_, delete_resources_, "replacing a device's resources");
      run.bind(1, device.name);
      run.done();
    }
    std::int64_t ord = 0;
    for (const Resource& r : device.resources) {
      Run run(db_, insert_resource_, "saving a resource");
      run.bind(1, device.name)
          .bind(2, r.path)
          .bind(3, ord++)
          .bind(4, joinWords(r.rt))
          .bind(5, joinWords(r.ifs))
          .bind(6, joinNumbers(r.ct))
          .bind(7, r.obs);
      // Beyond INT64_MAX it cannot be stored; such a size means nothing anyway: unknown.
      if (r.sz && *r.sz <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        run.bind(8, static_cast<std::int64_t>(*r.sz));
      } else {
        run.bindNull(8);
      }
      if (r.title) {
        run.bind(9, *r.title);
      } else {
        run.bindNull(9);
      }
      run.done();
    }
    return true;
  }

  bool applyOne(const RemoveDeviceOp& op) {
    // The cascade to resources is part of the statement.
    Run run(db_, delete_device_, "removing a device");
    run.bind(1, op.name);
    run.done();
    return true;
  }

  bool applyOne(const RenameDeviceOp& op) {
    if (op.from == op.to) return exists(op.from);
    if (!exists(op.from) || exists(op.to)) return false;
    Run run(db_, rename_device_, "renaming a device");
    run.bind(1, op.from).bind(2, op.to);
    run.done();
    if (db_.changes() != 1) failPlain("rename changed no row");
    return true;
  }

  bool applyOne(const TouchOp& op) {
    // Touches of devices not (or no longer) stored update nothing; that is fine.
    Run run(db_, touch_device_, "writing last_seen");
    run.bind(1, op.name).bind(2, op.last_seen_ms).bind(3, op.online);
    run.done();
    return true;
  }

  bool applyOne(const SaveRdOp& op) {
    const RdRegistration& r = op.registration;
    Run run(db_, upsert_rd_, "saving an RD registration");
    run.bind(1, r.location)
        .bind(2, r.ep)
        .bind(3, r.sector)
        .bind(4, r.base)
        .bind(5, r.et)
        .bind(6, std::int64_t{r.lifetime.count()})
        .bind(7, op.expires_ms)
        .bind(8, op.links);
    run.done();
    return true;
  }

  bool applyOne(const RemoveRdOp& op) {
    Run run(db_, delete_rd_, "removing an RD registration");
    run.bind(1, op.location);
    run.done();
    return true;
  }

  // ---- pending writes -------------------------------------------------------------------

  // Appends `op` to the pending writes, replacing the pending save/remove of the same key.
  void enqueue(Op op) {
    if (auto* save = std::get_if<SaveDeviceOp>(&op)) {
      if (auto it = latest_device_.find(save->device.name); it != latest_device_.end()) {
        const Op& old = *it->second;
        if (std::holds_alternative<RemoveDeviceOp>(old)) save->replace = true;
        if (const auto* old_save = std::get_if<SaveDeviceOp>(&old)) {
          // The earlier save set first_seen if it created the row; this one, an upsert
          // after it, would have kept that.
          save->replace = old_save->replace;
          save->first_seen_ms = old_save->first_seen_ms;
        }
      }
      const std::string name = save->device.name;
      replaceLatest(latest_device_, name, std::move(op));
    } else if (const auto* remove = std::get_if<RemoveDeviceOp>(&op)) {
      const std::string name = remove->name;
      replaceLatest(latest_device_, name, std::move(op));
    } else if (const auto* rename = std::get_if<RenameDeviceOp>(&op)) {
      // A barrier for both names: later writes of either are ordered after it.
      if (auto it = latest_device_.find(rename->from); it != latest_device_.end()) {
        latest_device_.erase(it);
      }
      if (auto it = latest_device_.find(rename->to); it != latest_device_.end()) {
        latest_device_.erase(it);
      }
      ops_.push_back(std::move(op));
    } else if (const auto* save_rd = std::get_if<SaveRdOp>(&op)) {
      const std::string location = save_rd->registration.location;
      replaceLatest(latest_rd_, location, std::move(op));
    } else if (const auto* remove_rd = std::get_if<RemoveRdOp>(&op)) {
      const std::string location = remove_rd->location;
      replaceLatest(latest_rd_, location, std::move(op));
    } else {
      ops_.push_back(std::move(op));  // TouchOp: ordered, never replaced
    }
  }

  void replaceLatest(Latest& latest, const std::string& key, Op op) {
    auto it = latest.find(key);
    if (it != latest.end()) ops_.erase(it->second);
    ops_.push_back(std::move(op));
    if (it != latest.end()) {
      it->second = std::prev(ops_.end());
    } else {
      latest.emplace(key, std::prev(ops_.end()));
    }
  }

  enum class Attempt { Written, Rejected, Failed };

  // Tries `op` in its own transaction. Only when nothing is pending (else it would
  // overtake earlier writes). `applied` receives apply()'s answer.
  Attempt attempt(const Op& op, bool* applied = nullptr) {
    try {
      Transaction tx(db_);
      const bool result = apply(op);
      tx.commit();
      if (applied != nullptr) *applied = result;
      return Attempt::Written;
    } catch (const sqlite::Error& e) {
      last_error_ = e.what();
      if (!e.refusesTheChange()) return Attempt::Failed;
      ++stats_.rejected;
      return Attempt::Rejected;
    }
  }

  void defer(Op op) {
    ++stats_.deferred;
    enqueue(std::move(op));
  }

  // Every write but rename: at once when nothing is pending, else (or when the file
  // cannot take it) pending. While writes are pending, last_error_ keeps the failure that
  // made them so.
  WriteResult write(Op op) {
    if (ops_.empty()) {
      switch (attempt(op)) {
        case Attempt::Written:
          return WriteResult::Written;
        case Attempt::Rejected:
          return WriteResult::Rejected;
        case Attempt::Failed:
          break;
      }
    }
    defer(std::move(op));
    return WriteResult::Pending;
  }

  // Buffered touches of `name` were made before the write about to be queued: they go
  // into the order ahead of it.
  void touchesIntoOrder(std::string_view name) {
    if (auto it = touches_.find(name); it != touches_.end()) {
      enqueue(TouchOp{it->first, it->second.last_seen_ms, it->second.online});
      touches_.erase(it);
    }
  }

  void flush() {
    if (ops_.empty() && touches_.empty()) return;
    std::uint64_t rejected = 0;
    std::vector<Ops::iterator> dropped;
    try {
      Transaction tx(db_);
      for (auto it = ops_.begin(); it != ops_.end(); ++it) {
        // Each write in a savepoint: one the database refuses is undone alone.
        Savepoint sp(db_);
        try {
          apply(*it);
          sp.release();
        } catch (const sqlite::Error& e) {
          if (!e.refusesTheChange()) throw;
          last_error_ = e.what();
          ++rejected;
          dropped.push_back(it);
        }
      }
      for (const auto& [name, t] : touches_) {
        applyOne(TouchOp{name, t.last_seen_ms, t.online});
      }
      tx.commit();
    } catch (const sqlite::Error& e) {
      last_error_ = e.what();
      ++stats_.failed_flushes;
      throw;  // everything stays pending for the next flush
    }
    stats_.rejected += rejected;
    // Only once committed: a failed flush keeps them all for the next one.
    ops_.clear();
    latest_device_.clear();
    latest_rd_.clear();
    touches_.clear();
  }
};

Store::Store(const std::string& path, Mode mode) : impl_(std::make_unique<Impl>(path, mode)) {
  impl_->open();
}

Store::~Store() {
  // Best effort: the gateway flushes at shutdown itself; this only saves writes of a
  // caller that forgot. A destructor cannot report failure, so errors are dropped.
  if (impl_ && impl_->mode_ == Mode::ReadWrite &&
      (!impl_->touches_.empty() || !impl_->ops_.empty())) {
    try {
      flush();
    } catch (...) {  // NOLINT(bugprone-empty-catch): nowhere to report from a destructor
    }
  }
}

int Store::currentSchemaVersion() {
  return kCurrentVersion;
}

int Store::schemaVersion() const {
  return static_cast<int>(impl_->userVersion());
}

std::vector<Device> Store::loadAll() const {
  impl_->checkThread("loadAll");
  Impl& impl = *impl_;
  std::vector<Device> devices;
  // One read transaction: both SELECTs see the same snapshot even while the daemon writes.
  Transaction tx(impl.db_, Transaction::Kind::Deferred);
  std::unordered_map<std::string, std::size_t> index;
  {
    Run run(impl.db_, impl.select_devices_, "loading devices");
    while (run.step()) {
      Device d;
      d.name = run.text(0);
      d.friendly_name = run.text(1);
      d.uri = run.text(2);
      const std::string source = run.text(3);
      const std::optional<Source> parsed = sourceFromString(source);
      if (!parsed) {
        impl.failPlain("device '" + d.name + "' has an unknown source '" + source + "'");
      }
      d.source = *parsed;
      d.online = run.integer(4) != 0;
      d.first_seen = fromMs(run.integer(5));
      d.last_seen = fromMs(run.integer(6));
      index.emplace(d.name, devices.size());
      devices.push_back(std::move(d));
    }
  }
  {
    Run run(impl.db_, impl.select_resources_, "loading resources");
    while (run.step()) {
      const std::string device = run.text(0);
      const auto it = index.find(device);
      if (it == index.end()) {
        impl.failPlain("resource of unknown device '" + device + "' (foreign key violated)");
      }
      Resource r;
      r.path = run.text(1);
      r.rt = splitWords(run.text(2));
      r.ifs = splitWords(run.text(3));
      const std::string ct = run.text(4);
      forEachWord(ct, [&](std::string_view w) {
        unsigned value = 0;
        const auto [end, ec] = std::from_chars(w.data(), w.data() + w.size(), value);
        if (ec != std::errc() || end != w.data() + w.size()) {
          std::string what = "device '" + device;
          what.append("' resource '").append(r.path).append("': bad ct list '").append(ct) += '\'';
          impl.failPlain(what);
        }
        r.ct.push_back(value);
      });
      r.obs = run.integer(5) != 0;
      if (!run.isNull(6)) r.sz = static_cast<std::size_t>(run.integer(6));
      if (!run.isNull(7)) r.title = run.text(7);
      devices[it->second].resources.push_back(std::move(r));
    }
  }
  tx.commit();
  return devices;
}

WriteResult Store::save(const Device& device) {
  impl_->checkThread("save");
  Impl& impl = *impl_;
  impl.requireWritable("save");
  for (const Resource& r : device.resources) {
    checkListItems(device, r, "rt", r.rt);
    checkListItems(device, r, "if", r.ifs);
  }
  const std::int64_t first_seen =
      device.first_seen == Clock::time_point{} ? toMs(Clock::now()) : toMs(device.first_seen);
  // The device row now holds the caller's latest view (or will, once the pending writes
  // are flushed). A touch buffered before this call is older than it and would otherwise
  // overwrite last_seen/online at the next flush; dropping it gives the same result as if
  // every touch had been written immediately.
  impl.dropTouch(device.name);
  return impl.write(SaveDeviceOp{device, first_seen, false});
}

WriteResult Store::remove(std::string_view name) {
  impl_->checkThread("remove");
  Impl& impl = *impl_;
  impl.requireWritable("remove");
  impl.dropTouch(name);
  return impl.write(RemoveDeviceOp{std::string(name)});
}

RenameResult Store::rename(std::string_view from, std::string_view to) {
  impl_->checkThread("rename");
  Impl& impl = *impl_;
  impl.requireWritable("rename");
  RenameDeviceOp op{std::string(from), std::string(to)};
  if (impl.ops_.empty()) {
    bool renamed = false;
    switch (impl.attempt(op, &renamed)) {
      case Impl::Attempt::Written:
        if (!renamed) return RenameResult::NotRenamed;
        if (from != to) {
          // Touches follow the device. Any touch buffered for `to` was for a name that did
          // not exist then (a no-op had it been written at once) and must not land on the
          // renamed device.
          std::optional<Impl::PendingTouch> moved;
          if (auto it = impl.touches_.find(from); it != impl.touches_.end()) {
            moved = it->second;
            impl.touches_.erase(it);
          }
          impl.dropTouch(to);
          if (moved) impl.touches_.emplace(std::string(to), *moved);
        }
        return RenameResult::Renamed;
      case Impl::Attempt::Rejected:
        return RenameResult::Rejected;
      case Impl::Attempt::Failed:
        break;
    }
  }
  // Pending. Whether it will happen is known only when flush() writes it; the buffered
  // touches of both names go ahead of it so that they land where they were meant to
  // either way.
  impl.touchesIntoOrder(from);
  impl.touchesIntoOrder(to);
  impl.defer(std::move(op));
  return RenameResult::Pending;
}

void Store::touch(std::string_view name, std::chrono::system_clock::time_point last_seen,
                  bool online) {
  impl_->checkThread("touch");
  Impl& impl = *impl_;
  impl.requireWritable("touch");
  const Impl::PendingTouch t{toMs(last_seen), online};
  if (auto it = impl.touches_.find(name); it != impl.touches_.end()) {
    it->second = t;
  } else {
    impl.touches_.emplace(std::string(name), t);
  }
}

void Store::flush() {
  impl_->checkThread("flush");
  impl_->requireWritable("flush");
  impl_->flush();
}

std::size_t Store::pendingTouches() const {
  return impl_->touches_.size();
}

std::size_t Store::pendingWrites() const {
  return impl_->ops_.size();
}

const std::string& Store::lastError() const {
  return impl_->last_error_;
}

const StoreStats& Store::stats() const {
  return impl_->stats_;
}

WriteResult Store::saveRdRegistration(const RdRegistration& r,
                                      std::chrono::system_clock::time_point expires_at) {
  impl_->checkThread("saveRdRegistration");
  Impl& impl = *impl_;
  impl.requireWritable("saveRdRegistration");
  const std::int64_t lifetime = r.lifetime.count();
  if (lifetime < 1 || lifetime > kMaxRdLifetimeS) {
    throw std::invalid_argument("registry store: RD registration '" + r.location + "': lifetime " +
                                std::to_string(lifetime) + " s is outside 1..4294967295");
  }
  std::string links = serializeLinkFormat(r.links);
  // Refuse now what loadRdRegistrations() would have to skip after the next restart.
  if (const LinkFormatResult check = parseLinkFormat(links, kMaxStoredLinksBytes); !check.ok()) {
    throw std::invalid_argument("registry store: RD registration '" + r.location +
                                "': its links do not serialise to valid link-format (byte " +
                                std::to_string(check.error->offset) + "): " + check.error->message);
  }
  return impl.write(SaveRdOp{r, toMs(expires_at), std::move(links)});
}

WriteResult Store::removeRdRegistration(std::string_view location) {
  impl_->checkThread("removeRdRegistration");
  Impl& impl = *impl_;
  impl.requireWritable("removeRdRegistration");
  return impl.write(RemoveRdOp{std::string(location)});
}

std::vector<StoredRdRegistration> Store::loadRdRegistrations(
    std::vector<SkippedRdRegistration>* skipped) const {
  impl_->checkThread("loadRdRegistrations");
  Impl& impl = *impl_;
  std::vector<StoredRdRegistration> out;
  Run run(impl.db_, impl.select_rd_, "loading RD registrations");
  while (run.step()) {
    StoredRdRegistration stored;
    RdRegistration& r = stored.registration;
    r.location = run.text(0);
    const auto skip = [&](std::string reason) {
      if (skipped) skipped->push_back(SkippedRdRegistration{r.location, std::move(reason)});
    };
    const std::int64_t lifetime = run.integer(5);
    if (lifetime < 1 || lifetime > kMaxRdLifetimeS) {
      skip("lifetime " + std::to_string(lifetime) + " s is outside 1..4294967295");
      continue;
    }
    LinkFormatResult links = parseLinkFormat(run.text(7), kMaxStoredLinksBytes);
    if (!links.ok()) {
      skip("bad link-format at byte " + std::to_string(links.error->offset) + ": " +
           links.error->message);
      continue;
    }
    r.ep = run.text(1);
    r.sector = run.text(2);
    r.base = run.text(3);
    r.et = run.text(4);
    r.lifetime = std::chrono::seconds(lifetime);
    r.links = std::move(links.links);
    stored.expires_at = fromMsSaturating(run.integer(6));
    out.push_back(std::move(stored));
  }
  return out;
}

}  // namespace coap2mqtt::registry
