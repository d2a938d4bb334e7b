#pragma once
// One small RAII wrapper over SQLite's C API, shared by the registry store
// (registry/store.cpp) and the MQTT outbox (gateway/outbox.cpp): the connection, prepared
// statements, one execution of a statement (bind, step, read, reset), transactions and
// savepoints. Every SQLite return code is checked; a failure throws sqlite::Error, whose
// message names the file (the Db's label), what was being done and SQLite's own words.
// sqlite3.h stays in sqlite.cpp.
//
// Not thread-safe: a Db and its statements belong to one thread (the gateway's loop). The
// connection is opened with SQLITE_OPEN_NOMUTEX accordingly.
#include <chrono>
#include <concepts>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

struct sqlite3;
struct sqlite3_stmt;

namespace coap2mqtt::registry::sqlite {

class Error : public std::runtime_error {
 public:
  Error(const std::string& message, int code) : std::runtime_error(message), code_(code) {}
  // SQLite's extended result code; 0 when the failure was found by us (a missing row).
  int code() const noexcept { return code_; }
  // SQLITE_BUSY or SQLITE_LOCKED: another connection holds the lock (busy_timeout passed).
  bool busy() const noexcept;
  // The change itself is refused: a constraint (CHECK, trigger RAISE), a value too big, a
  // datatype mismatch. Trying the same change again cannot succeed, unlike a locked, full,
  // read-only or failing file, where the same change succeeds once the file is fine again.
  bool refusesTheChange() const noexcept;
  // The file is not a database we can use: not SQLite at all, corrupt, or (Db::failUnusable)
  // another program's or a newer schema. Moving it aside and starting clean can work;
  // retrying cannot.
  bool unusableFile() const noexcept;

 private:
  int code_;
};

namespace detail {
struct StmtFinalizer {
  void operator()(sqlite3_stmt* stmt) const noexcept;
};
struct DbCloser {
  void operator()(sqlite3* db) const noexcept;
};
}  // namespace detail

// A prepared statement, finalized on destruction. Executed through Run.
class Statement {
 public:
  Statement() = default;
  explicit operator bool() const { return stmt_ != nullptr; }

 private:
  friend class Db;
  friend class Run;
  explicit Statement(sqlite3_stmt* stmt) : stmt_(stmt) {}
  std::unique_ptr<sqlite3_stmt, detail::StmtFinalizer> stmt_;
};

class Db {
 public:
  enum class Mode { ReadOnly, ReadWrite };  // ReadWrite creates a missing file

  // Opens `path` (":memory:" for a volatile database) with extended result codes and the
  // given busy timeout. `label` starts every error message, e.g. "registry store
  // /var/lib/coap2mqtt/registry.db". Throws Error when the file cannot be opened.
  Db(const std::string& path, Mode mode, std::string label,
     std::chrono::milliseconds busy_timeout = std::chrono::seconds(5));
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  const std::string& label() const { return label_; }
  // How long a statement waits for another connection's lock before failing with
  // SQLITE_BUSY (Error::busy()).
  void setBusyTimeout(std::chrono::milliseconds timeout);

  // For one-off SQL (pragmas at open, migrations); may hold several statements; result
  // rows are ignored.
  void exec(const std::string& sql, std::string_view what);
  // Prepared once, kept (SQLITE_PREPARE_PERSISTENT). Statements must be destroyed before
  // their Db (declare them after it); SQLite defers the close until they are anyway.
  Statement prepare(std::string_view sql);
  // The first column of the first row of a one-off query; throws when there is no row.
  std::int64_t queryInt(std::string_view sql);
  std::string queryText(std::string_view sql);

  int changes() const;  // rows changed by the last INSERT/UPDATE/DELETE
  bool inTransaction() const;

  [[noreturn]] void fail(std::string_view what, int rc) const;  // with SQLite's message
  [[noreturn]] void fail(std::string_view what) const;          // our own finding, code 0
  // Our own finding that the file is not ours to use (Error::unusableFile()).
  [[noreturn]] void failUnusable(std::string_view what) const;

 private:
  friend class Run;
  friend class Transaction;
  friend class Savepoint;
  enum Builtin {
    kBeginDeferred,
    kBeginImmediate,
    kCommit,
    kRollback,
    kSavepoint,
    kRelease,
    kRollbackTo,
    kBuiltins
  };
  const Statement& builtin(Builtin which);

  std::string label_;
  std::unique_ptr<sqlite3, detail::DbCloser> db_;  // before the statements: closed last
  Statement builtins_[kBuiltins];                  // prepared on first use
};

// One execution of a prepared statement: bind, step, read columns; reset and bindings
// cleared on scope exit (also when an exception leaves it), so the statement is ready for
// the next Run and holds no read snapshot.
class Run {
 public:
  Run(const Db& db, const Statement& stmt, std::string_view what);
  ~Run();
  Run(const Run&) = delete;
  Run& operator=(const Run&) = delete;

  // Parameters are numbered from 1. Text and blobs are copied.
  Run& bind(int index, std::string_view text);
  Run& bind(int index, std::int64_t value);
  Run& bind(int index, int value) { return bind(index, std::int64_t{value}); }
  template <std::same_as<bool> B>
  Run& bind(int index, B value) {
    return bind(index, std::int64_t{value ? 1 : 0});
  }
  Run& bindBlob(int index, std::string_view bytes);
  Run& bindNull(int index);
  // Not copied: `text`/`bytes` must stay valid until this Run ends.
  Run& bindTextRef(int index, std::string_view text);
  Run& bindBlobRef(int index, std::string_view bytes);

  // true: a row is available; false: done. Throws Error on failure.
  bool step();
  // Steps a statement that returns no rows.
  void done();

  std::int64_t integer(int col) const;
  bool isNull(int col) const;
  std::string text(int col) const;
  // Valid until the next step() or the end of the Run.
  std::string_view blob(int col) const;

 private:
  const Db& db_;
  sqlite3_stmt* stmt_;
  std::string_view what_;
};

// BEGIN ... COMMIT, rolled back on scope exit unless committed.
class Transaction {
 public:
  enum class Kind { Deferred, Immediate };  // Immediate takes the write lock at BEGIN
  explicit Transaction(Db& db, Kind kind = Kind::Immediate);
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit();

 private:
  Db& db_;
  bool committed_ = false;
};

// SAVEPOINT inside a transaction: release() keeps its changes; leaving the scope without
// it rolls them back (the transaction itself goes on).
class Savepoint {
 public:
  explicit Savepoint(Db& db);
  ~Savepoint();
  Savepoint(const Savepoint&) = delete;
  Savepoint& operator=(const Savepoint&) = delete;
  void release();

 private:
  Db& db_;
  bool released_ = false;
};

// Renames `path` (and its -wal and -shm files) to `<path>.corrupt-<UTC time>` so that a
// fresh file can take its place; nothing is deleted. Returns the new name; throws
// std::system_error when the rename fails.
std::string moveAside(const std::string& path);

}  // namespace coap2mqtt::registry::sqlite
