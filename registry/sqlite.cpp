#include "registry/sqlite.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <ctime>
#include <system_error>
#include <utility>

namespace coap2mqtt::registry::sqlite {

bool Error::busy() const noexcept {
  const int primary = code_ & 0xff;
  return primary == SQLITE_BUSY || primary == SQLITE_LOCKED;
}

bool Error::refusesTheChange() const noexcept {
  switch (code_ & 0xff) {
    case SQLITE_CONSTRAINT:
    case SQLITE_TOOBIG:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
      return true;
    default:
      return false;
  }
}

namespace {

// State files hold device addresses and queued messages: readable by the gateway's user
// only. SQLite creates a new file 0644 (less the umask) and gives its -wal and -shm files
// the main file's mode, so the main file is created here first, 0600. An existing file
// keeps its mode; ":memory:" and URIs are left to SQLite.
void createPrivate(const std::string& path) {
  if (path.empty() || path == ":memory:" || path.rfind("file:", 0) == 0) return;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd >= 0) ::close(fd);  // EEXIST and other errors: sqlite3_open_v2 reports them
}

}  // namespace

bool Error::unusableFile() const noexcept {
  const int primary = code_ & 0xff;
  return primary == SQLITE_NOTADB || primary == SQLITE_CORRUPT;
}

std::string moveAside(const std::string& path) {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &utc);
  const std::string aside = path + ".corrupt-" + stamp;
  if (std::rename(path.c_str(), aside.c_str()) != 0 && errno != ENOENT) {
    throw std::system_error(errno, std::generic_category(), "renaming " + path + " to " + aside);
  }
  for (const char* suffix : {"-wal", "-shm"}) {  // a journal belongs to its file
    (void)std::rename((path + suffix).c_str(), (aside + suffix).c_str());
  }
  return aside;
}

namespace detail {

void StmtFinalizer::operator()(sqlite3_stmt* stmt) const noexcept {
  // finalize repeats the error of the statement's last step, already reported there.
  (void)sqlite3_finalize(stmt);
}

void DbCloser::operator()(sqlite3* db) const noexcept {
  // close_v2 only fails for a bad handle; with statements still open it defers the close
  // until they are finalized instead of failing.
  (void)sqlite3_close_v2(db);
}

}  // namespace detail

Db::Db(const std::string& path, Mode mode, std::string label,
       std::chrono::milliseconds busy_timeout)
    : label_(std::move(label)) {
  const int flags = (mode == Mode::ReadWrite ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE
                                             : SQLITE_OPEN_READONLY) |
                    SQLITE_OPEN_NOMUTEX;  // one thread (the loop) per connection
  if (mode == Mode::ReadWrite) createPrivate(path);
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  db_.reset(raw);  // a handle comes back even on most failures and must be closed
  if (rc != SQLITE_OK) fail("cannot open", rc);
  if (const int e = sqlite3_extended_result_codes(raw, 1); e != SQLITE_OK) {
    fail("enabling extended result codes", e);
  }
  setBusyTimeout(busy_timeout);
}

Db::~Db() = default;

void Db::setBusyTimeout(std::chrono::milliseconds timeout) {
  if (const int rc = sqlite3_busy_timeout(db_.get(), static_cast<int>(timeout.count()));
      rc != SQLITE_OK) {
    fail("setting busy_timeout", rc);
  }
}

void Db::fail(std::string_view what, int rc) const {
  std::string msg = label_ + ": " + std::string(what) + ": ";
  // errmsg describes the connection's last error, which is rc's when rc came from it.
  msg += db_ ? sqlite3_errmsg(db_.get()) : sqlite3_errstr(rc);
  msg += " (sqlite error " + std::to_string(rc) + ")";
  throw Error(msg, rc);
}

void Db::fail(std::string_view what) const {
  throw Error(label_ + ": " + std::string(what), 0);
}

void Db::failUnusable(std::string_view what) const {
  throw Error(label_ + ": " + std::string(what), SQLITE_NOTADB);
}

void Db::exec(const std::string& sql, std::string_view what) {
  if (const int rc = sqlite3_exec(db_.get(), sql.c_str(), nullptr, nullptr, nullptr);
      rc != SQLITE_OK) {
    fail(what, rc);
  }
}

