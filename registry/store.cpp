#include "registry/store.h"

#include <sqlite3.h>

#include <charconv>
#include <cstdint>
#include <iterator>
#include <limits>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <unordered_map>
#include <utility>

// Layout of the file (schema version 2):
//
//   devices(name PK, friendly_name, uri, source 'static'|'multicast'|'rd', online 0|1,
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

namespace coap2mqtt::registry {
namespace {

using Clock = std::chrono::system_clock;

constexpr int kBusyTimeoutMs = 5000;
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

struct DbCloser {
  void operator()(sqlite3* db) const noexcept {
    // close_v2 only fails for a bad handle; with statements still open it defers the
    // close until they are finalized instead of failing.
    (void)sqlite3_close_v2(db);
  }
};
using DbPtr = std::unique_ptr<sqlite3, DbCloser>;

struct StmtFinalizer {
  void operator()(sqlite3_stmt* stmt) const noexcept {
    // finalize repeats the error of the statement's last step, already reported there.
    (void)sqlite3_finalize(stmt);
  }
};
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

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
  for (Source source : {Source::Static, Source::Multicast, Source::ResourceDirectory}) {
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

}  // namespace

struct Store::Impl {
  struct PendingTouch {
    std::int64_t last_seen_ms;
    bool online;
  };

  std::string path_;
  Mode mode_;
  DbPtr db_;  // declared before the statements: they are finalized first
  StmtPtr begin_read_;
  StmtPtr begin_write_;
  StmtPtr commit_;
  StmtPtr rollback_;
  StmtPtr user_version_;
  StmtPtr select_devices_;
  StmtPtr select_resources_;
  // Read-write mode only.
  StmtPtr upsert_device_;
  StmtPtr delete_resources_;
  StmtPtr insert_resource_;
  StmtPtr delete_device_;
  StmtPtr device_exists_;
  StmtPtr rename_device_;
  StmtPtr touch_device_;
  StmtPtr upsert_rd_;
  StmtPtr delete_rd_;
  StmtPtr select_rd_;  // both modes
  std::map<std::string, PendingTouch, std::less<>> pending_;

  Impl(std::string path, Mode mode) : path_(std::move(path)), mode_(mode) {}

  [[noreturn]] void fail(std::string_view what, int rc) const {
    std::string msg = "registry store " + path_ + ": " + std::string(what) + ": ";
    msg += db_ ? sqlite3_errmsg(db_.get()) : sqlite3_errstr(rc);
    msg += " (sqlite error " + std::to_string(rc) + ")";
    throw std::runtime_error(msg);
  }

  [[noreturn]] void failPlain(const std::string& what) const {
    throw std::runtime_error("registry store " + path_ + ": " + what);
  }

  void check(int rc, std::string_view what) const {
    if (rc != SQLITE_OK) fail(what, rc);
  }

  void requireWritable(const char* op) const {
    if (mode_ == Mode::ReadOnly) {
      throw std::logic_error("registry store " + path_ + ": " + op + "() on a read-only store");
    }
  }

