#pragma once
// The MQTT outbox: QoS >= 1 messages waiting for their PUBACK, kept in their own SQLite
// file (<state_dir>/outbox.db, WAL) so that they survive a broker outage and a gateway
// restart. Loop thread only.
//
// Writes are group-committed: append() and remove() only touch memory; flush() writes
// everything pending in one transaction. A message acknowledged before the next flush is
// never written at all. The owner calls flush() when flushDue() says so (a batch of
// `batch_messages` or `batch_interval` after the first pending change) and at shutdown.
// With synchronous=NORMAL a process crash loses nothing that was flushed; a power loss can
// lose the last commits but never corrupts the file.
//
// The open Outbox locks its file (SQLite's exclusive locking mode): a second Outbox on the
// same file, in this process or another, is refused until the first is closed.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace coap2mqtt::gateway {

struct OutboxLimits {
  std::size_t max_messages = 100000;
  std::size_t max_bytes = std::size_t{64} * 1024 * 1024;  // topic + payload + correlation
  std::size_t batch_messages = 512;                       // flush when this many are pending
  std::chrono::milliseconds batch_interval{5};            // ... or this long after the first
  // The file's size bound (SQLite max_page_count); past it a flush fails as on a full disk.
  std::size_t max_file_bytes = 0;  // 0: only the disk's
};

struct OutboxMessage {
  std::uint64_t seq = 0;  // increasing; the order messages are sent in
  std::string topic;
  std::string payload;
  int qos = 1;
  bool retain = false;
  std::string correlation_data;     // MQTT 5 correlation data; empty = none
  std::int64_t enqueued_at_ms = 0;  // wall clock, ms since the Unix epoch
};

// A message as forEach() shows it: the views are valid only during the call.
struct OutboxMessageView {
  std::uint64_t seq = 0;
  std::string_view topic;
  std::string_view payload;
  int qos = 1;
  bool retain = false;
  std::string_view correlation_data;
  std::int64_t enqueued_at_ms = 0;
};

struct OutboxStats {
  std::uint64_t appended = 0;
  std::uint64_t removed = 0;    // acknowledged
  std::uint64_t dropped = 0;    // oldest dropped because a bound was reached
  std::uint64_t too_large = 0;  // refused by append(): larger than max_bytes alone
  std::uint64_t commits = 0;    // transactions written
  std::uint64_t written = 0;    // messages that reached the file
};

class Outbox {
 public:
  using Clock = std::chrono::steady_clock;

  // Opens or creates `path` (":memory:" for a volatile one) and loads the index of the
  // messages left by the last run. Throws std::runtime_error naming the path when the file
  // cannot be opened or is not an outbox. Limits smaller than what is stored drop the
  // oldest at once (counted in stats().dropped).
  Outbox(const std::string& path, OutboxLimits limits);
  ~Outbox();  // flushes what is pending (errors are swallowed: call flush() to see them)
  Outbox(const Outbox&) = delete;
  Outbox& operator=(const Outbox&) = delete;

  // Adds a message at the end; returns its seq. May drop the oldest messages to stay
  // within the limits. A message larger than max_bytes on its own can never fit: it is
  // refused alone (0, counted in stats().too_large) and nothing else is dropped for it.
  // Memory only until flush().
  std::uint64_t append(const std::string& topic, const std::string& payload, int qos, bool retain,
                       const std::string& correlation_data = {});
  // Forgets a message (its PUBACK came). Unknown or already removed seqs are ignored:
  // false then.
  bool remove(std::uint64_t seq);

  // Up to `limit` live messages with seq >= `from`, in order (from memory or the file).
  std::vector<OutboxMessage> read(std::uint64_t from, std::size_t limit) const;
  // The same messages without copying them: calls `visit` for each, in order, until it
  // returns false. `visit` must not change the outbox. Returns how many were visited.
  std::size_t forEach(std::uint64_t from, std::size_t limit,
                      const std::function<bool(const OutboxMessageView&)>& visit) const;
  // The seq the next append() will get.
  std::uint64_t nextSeq() const { return next_seq_; }
  // Seq of the oldest live message, or nullopt when empty.
  std::optional<std::uint64_t> firstSeq() const;

  // Writes pending appends and removals in one transaction. Throws std::runtime_error on a
  // SQLite error (pending changes are kept for the next try).
  void flush();
  bool hasPending() const { return !pending_.empty() || !pending_deletes_.empty(); }
  // When the pending batch should be written: nullopt when nothing is pending, `now` or
  // earlier when a flush is due.
  std::optional<Clock::time_point> flushDeadline() const;
  bool flushDue(Clock::time_point now) const {
    auto d = flushDeadline();
    return d && *d <= now;
  }

  std::size_t size() const { return live_count_; }  // live messages
  // Messages held in memory for the next flush (live ones only after a failed flush).
  std::size_t pendingCount() const { return pending_.size(); }
  std::size_t bytes() const { return live_bytes_; }  // their topic+payload+correlation bytes
  const OutboxStats& stats() const { return stats_; }
  const OutboxLimits& limits() const { return limits_; }

 private:
  struct Entry {
    std::uint64_t seq;
    std::uint32_t bytes;
    bool live;
    bool committed;  // in the file
  };
  Entry* findEntry(std::uint64_t seq);
  void kill(Entry& e);
  void enforceLimits();
  void trimFront();
  void notePending();
  void dropDeadPending();

  struct Db;
  std::unique_ptr<Db> db_;
  OutboxLimits limits_;
  // Every message that is live or still in the file, by seq.
  std::deque<Entry> index_;
  std::deque<OutboxMessage> pending_;           // appended since the last flush, by seq
  std::vector<std::uint64_t> pending_deletes_;  // committed, to delete at the next flush
  mutable std::vector<std::uint64_t> wanted_;   // forEach's scratch: seqs to fetch from the file
  std::uint64_t next_seq_ = 1;
  std::size_t live_count_ = 0;
  std::size_t live_bytes_ = 0;
  std::optional<Clock::time_point> first_pending_;
  OutboxStats stats_;
};

}  // namespace coap2mqtt::gateway