Statement Db::prepare(std::string_view sql) {
  sqlite3_stmt* raw = nullptr;
  const int rc = sqlite3_prepare_v3(db_.get(), sql.data(), static_cast<int>(sql.size()),
                                    SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
  Statement stmt(raw);
  if (rc != SQLITE_OK) fail("preparing \"" + std::string(sql) + "\"", rc);
  if (!stmt) fail("preparing \"" + std::string(sql) + "\": empty statement");
  return stmt;
}

std::int64_t Db::queryInt(std::string_view sql) {
  const Statement stmt = prepare(sql);
  Run run(*this, stmt, sql);
  if (!run.step()) fail(std::string(sql) + ": no result");
  return run.integer(0);
}

std::string Db::queryText(std::string_view sql) {
  const Statement stmt = prepare(sql);
  Run run(*this, stmt, sql);
  if (!run.step()) fail(std::string(sql) + ": no result");
  return run.text(0);
}

int Db::changes() const {
  return sqlite3_changes(db_.get());
}

bool Db::inTransaction() const {
  return sqlite3_get_autocommit(db_.get()) == 0;
}

const Statement& Db::builtin(Builtin which) {
  static constexpr const char* kSql[kBuiltins] = {
      "BEGIN DEFERRED",        "BEGIN IMMEDIATE",          "COMMIT", "ROLLBACK", "SAVEPOINT c2m",
      "RELEASE SAVEPOINT c2m", "ROLLBACK TO SAVEPOINT c2m"};
  Statement& stmt = builtins_[which];
  if (!stmt) stmt = prepare(kSql[which]);
  return stmt;
}

// ---- Run -----------------------------------------------------------------------------

Run::Run(const Db& db, const Statement& stmt, std::string_view what)
    : db_(db), stmt_(stmt.stmt_.get()), what_(what) {}

Run::~Run() {
  // reset returns the error of the last step, which step() already reported;
  // clear_bindings always returns SQLITE_OK.
  (void)sqlite3_reset(stmt_);
  (void)sqlite3_clear_bindings(stmt_);
}

namespace {
// A null pointer would bind SQL NULL, not an empty string or blob.
const char* nonNull(std::string_view s) {
  return s.data() != nullptr ? s.data() : "";
}
}  // namespace

Run& Run::bind(int index, std::string_view text) {
  if (const int rc = sqlite3_bind_text64(stmt_, index, nonNull(text), text.size(), SQLITE_TRANSIENT,
                                         SQLITE_UTF8);
      rc != SQLITE_OK) {
    db_.fail(what_, rc);
  }
  return *this;
}

Run& Run::bindTextRef(int index, std::string_view text) {
  if (const int rc =
          sqlite3_bind_text64(stmt_, index, nonNull(text), text.size(), SQLITE_STATIC, SQLITE_UTF8);
      rc != SQLITE_OK) {
    db_.fail(what_, rc);
  }
  return *this;
}

Run& Run::bindBlob(int index, std::string_view bytes) {
  if (const int rc =
          sqlite3_bind_blob64(stmt_, index, nonNull(bytes), bytes.size(), SQLITE_TRANSIENT);
      rc != SQLITE_OK) {
    db_.fail(what_, rc);
  }
  return *this;
}

Run& Run::bindBlobRef(int index, std::string_view bytes) {
  if (const int rc = sqlite3_bind_blob64(stmt_, index, nonNull(bytes), bytes.size(), SQLITE_STATIC);
      rc != SQLITE_OK) {
    db_.fail(what_, rc);
  }
  return *this;
}

Run& Run::bind(int index, std::int64_t value) {
  if (const int rc = sqlite3_bind_int64(stmt_, index, value); rc != SQLITE_OK) db_.fail(what_, rc);
  return *this;
}

Run& Run::bindNull(int index) {
  if (const int rc = sqlite3_bind_null(stmt_, index); rc != SQLITE_OK) db_.fail(what_, rc);
  return *this;
}

bool Run::step() {
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  db_.fail(what_, rc);
}

void Run::done() {
  if (step()) db_.fail(std::string(what_) + ": unexpected result row");
}

std::int64_t Run::integer(int col) const {
  return sqlite3_column_int64(stmt_, col);
}

bool Run::isNull(int col) const {
  return sqlite3_column_type(stmt_, col) == SQLITE_NULL;
}

std::string Run::text(int col) const {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
  if (p == nullptr) {
    // NULL, or out of memory converting the value.
    if (sqlite3_errcode(sqlite3_db_handle(stmt_)) == SQLITE_NOMEM) db_.fail(what_, SQLITE_NOMEM);
    return {};
  }
  return std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, col)));
}

std::string_view Run::blob(int col) const {
  const void* p = sqlite3_column_blob(stmt_, col);
  const int n = sqlite3_column_bytes(stmt_, col);
  if (p == nullptr) {
    if (n == 0 && sqlite3_errcode(sqlite3_db_handle(stmt_)) == SQLITE_NOMEM) {
      db_.fail(what_, SQLITE_NOMEM);
    }
    return {};
  }
  return {static_cast<const char*>(p), static_cast<std::size_t>(n)};
}

// ---- Transaction, Savepoint ------------------------------------------------------------

Transaction::Transaction(Db& db, Kind kind) : db_(db) {
  Run(db_, db_.builtin(kind == Kind::Immediate ? Db::kBeginImmediate : Db::kBeginDeferred),
      "beginning a transaction")
      .done();
}

Transaction::~Transaction() {
  // SQLite rolls back by itself after some errors (SQLITE_FULL, IOERR, ...); only roll
  // back what is still open. A failing ROLLBACK leaves the transaction open and the next
  // BEGIN reports it, so there is nothing more to do here.
  if (committed_ || !db_.inTransaction()) return;
  try {
    Run(db_, db_.builtin(Db::kRollback), "rolling back").done();
  } catch (...) {  // NOLINT(bugprone-empty-catch): reported by the next BEGIN
  }
}

void Transaction::commit() {
  Run(db_, db_.builtin(Db::kCommit), "committing").done();
  committed_ = true;
}

Savepoint::Savepoint(Db& db) : db_(db) {
  Run(db_, db_.builtin(Db::kSavepoint), "opening a savepoint").done();
}

Savepoint::~Savepoint() {
  if (released_ || !db_.inTransaction()) return;  // SQLite already rolled everything back
  try {
    Run(db_, db_.builtin(Db::kRollbackTo), "rolling back to a savepoint").done();
    Run(db_, db_.builtin(Db::kRelease), "releasing a savepoint").done();
  } catch (...) {  // NOLINT(bugprone-empty-catch): the transaction's commit reports it
  }
}

void Savepoint::release() {
  Run(db_, db_.builtin(Db::kRelease), "releasing a savepoint").done();
  released_ = true;
}

}  // namespace coap2mqtt::registry::sqlite
