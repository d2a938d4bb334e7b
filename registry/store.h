#pragma once
// The registry's durable copy: one SQLite file (WAL), schema versioned by PRAGMA
// user_version with forward-only migrations. Loop thread only; `coap2mqtt devices` opens
// the same file read-only from another process while the daemon runs.
//
// Writes never throw for a failing file. The daemon writes from the per-packet path (a
// multicast answer, an RD registration, a CoAP callback), where a locked database, a full
// disk or an I/O error must cost a logged, counted, retried write, never the process and
// never a difference between memory and file. So:
//
// - save, remove, rename, saveRdRegistration and removeRdRegistration try their write at
//   once (a crash right after a discovery answer leaves the device in the file) and say
//   what became of it (WriteResult). A write the file cannot take now is kept in memory,
//   *pending*, and written by the next flush(), which the gateway calls every few seconds.
// - While writes are pending, a new write joins them without trying the file: a locked
//   database then costs the loop one busy timeout (kWriteBusyTimeout) per flush(), not one
//   per write. The next successful flush() ends that.
// - Pending writes of one device (by name) or one RD registration (by location) replace
//   each other, the latest winning, so that the file ends exactly as if each had been
//   written at once: save after remove leaves the saved device (with the new first_seen,
//   as a fresh insert would), remove after save leaves nothing. A pending rename keeps its
//   place in the order among the writes of its two names.
// - A change the database refuses itself (a constraint; not expected from what the
//   link-format parser and the resource directory produce) is dropped, not retried:
//   WriteResult::Rejected, or counted in stats().rejected when flush() meets it; it never
//   holds up the other pending writes.
// - The caller reports failures, rate-limited: a Pending or Rejected result, lastError()
//   and stats() say what and how often.
// Reads (loadAll, loadRdRegistrations) see the file, not pending writes; they are for
// start-up and for `coap2mqtt devices`, and throw on failure.
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "registry/registry.h"
#include "registry/resource_directory.h"

namespace coap2mqtt::registry {

// A Resource Directory registration as stored. `registration.expires` (steady clock) is
// neither stored nor loaded (left default): the wall-clock `expires_at` is what survives a
// restart, and the caller converts between the two.
struct StoredRdRegistration {
  RdRegistration registration;
  std::chrono::system_clock::time_point expires_at;
};

// A stored registration that loadRdRegistrations() could not turn back into one.
struct SkippedRdRegistration {
  std::string location;
  std::string reason;  // e.g. "bad link-format at byte 12: expected '>' ..."
};

// What became of a write.
enum class WriteResult {
  Written,   // in the file (committed)
  Pending,   // kept in memory for the next flush(): the file could not take it now, or
             // earlier writes are still pending; lastError() says why
  Rejected,  // dropped: the database refused this change itself; lastError() says why
};

// What became of a rename.
enum class RenameResult {
  Renamed,     // in the file (or `from` == `to` and `from` is stored)
  NotRenamed,  // `from` is not stored or `to` is taken: nothing changed
  Pending,     // kept for the next flush(), which renames only if `from` is stored and
               // `to` is free then
  Rejected,    // dropped: the database refused it; lastError() says why
};

struct StoreStats {
  std::uint64_t deferred = 0;        // writes that went Pending
  std::uint64_t rejected = 0;        // writes dropped as Rejected (at once or in a flush)
  std::uint64_t failed_flushes = 0;  // flush() calls that threw
};

class Store {
 public:
  enum class Mode { ReadWrite, ReadOnly };

  // How long a write waits for another connection's lock before it goes Pending (a flush
  // before it fails). Short: the loop thread waits that long. Opening the file (and
  // every read-only use, such as `coap2mqtt devices`) waits up to kOpenBusyTimeout.
  static constexpr std::chrono::milliseconds kWriteBusyTimeout{100};
  static constexpr std::chrono::milliseconds kOpenBusyTimeout{5000};

  // Opens or creates `path` and migrates it to the current schema. Throws
  // std::runtime_error (with the path and SQLite's message) when the file is not a
  // database, is from a newer coap2mqtt (user_version too high), or cannot be opened.
  explicit Store(const std::string& path, Mode mode = Mode::ReadWrite);
  // Flushes what is pending, best effort: what the file cannot take then is lost (call
  // flush() first to know).
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  static int currentSchemaVersion();
  int schemaVersion() const;

  // Every device with its resources, ordered by name (as in the file: without pending
  // writes).
  std::vector<Device> loadAll() const;

  // Writes: see the top of this file. None throws for a failing file (a std::logic_error
  // on a read-only Store is a programming error).

  // Inserts or replaces the device and all its resources in one transaction. Keeps the
  // stored first_seen when the device exists. A resource's sz above INT64_MAX (which the
  // link-format parser never produces) is stored as unknown (NULL). Throws
  // std::invalid_argument, storing nothing, for an rt or if item that is empty or holds
  // whitespace (it would come back split; the parser never produces one).
  WriteResult save(const Device& device);
  // Deletes the device and its resources; an unknown name is not an error (Written).
  WriteResult remove(std::string_view name);
  // Renames, keeping resources and history.
  RenameResult rename(std::string_view from, std::string_view to);

  // Liveness updates are frequent: they are buffered in memory (the latest per device) and
  // written by flush() in one transaction (the gateway flushes every few seconds and at
  // shutdown). A save() or remove() of the device drops the buffered one (the save holds
  // newer values); a rename moves it along.
  void touch(std::string_view name, std::chrono::system_clock::time_point last_seen, bool online);
  // Writes every pending write, in the order they were made, then the buffered touches, in
  // one transaction. Throws sqlite::Error (a std::runtime_error naming the file and
  // SQLite's message) when the file cannot take them: all of them stay pending for the
  // next flush(), nothing is lost; stats().failed_flushes counts it. A pending write the
  // database refuses itself is dropped on the way (stats().rejected, lastError()) and the
  // others are written. Nothing pending: returns at once.
  void flush();
  std::size_t pendingTouches() const;
  // Writes kept for the next flush() (touches not included).
  std::size_t pendingWrites() const;
  // The last failure of a write or a flush, for the caller's log line; empty when none yet.
  const std::string& lastError() const;
  const StoreStats& stats() const;

  // Resource Directory registrations (schema v2), keyed by location.
  // Inserts or replaces the one at r.location, in one transaction. The links are stored
  // as link-format (serializeLinkFormat); throws std::invalid_argument, storing nothing,
  // when that would not parse back (links the parser did not produce, e.g. a '>' in a
  // target or a control character in a value), or for a lifetime outside 1..2^32-1 s.
  WriteResult saveRdRegistration(const RdRegistration& r,
                                 std::chrono::system_clock::time_point expires_at);
  // Deletes the one at `location`; an unknown location is not an error (Written).
  WriteResult removeRdRegistration(std::string_view location);
  // Every stored registration, links parsed back, ordered by location (shorter first,
  // then by text: "/rd/<n>" by n). A row that no longer makes sense (its links do not
  // parse, its lifetime is out of range) is left out and, if `skipped` is given, appended
  // there, so the caller can log it and remove it; a bad row never throws.
  std::vector<StoredRdRegistration> loadRdRegistrations(
      std::vector<SkippedRdRegistration>* skipped = nullptr) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace coap2mqtt::registry