  StmtPtr prepare(std::string_view sql) {
    sqlite3_stmt* raw = nullptr;
    const int rc = sqlite3_prepare_v3(db_.get(), sql.data(), static_cast<int>(sql.size()),
                                      SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
    StmtPtr stmt(raw);
    if (rc != SQLITE_OK) fail("preparing \"" + std::string(sql) + "\"", rc);
    if (!stmt) failPlain("preparing \"" + std::string(sql) + "\": empty statement");
    return stmt;
  }

  // One execution of a prepared statement: bind, step, and reset on scope exit so the
  // statement is ready for the next use (and releases its read snapshot).
  class Run {
   public:
    Run(const Impl& impl, const StmtPtr& stmt, std::string_view what)
        : impl_(impl), stmt_(stmt.get()), what_(what) {}
    ~Run() {
      // reset returns the error of the last step, which step() already reported;
      // clear_bindings always returns SQLITE_OK.
      (void)sqlite3_reset(stmt_);
      (void)sqlite3_clear_bindings(stmt_);
    }
    Run(const Run&) = delete;
    Run& operator=(const Run&) = delete;

    Run& bind(int index, std::string_view text) {
      // A null pointer would bind SQL NULL, not an empty string.
      const char* data = text.data() != nullptr ? text.data() : "";
      impl_.check(
          sqlite3_bind_text64(stmt_, index, data, text.size(), SQLITE_TRANSIENT, SQLITE_UTF8),
          what_);
      return *this;
    }
    Run& bind(int index, std::int64_t value) {
      impl_.check(sqlite3_bind_int64(stmt_, index, value), what_);
      return *this;
    }
    Run& bind(int index, bool value) { return bind(index, std::int64_t{value ? 1 : 0}); }
    Run& bindNull(int index) {
      impl_.check(sqlite3_bind_null(stmt_, index), what_);
      return *this;
    }

    // true: a row is available; false: done.
    bool step() {
      const int rc = sqlite3_step(stmt_);
      if (rc == SQLITE_ROW) return true;
      if (rc == SQLITE_DONE) return false;
      impl_.fail(what_, rc);
    }
    void done() {
      if (step()) impl_.failPlain(std::string(what_) + ": unexpected result row");
    }

    std::int64_t integer(int col) const { return sqlite3_column_int64(stmt_, col); }
    bool isNull(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
    std::string text(int col) const {
      const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
      if (p == nullptr) {
        if (sqlite3_errcode(sqlite3_db_handle(stmt_)) == SQLITE_NOMEM) {
          impl_.fail(what_, SQLITE_NOMEM);
        }
        return {};
      }
      return std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, col)));
    }

   private:
    const Impl& impl_;
    sqlite3_stmt* stmt_;
    std::string_view what_;
  };

  // BEGIN ... COMMIT, rolled back on scope exit unless committed.
  class Transaction {
   public:
    Transaction(Impl& impl, const StmtPtr& begin) : impl_(impl) {
      Run(impl_, begin, "beginning a transaction").done();
    }
    ~Transaction() {
      // SQLite rolls back by itself after some errors (SQLITE_FULL, IOERR, ...); only
      // roll back what is still open. A failing ROLLBACK leaves the transaction open and
      // the next BEGIN reports it, so there is nothing more to do here.
      if (!committed_ && sqlite3_get_autocommit(impl_.db_.get()) == 0) {
        (void)sqlite3_step(impl_.rollback_.get());
        (void)sqlite3_reset(impl_.rollback_.get());
      }
    }
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;

    void commit() {
      Run(impl_, impl_.commit_, "committing").done();
      committed_ = true;
    }

   private:
    Impl& impl_;
    bool committed_ = false;
  };

  // For one-off statements (pragmas at open, migrations): not worth keeping prepared.
  void exec(const std::string& sql, std::string_view what) {
    check(sqlite3_exec(db_.get(), sql.c_str(), nullptr, nullptr, nullptr), what);
  }

  std::int64_t queryInt(std::string_view sql) {
    StmtPtr stmt = prepare(sql);
    Run run(*this, stmt, sql);
    if (!run.step()) failPlain(std::string(sql) + ": no result");
    return run.integer(0);
  }

  std::string queryText(std::string_view sql) {
    StmtPtr stmt = prepare(sql);
    Run run(*this, stmt, sql);
    if (!run.step()) failPlain(std::string(sql) + ": no result");
    return run.text(0);
  }

