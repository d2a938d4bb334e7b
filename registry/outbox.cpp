#include "registry/outbox.h"

#include <sqlite3.h>

#include <algorithm>
#include <stdexcept>
#include <utility>

// Layout of the file (schema version 1):
//
//   outbox(seq INTEGER PRIMARY KEY, topic, payload BLOB, qos 1|2, retain 0|1,
//          correlation BLOB NULL, enqueued_at ms since the Unix epoch)
//
// A row is a message not yet acknowledged by the broker. Rows are only ever inserted with
// a seq above every existing one and deleted; the order of seq is the order of sending.
// The file is separate from registry.db so that the registry's writes and ours never wait
// for each other.

namespace coap2mqtt::registry {
namespace {

constexpr int kBusyTimeoutMs = 5000;
// PRAGMA application_id "C2MO": a path pointing at another program's database is refused.
constexpr std::int32_t kApplicationId = 0x43324D4F;
constexpr int kSchemaVersion = 1;
// Rows per INSERT statement when a flush writes many: one multi-row statement costs less
// than half as much CPU per row as one statement per row (measured: 1.45 vs 3.2 us per
// row for 32 rows, SQLite 3.40); gains flatten beyond 32.
constexpr int kInsertRows = 32;
constexpr int kInsertColumns = 7;

std::string insertSql(int rows) {
  std::string sql =
      "INSERT INTO outbox (seq, topic, payload, qos, retain, correlation, enqueued_at) VALUES ";
  for (int i = 0; i < rows; ++i) sql += i == 0 ? "(?,?,?,?,?,?,?)" : ",(?,?,?,?,?,?,?)";
  return sql;
}

struct DbCloser {
  void operator()(sqlite3* db) const noexcept { (void)sqlite3_close_v2(db); }
};
struct StmtFinalizer {
  void operator()(sqlite3_stmt* s) const noexcept { (void)sqlite3_finalize(s); }
};
using DbPtr = std::unique_ptr<sqlite3, DbCloser>;
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

std::int64_t nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::uint32_t messageBytes(const std::string& topic, const std::string& payload,
                           const std::string& correlation) {
  const std::size_t n = topic.size() + payload.size() + correlation.size();
  return static_cast<std::uint32_t>(std::min<std::size_t>(n, UINT32_MAX));
}

// Valid until the statement steps again or is reset.
std::string_view columnView(sqlite3_stmt* s, int col) {
  const void* p = sqlite3_column_blob(s, col);
  const int n = sqlite3_column_bytes(s, col);
  return p == nullptr ? std::string_view()
                      : std::string_view(static_cast<const char*>(p), std::size_t(n));
}

// Binds one message to the columns first+1 .. first+kInsertColumns of an insert statement
// (the strings must outlive the step).
void bindRow(sqlite3_stmt* s, int first, const OutboxMessage& m) {
  sqlite3_bind_int64(s, first + 1, static_cast<sqlite3_int64>(m.seq));
  sqlite3_bind_text(s, first + 2, m.topic.data(), static_cast<int>(m.topic.size()), SQLITE_STATIC);
  sqlite3_bind_blob(s, first + 3, m.payload.data(), static_cast<int>(m.payload.size()),
                    SQLITE_STATIC);
  sqlite3_bind_int(s, first + 4, m.qos);
  sqlite3_bind_int(s, first + 5, m.retain ? 1 : 0);
  if (m.correlation_data.empty()) {
    sqlite3_bind_null(s, first + 6);
  } else {
    sqlite3_bind_blob(s, first + 6, m.correlation_data.data(),
                      static_cast<int>(m.correlation_data.size()), SQLITE_STATIC);
  }
  sqlite3_bind_int64(s, first + 7, m.enqueued_at_ms);
}

}  // namespace

struct Outbox::Db {
  std::string path;
  DbPtr db;
  StmtPtr insert;       // one row
  StmtPtr insert_many;  // kInsertRows rows
  StmtPtr remove_range;
  StmtPtr select_range;
  StmtPtr begin;
  StmtPtr commit;
  StmtPtr rollback;

  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error("outbox " + path + ": " + what + ": " +
                             (db ? sqlite3_errmsg(db.get()) : "out of memory"));
  }
  void exec(const char* sql) const {
    char* err = nullptr;
    if (sqlite3_exec(db.get(), sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err != nullptr ? err : "unknown error";
      sqlite3_free(err);
      throw std::runtime_error("outbox " + path + ": " + msg);
    }
  }
  StmtPtr prepare(const char* sql) const {
    sqlite3_stmt* raw = nullptr;
    if (sqlite3_prepare_v3(db.get(), sql, -1, SQLITE_PREPARE_PERSISTENT, &raw, nullptr) !=
        SQLITE_OK) {
      fail(std::string("cannot prepare \"") + sql + "\"");
    }
    return StmtPtr(raw);
  }
  std::int64_t pragmaInt(const char* sql) const {
    StmtPtr s = prepare(sql);
    if (sqlite3_step(s.get()) != SQLITE_ROW) fail(sql);
    return sqlite3_column_int64(s.get(), 0);
  }
  void step(sqlite3_stmt* s, const char* what) const {
    const int rc = sqlite3_step(s);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (rc != SQLITE_DONE) fail(what);
  }
};

Outbox::Outbox(const std::string& path, OutboxLimits limits)
    : db_(std::make_unique<Db>()), limits_(limits) {
  db_->path = path;
  sqlite3* raw = nullptr;
  const int rc =
      sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  db_->db.reset(raw);
  if (rc != SQLITE_OK) db_->fail("cannot open");
  sqlite3_busy_timeout(raw, kBusyTimeoutMs);
  sqlite3_extended_result_codes(raw, 1);
  try {
    // One process owns the file: its first read takes the lock, held until close. That
    // also spares every transaction the shared-memory locking of WAL (a single-row commit,
    // as before the ACK of a CON notification: 15 -> 9.6 us), and two gateways on one
    // state_dir cannot both send from it.
    db_->exec("PRAGMA locking_mode=EXCLUSIVE");
    std::int64_t app_id = 0;
    try {
      app_id = db_->pragmaInt("PRAGMA application_id");
    } catch (const std::runtime_error&) {
      if ((sqlite3_errcode(raw) & 0xff) != SQLITE_BUSY) throw;
      throw std::runtime_error("outbox " + path +
                               ": in use by another process (another coap2mqtt with the same "
                               "state_dir?)");
    }
    const auto version = db_->pragmaInt("PRAGMA user_version");
    if (app_id != 0 && app_id != kApplicationId) {
      throw std::runtime_error("outbox " + path + ": not a coap2mqtt outbox (application_id " +
                               std::to_string(app_id) + ")");
    }
    if (version > kSchemaVersion) {
      throw std::runtime_error("outbox " + path + ": schema version " + std::to_string(version) +
                               " is newer than this coap2mqtt understands (" +
                               std::to_string(kSchemaVersion) + ")");
    }
    // journal_mode answers with a row; sqlite3_exec ignores it.
    db_->exec("PRAGMA journal_mode=WAL");
    db_->exec("PRAGMA synchronous=NORMAL");
    if (version == 0) {
      if (app_id == 0 && db_->pragmaInt("SELECT count(*) FROM sqlite_schema") != 0) {
        throw std::runtime_error("outbox " + path + ": not a coap2mqtt outbox (other tables)");
      }
      db_->exec(
          "BEGIN IMMEDIATE;"
          "CREATE TABLE outbox ("
          "  seq         INTEGER PRIMARY KEY,"
          "  topic       TEXT    NOT NULL,"
          "  payload     BLOB    NOT NULL,"
          "  qos         INTEGER NOT NULL CHECK (qos IN (0, 1, 2)),"
          "  retain      INTEGER NOT NULL CHECK (retain IN (0, 1)),"
          "  correlation BLOB,"
          "  enqueued_at INTEGER NOT NULL"
          ") STRICT;"
          "PRAGMA application_id = 1127370063;"
          "PRAGMA user_version = 1;"
          "COMMIT;");
    }
  } catch (...) {
    db_->db.reset();
    throw;
  }
  static_assert(kApplicationId == 1127370063, "keep the literal above in sync");
  if (limits_.max_file_bytes > 0) {
    const std::int64_t page = db_->pragmaInt("PRAGMA page_size");
    const std::int64_t pages =
        std::max<std::int64_t>(1, static_cast<std::int64_t>(limits_.max_file_bytes) / page);
    db_->pragmaInt(("PRAGMA max_page_count = " + std::to_string(pages)).c_str());
  }
  db_->insert = db_->prepare(insertSql(1).c_str());
  db_->insert_many = db_->prepare(insertSql(kInsertRows).c_str());
  db_->remove_range = db_->prepare("DELETE FROM outbox WHERE seq BETWEEN ? AND ?");
  db_->select_range = db_->prepare(
      "SELECT seq, topic, payload, qos, retain, correlation, enqueued_at FROM outbox "
      "WHERE seq BETWEEN ? AND ? ORDER BY seq");
  db_->begin = db_->prepare("BEGIN IMMEDIATE");
  db_->commit = db_->prepare("COMMIT");
  db_->rollback = db_->prepare("ROLLBACK");

  StmtPtr load = db_->prepare(
      "SELECT seq, length(CAST(topic AS BLOB)) + length(payload) + "
      "ifnull(length(correlation), 0) FROM outbox ORDER BY seq");
  int step = 0;
  while ((step = sqlite3_step(load.get())) == SQLITE_ROW) {
    const auto seq = static_cast<std::uint64_t>(sqlite3_column_int64(load.get(), 0));
    const auto bytes = static_cast<std::uint32_t>(
        std::min<std::int64_t>(sqlite3_column_int64(load.get(), 1), UINT32_MAX));
    index_.push_back(Entry{seq, bytes, true, true});
    ++live_count_;
    live_bytes_ += bytes;
    next_seq_ = seq + 1;
  }
  if (step != SQLITE_DONE) db_->fail("cannot load");
  enforceLimits();
}

Outbox::~Outbox() {
  try {
    if (db_->db && hasPending()) flush();
  } catch (const std::exception&) {
    // Nothing to report to: the caller flushes explicitly to see errors.
  }
}

Outbox::Entry* Outbox::findEntry(std::uint64_t seq) {
  auto it = std::lower_bound(index_.begin(), index_.end(), seq,
                             [](const Entry& e, std::uint64_t s) { return e.seq < s; });
  if (it == index_.end() || it->seq != seq) return nullptr;
  return &*it;
}

void Outbox::notePending() {
  if (!first_pending_) first_pending_ = Clock::now();
}

void Outbox::kill(Entry& e) {
  e.live = false;
  --live_count_;
  live_bytes_ -= e.bytes;
  if (e.committed) {
    pending_deletes_.push_back(e.seq);
    notePending();
  }
}

void Outbox::dropDeadPending() {
  std::erase_if(pending_, [this](const OutboxMessage& m) {
    const Entry* e = findEntry(m.seq);
    return e == nullptr || !e->live;
  });
}

void Outbox::trimFront() {
  while (!index_.empty() && !index_.front().live) index_.pop_front();
}

void Outbox::enforceLimits() {
  trimFront();
  while (live_count_ > 0 &&
         (live_count_ > limits_.max_messages || live_bytes_ > limits_.max_bytes)) {
    kill(index_.front());
    ++stats_.dropped;
    trimFront();
  }
}

std::uint64_t Outbox::append(const std::string& topic, const std::string& payload, int qos,
                             bool retain, const std::string& correlation_data) {
  const std::uint64_t seq = next_seq_++;
  const std::uint32_t bytes = messageBytes(topic, payload, correlation_data);
  pending_.push_back(OutboxMessage{seq, topic, payload, qos, retain, correlation_data, nowMs()});
  index_.push_back(Entry{seq, bytes, true, false});
  ++live_count_;
  live_bytes_ += bytes;
  ++stats_.appended;
  notePending();
  enforceLimits();
  return seq;
}

bool Outbox::remove(std::uint64_t seq) {
  Entry* e = findEntry(seq);
  if (e == nullptr || !e->live) return false;
  kill(*e);
  ++stats_.removed;
  trimFront();
  return true;
}

std::optional<std::uint64_t> Outbox::firstSeq() const {
  for (const Entry& e : index_) {
    if (e.live) return e.seq;
  }
  return std::nullopt;
}

std::vector<OutboxMessage> Outbox::read(std::uint64_t from, std::size_t limit) const {
  std::vector<OutboxMessage> out;
  out.reserve(std::min(limit, live_count_));
  forEach(from, limit, [&](const OutboxMessageView& m) {
    out.push_back(OutboxMessage{m.seq, std::string(m.topic), std::string(m.payload), m.qos,
                                m.retain, std::string(m.correlation_data), m.enqueued_at_ms});
    return true;
  });
  return out;
}

std::size_t Outbox::forEach(std::uint64_t from, std::size_t limit,
                            const std::function<bool(const OutboxMessageView&)>& visit) const {
  std::size_t visited = 0;
  auto it = std::lower_bound(index_.begin(), index_.end(), from,
                             [](const Entry& e, std::uint64_t s) { return e.seq < s; });
  auto pending = pending_.begin();
  while (it != index_.end() && visited < limit) {
    if (!it->live) {
      ++it;
      continue;
    }
    if (!it->committed) {
      // From memory: pending_ holds every uncommitted entry, in seq order.
      pending = std::lower_bound(pending, pending_.end(), it->seq,
                                 [](const OutboxMessage& m, std::uint64_t s) { return m.seq < s; });
      if (pending != pending_.end() && pending->seq == it->seq) {
        const OutboxMessage& m = *pending;
        ++visited;
        if (!visit(OutboxMessageView{m.seq, m.topic, m.payload, m.qos, m.retain, m.correlation_data,
                                     m.enqueued_at_ms})) {
          return visited;
        }
      }
      ++it;
      continue;
    }
    // From the file: the run of committed live entries starting here, in one query.
    wanted_.clear();
    for (; it != index_.end() && it->committed && visited + wanted_.size() < limit; ++it) {
      if (it->live) wanted_.push_back(it->seq);
    }
    sqlite3_stmt* s = db_->select_range.get();
    // Reset also when `visit` throws: the statement is shared.
    struct Reset {
      sqlite3_stmt* s;
      ~Reset() {
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
      }
    } reset{s};
    sqlite3_bind_int64(s, 1, static_cast<sqlite3_int64>(wanted_.front()));
    sqlite3_bind_int64(s, 2, static_cast<sqlite3_int64>(wanted_.back()));
    std::size_t next = 0;
    bool more = true;
    int rc = 0;
    while (more && (rc = sqlite3_step(s)) == SQLITE_ROW) {
      const auto seq = static_cast<std::uint64_t>(sqlite3_column_int64(s, 0));
      while (next < wanted_.size() && wanted_[next] < seq) ++next;
      if (next == wanted_.size()) break;
      if (wanted_[next] != seq) continue;  // removed since, not yet deleted from the file
      ++visited;
      more = visit(OutboxMessageView{seq, columnView(s, 1), columnView(s, 2),
                                     sqlite3_column_int(s, 3), sqlite3_column_int(s, 4) != 0,
                                     columnView(s, 5), sqlite3_column_int64(s, 6)});
    }
    if (more && rc != SQLITE_ROW && rc != SQLITE_DONE) db_->fail("cannot read");
    if (!more) return visited;
  }
  return visited;
}

std::optional<Outbox::Clock::time_point> Outbox::flushDeadline() const {
  if (!hasPending()) return std::nullopt;
  if (pending_.size() + pending_deletes_.size() >= limits_.batch_messages) {
    return Clock::time_point::min();
  }
  return first_pending_.value_or(Clock::now()) + limits_.batch_interval;
}

void Outbox::flush() {
  if (!hasPending()) return;
  Db& d = *db_;
  std::vector<Entry*> inserted;
  // What is still live goes in, kInsertRows to a statement while that many are left.
  std::vector<const OutboxMessage*> rows;
  for (const OutboxMessage& m : pending_) {
    Entry* e = findEntry(m.seq);
    if (e == nullptr || !e->live) continue;  // acknowledged or dropped before it was written
    rows.push_back(&m);
    inserted.push_back(e);
  }
  if (rows.empty() && pending_deletes_.empty()) {
    // All acknowledged before they were written: no transaction at all.
    pending_.clear();
    first_pending_.reset();
    return;
  }
  try {
    d.step(d.begin.get(), "BEGIN");
  } catch (...) {
    dropDeadPending();
    throw;
  }
  try {
    // Deletes first: on a full disk the pages they free take the new rows.
    std::sort(pending_deletes_.begin(), pending_deletes_.end());
    for (std::size_t i = 0; i < pending_deletes_.size();) {
      std::size_t j = i;
      while (j + 1 < pending_deletes_.size() &&
             pending_deletes_[j + 1] <= pending_deletes_[j] + 1) {
        ++j;
      }
      sqlite3_stmt* s = d.remove_range.get();
      sqlite3_bind_int64(s, 1, static_cast<sqlite3_int64>(pending_deletes_[i]));
      sqlite3_bind_int64(s, 2, static_cast<sqlite3_int64>(pending_deletes_[j]));
      d.step(s, "cannot delete");
      i = j + 1;
    }
    for (std::size_t i = 0; i < rows.size();) {
      const bool many = rows.size() - i >= static_cast<std::size_t>(kInsertRows);
      sqlite3_stmt* s = many ? d.insert_many.get() : d.insert.get();
      const std::size_t n = many ? kInsertRows : 1;
      for (std::size_t r = 0; r < n; ++r) {
        bindRow(s, static_cast<int>(r) * kInsertColumns, *rows[i + r]);
      }
      d.step(s, "cannot insert");
      i += n;
    }
    d.step(d.commit.get(), "COMMIT");
  } catch (...) {
    sqlite3_step(d.rollback.get());
    sqlite3_reset(d.rollback.get());
    // While the file cannot be written (a full disk), memory holds the batch: only what is
    // still live, or acknowledged messages would pile up at the full message rate.
    dropDeadPending();
    throw;
  }
  for (Entry* e : inserted) e->committed = true;
  stats_.written += inserted.size();
  ++stats_.commits;
  pending_.clear();
  pending_deletes_.clear();
  first_pending_.reset();
}

}  // namespace coap2mqtt::registry
