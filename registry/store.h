#pragma once
// The registry's durable copy: one SQLite file (WAL), schema versioned by PRAGMA
// user_version with forward-only migrations. Loop thread only; `coap2mqtt devices` opens
// the same file read-only from another process while the daemon runs.
#include <chrono>
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

class Store {
 public:
  enum class Mode { ReadWrite, ReadOnly };

  // Opens or creates `path` and migrates it to the current schema. Throws
  // std::runtime_error (with the path and SQLite's message) when the file is not a
  // database, is from a newer coap2mqtt (user_version too high), or cannot be opened.
  explicit Store(const std::string& path, Mode mode = Mode::ReadWrite);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  static int currentSchemaVersion();
  int schemaVersion() const;

  // Every device with its resources, ordered by name.
  std::vector<Device> loadAll() const;
  // Inserts or replaces the device and all its resources in one transaction. Keeps the
  // stored first_seen when the device exists.
  void save(const Device& device);
  void remove(std::string_view name);
  // Renames, keeping resources and history. false when `from` is unknown or `to` is taken.
  bool rename(std::string_view from, std::string_view to);

  // Liveness updates are frequent: they are buffered and written by flush() in one
  // transaction (the gateway flushes every few seconds and at shutdown).
  void touch(std::string_view name, std::chrono::system_clock::time_point last_seen, bool online);
  void flush();
  std::size_t pendingTouches() const;

  // Resource Directory registrations (schema v2), keyed by location.
  // Inserts or replaces the one at r.location, in one statement (one transaction). The
  // links are stored as link-format (serializeLinkFormat); throws std::invalid_argument,
  // storing nothing, when that would not parse back (links the parser did not produce,
  // e.g. a '>' in a target or a control character in a value), or for a lifetime outside
  // 1..2^32-1 s.
  void saveRdRegistration(const RdRegistration& r,
                          std::chrono::system_clock::time_point expires_at);
  // Deletes the one at `location`; unknown locations are not an error.
  void removeRdRegistration(std::string_view location);
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