  void open() {
    const bool rw = mode_ == Mode::ReadWrite;
    const int flags = (rw ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READONLY) |
                      SQLITE_OPEN_NOMUTEX;  // one thread (the loop) per connection
    sqlite3* raw = nullptr;
    const int rc = sqlite3_open_v2(path_.c_str(), &raw, flags, nullptr);
    db_.reset(raw);  // a handle comes back even on most failures and must be closed
    if (rc != SQLITE_OK) fail("cannot open", rc);
    check(sqlite3_extended_result_codes(db_.get(), 1), "enabling extended result codes");
    check(sqlite3_busy_timeout(db_.get(), kBusyTimeoutMs), "setting busy_timeout");

    exec("PRAGMA foreign_keys = ON", "enabling foreign keys");
    if (queryInt("PRAGMA foreign_keys") != 1) {
      failPlain("this SQLite has no foreign key support (needed for ON DELETE CASCADE)");
    }

    // The first statement that reads the file: a non-database fails here (SQLITE_NOTADB).
    const std::int64_t version = queryInt("PRAGMA user_version");
    const std::int64_t app_id = queryInt("PRAGMA application_id");
    if (version > kCurrentVersion) {
      failPlain("database schema version " + std::to_string(version) +
                " is newer than this coap2mqtt supports (" + std::to_string(kCurrentVersion) +
                "); refusing to open it, upgrade coap2mqtt or use another database file");
    }
    if (app_id != 0 && app_id != kApplicationId) {
      failPlain("not a coap2mqtt database (PRAGMA application_id is " + std::to_string(app_id) +
                ")");
    }
    if (version == 0 && queryInt("SELECT count(*) FROM sqlite_schema") != 0) {
      failPlain(
          "an SQLite database of some other program (it has tables but no coap2mqtt "
          "schema version); refusing to add tables to it");
    }

    if (rw) {
      const std::string journal = queryText("PRAGMA journal_mode = WAL");
      if (journal != "wal") {
        failPlain("could not switch to WAL journal mode (got '" + journal + "')");
      }
      exec("PRAGMA synchronous = NORMAL", "setting synchronous=NORMAL");
    } else if (version < kCurrentVersion) {
      failPlain(version == 0 ? std::string("has no coap2mqtt schema yet (the daemon creates it)")
                             : "database schema version " + std::to_string(version) +
                                   " is older than " + std::to_string(kCurrentVersion) +
                                   "; open it read-write once (start the daemon) to migrate");
    }

    begin_read_ = prepare("BEGIN DEFERRED");
    begin_write_ = prepare("BEGIN IMMEDIATE");
    commit_ = prepare("COMMIT");
    rollback_ = prepare("ROLLBACK");
    user_version_ = prepare("PRAGMA user_version");

    if (rw) migrate();

    select_devices_ = prepare(
        "SELECT name, friendly_name, uri, source, online, first_seen, last_seen "
        "FROM devices ORDER BY name");
    select_resources_ = prepare(
        "SELECT device, path, rt, ifs, ct, obs, sz, title FROM resources ORDER BY device, ord");
    select_rd_ = prepare(
        "SELECT location, ep, sector, base, et, lifetime_s, expires_ms, links "
        "FROM rd_registrations ORDER BY length(location), location");
    if (!rw) return;
    // first_seen is deliberately absent from DO UPDATE: the stored one is kept.
    upsert_device_ = prepare(
        "INSERT INTO devices (name, friendly_name, uri, source, online, first_seen, last_seen) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) "
        "ON CONFLICT (name) DO UPDATE SET friendly_name = excluded.friendly_name, "
        "uri = excluded.uri, source = excluded.source, online = excluded.online, "
        "last_seen = excluded.last_seen");
    delete_resources_ = prepare("DELETE FROM resources WHERE device = ?1");
    // A path listed twice: the first one wins, as in Device::findResource().
    insert_resource_ = prepare(
        "INSERT INTO resources (device, path, ord, rt, ifs, ct, obs, sz, title) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (device, path) DO NOTHING");
    delete_device_ = prepare("DELETE FROM devices WHERE name = ?1");
    device_exists_ = prepare("SELECT 1 FROM devices WHERE name = ?1");
    rename_device_ = prepare("UPDATE devices SET name = ?2 WHERE name = ?1");
    touch_device_ = prepare("UPDATE devices SET last_seen = ?2, online = ?3 WHERE name = ?1");
    upsert_rd_ = prepare(
        "INSERT INTO rd_registrations "
        "(location, ep, sector, base, et, lifetime_s, expires_ms, links) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) "
        "ON CONFLICT (location) DO UPDATE SET ep = excluded.ep, sector = excluded.sector, "
        "base = excluded.base, et = excluded.et, lifetime_s = excluded.lifetime_s, "
        "expires_ms = excluded.expires_ms, links = excluded.links");
    delete_rd_ = prepare("DELETE FROM rd_registrations WHERE location = ?1");
  }

