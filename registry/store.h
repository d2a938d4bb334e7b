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

namespace coap2mqtt::registry {

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

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace coap2mqtt::registry