  std::int64_t userVersion() {
    Run run(*this, user_version_, "reading PRAGMA user_version");
    if (!run.step()) failPlain("PRAGMA user_version: no result");
    return run.integer(0);
  }

  void migrate() {
    for (const Migration& m : kMigrations) {
      if (userVersion() >= m.version) continue;
      Transaction tx(*this, begin_write_);
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
      exec(m.sql, "migrating to schema version " + std::to_string(m.version));
      exec("PRAGMA user_version = " + std::to_string(m.version),
           "recording schema version " + std::to_string(m.version));
      tx.commit();
    }
  }

  bool exists(std::string_view name) {
    Run run(*this, device_exists_, "looking up a device");
    run.bind(1, name);
    return run.step();
  }

  void dropPending(std::string_view name) {
    if (auto it = pending_.find(name); it != pending_.end()) pending_.erase(it);
  }
};

Store::Store(const std::string& path, Mode mode) : impl_(std::make_unique<Impl>(path, mode)) {
  impl_->open();
}

Store::~Store() {
  // Best effort: the gateway flushes at shutdown itself; this only saves touches of a
  // caller that forgot. A destructor cannot report failure, so errors are dropped.
  if (impl_ && impl_->mode_ == Mode::ReadWrite && !impl_->pending_.empty()) {
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
  Impl& impl = *impl_;
  std::vector<Device> devices;
  // One read transaction: both SELECTs see the same snapshot even while the daemon writes.
  Impl::Transaction tx(impl, impl.begin_read_);
  std::unordered_map<std::string, std::size_t> index;
  {
    Impl::Run run(impl, impl.select_devices_, "loading devices");
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
    Impl::Run run(impl, impl.select_resources_, "loading resources");
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

void Store::save(const Device& device) {
  Impl& impl = *impl_;
  impl.requireWritable("save");
  for (const Resource& r : device.resources) {
    checkListItems(device, r, "rt", r.rt);
    checkListItems(device, r, "if", r.ifs);
    if (r.sz && *r.sz > static_cast<std::size_t>(std::numeric_limits<std::int64_t>::max())) {
      throw std::invalid_argument("registry store: device '" + device.name + "' resource '" +
                                  r.path + "': sz too large");
    }
  }
  const std::int64_t first_seen =
      device.first_seen == Clock::time_point{} ? toMs(Clock::now()) : toMs(device.first_seen);

  Impl::Transaction tx(impl, impl.begin_write_);
  {
    Impl::Run run(impl, impl.upsert_device_, "saving a device");
    run.bind(1, device.name)
        .bind(2, device.friendly_name)
        .bind(3, device.uri)
        .bind(4, std::string_view(toString(device.source)))
        .bind(5, device.online)
        .bind(6, first_seen)
        .bind(7, toMs(device.last_seen));
    run.done();
  }
  {
    Impl::Run run(impl, impl.delete_resources_, "replacing a device's resources");
    run.bind(1, device.name);
    run.done();
  }
  std::int64_t ord = 0;
  for (const Resource& r : device.resources) {
    Impl::Run run(impl, impl.insert_resource_, "saving a resource");
    run.bind(1, device.name)
        .bind(2, r.path)
        .bind(3, ord++)
        .bind(4, joinWords(r.rt))
        .bind(5, joinWords(r.ifs))
        .bind(6, joinNumbers(r.ct))
        .bind(7, r.obs);
    if (r.sz) {
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
  tx.commit();
  // The device row now holds the caller's latest view. A touch buffered before this call
  // is older than it and would otherwise overwrite last_seen/online at the next flush;
  // dropping it gives the same result as if every touch had been written immediately.
  impl.dropPending(device.name);
}

void Store::remove(std::string_view name) {
  Impl& impl = *impl_;
  impl.requireWritable("remove");
  {
    // One statement is its own transaction; the cascade to resources is part of it.
    Impl::Run run(impl, impl.delete_device_, "removing a device");
    run.bind(1, name);
    run.done();
  }
  impl.dropPending(name);
}

bool Store::rename(std::string_view from, std::string_view to) {
  Impl& impl = *impl_;
  impl.requireWritable("rename");
  if (from == to) return impl.exists(from);
  {
    Impl::Transaction tx(impl, impl.begin_write_);
    if (!impl.exists(from) || impl.exists(to)) return false;
    Impl::Run run(impl, impl.rename_device_, "renaming a device");
    run.bind(1, from).bind(2, to);
    run.done();
    if (sqlite3_changes(impl.db_.get()) != 1) impl.failPlain("rename changed no row");
    tx.commit();
  }
  // Touches follow the device. Any touch buffered for `to` was for a name that did not
  // exist then (a no-op had it been written at once) and must not land on the renamed
  // device.
  std::optional<Impl::PendingTouch> moved;
  if (auto it = impl.pending_.find(from); it != impl.pending_.end()) {
    moved = it->second;
    impl.pending_.erase(it);
  }
  impl.dropPending(to);
  if (moved) impl.pending_.emplace(std::string(to), *moved);
  return true;
}

void Store::touch(std::string_view name, std::chrono::system_clock::time_point last_seen,
                  bool online) {
  Impl& impl = *impl_;
  impl.requireWritable("touch");
  const Impl::PendingTouch t{toMs(last_seen), online};
  if (auto it = impl.pending_.find(name); it != impl.pending_.end()) {
    it->second = t;
  } else {
    impl.pending_.emplace(std::string(name), t);
  }
}

void Store::flush() {
  Impl& impl = *impl_;
  impl.requireWritable("flush");
  if (impl.pending_.empty()) return;
  Impl::Transaction tx(impl, impl.begin_write_);
  for (const auto& [name, t] : impl.pending_) {
    // Touches of devices not (or no longer) stored update nothing; that is fine.
    Impl::Run run(impl, impl.touch_device_, "writing last_seen");
    run.bind(1, std::string_view(name)).bind(2, t.last_seen_ms).bind(3, t.online);
    run.done();
  }
  tx.commit();
  impl.pending_.clear();  // only once committed: a failed flush keeps them for the next one
}

std::size_t Store::pendingTouches() const {
  return impl_->pending_.size();
}

void Store::saveRdRegistration(const RdRegistration& r,
                               std::chrono::system_clock::time_point expires_at) {
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
  // One statement: its own transaction.
  Impl::Run run(impl, impl.upsert_rd_, "saving an RD registration");
  run.bind(1, r.location)
      .bind(2, r.ep)
      .bind(3, r.sector)
      .bind(4, r.base)
      .bind(5, r.et)
      .bind(6, lifetime)
      .bind(7, toMs(expires_at))
      .bind(8, links);
  run.done();
}

void Store::removeRdRegistration(std::string_view location) {
  Impl& impl = *impl_;
  impl.requireWritable("removeRdRegistration");
  Impl::Run run(impl, impl.delete_rd_, "removing an RD registration");
  run.bind(1, location);
  run.done();
}

std::vector<StoredRdRegistration> Store::loadRdRegistrations(
    std::vector<SkippedRdRegistration>* skipped) const {
  Impl& impl = *impl_;
  std::vector<StoredRdRegistration> out;
  Impl::Run run(impl, impl.select_rd_, "loading RD registrations");
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
