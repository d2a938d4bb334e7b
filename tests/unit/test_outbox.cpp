// The MQTT outbox: order, bounds, group commit, reopen, crash consistency.
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gateway/outbox.h"
#include "tests/unit/temp_dir.h"

namespace {

namespace fs = std::filesystem;
using coap2mqtt::gateway::Outbox;
using coap2mqtt::gateway::OutboxLimits;
using coap2mqtt::gateway::OutboxMessage;
using coap2mqtt::unit::TempDir;
using namespace std::chrono_literals;

// Runs `sql` on a connection of the test's own; returns the first column of every row.
std::vector<std::string> query(const std::string& path, const std::string& sql) {
  sqlite3* raw = nullptr;
  if (sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    sqlite3_close(raw);
    throw std::runtime_error("open " + path);
  }
  std::unique_ptr<sqlite3, decltype(&sqlite3_close)> db(raw, &sqlite3_close);
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v2(db.get(), sql.c_str(), -1, &s, nullptr) != SQLITE_OK) {
    throw std::runtime_error(sql + ": " + sqlite3_errmsg(db.get()));
  }
  std::vector<std::string> out;
  while (sqlite3_step(s) == SQLITE_ROW) {
    const auto* t = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
    out.emplace_back(t != nullptr ? t : "NULL");
  }
  sqlite3_finalize(s);
  return out;
}

std::vector<std::string> payloads(const std::vector<OutboxMessage>& msgs) {
  std::vector<std::string> out;
  for (const auto& m : msgs) out.push_back(m.payload);
  return out;
}

std::vector<OutboxMessage> all(const Outbox& box) {
  return box.read(0, 1u << 30);
}

TEST(Outbox, KeepsOrderAcrossMemoryAndFile) {
  TempDir dir;
  Outbox box(dir.path("outbox.db"), {});
  const auto a = box.append("t/a", "1", 1, false);
  const auto b = box.append("t/b", "2", 1, true, "corr");
  box.flush();
  const auto c = box.append("t/c", "3", 2, false);
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
  auto msgs = all(box);
  ASSERT_EQ(msgs.size(), 3u);
  EXPECT_EQ(payloads(msgs), (std::vector<std::string>{"1", "2", "3"}));
  EXPECT_EQ(msgs[1].topic, "t/b");
  EXPECT_TRUE(msgs[1].retain);
  EXPECT_EQ(msgs[1].correlation_data, "corr");
  EXPECT_EQ(msgs[2].qos, 2);
  EXPECT_GT(msgs[0].enqueued_at_ms, 0);
  // read() from the middle, with a limit.
  EXPECT_EQ(payloads(box.read(b, 1)), std::vector<std::string>{"2"});
  EXPECT_EQ(payloads(box.read(b + 1, 10)), std::vector<std::string>{"3"});
  EXPECT_EQ(box.firstSeq(), a);
  EXPECT_EQ(box.nextSeq(), c + 1);
}

TEST(Outbox, RemovedMessagesAreSkippedAndDeletedAtFlush) {
  TempDir dir;
  const std::string path = dir.path("outbox.db");
  {
    Outbox box(path, {});
    std::vector<std::uint64_t> seqs;
    for (int i = 0; i < 5; ++i) seqs.push_back(box.append("t", std::to_string(i), 1, false));
    box.remove(seqs[0]);  // never written: acknowledged before the flush
    box.flush();
    EXPECT_EQ(box.stats().written, 4u);
    box.remove(seqs[2]);  // out of order
    box.remove(seqs[2]);  // twice: ignored
    box.remove(999);      // unknown: ignored
    EXPECT_EQ(payloads(all(box)), (std::vector<std::string>{"1", "3", "4"}));
    EXPECT_EQ(box.size(), 3u);
    box.flush();
    EXPECT_EQ(box.stats().removed, 2u);
    EXPECT_FALSE(box.hasPending());
  }  // the open outbox locks its file: read it afterwards
  EXPECT_EQ(query(path, "SELECT payload FROM outbox ORDER BY seq"),
            (std::vector<std::string>{"1", "3", "4"}));
}

TEST(Outbox, GroupCommitBatchesWritesAndSaysWhenAFlushIsDue) {
  TempDir dir;
  OutboxLimits limits;
  limits.batch_messages = 100;
  limits.batch_interval = 50ms;
  Outbox box(dir.path("outbox.db"), limits);
  EXPECT_FALSE(box.flushDeadline());
  const auto t0 = Outbox::Clock::now();
  box.append("t", "x", 1, false);
  auto deadline = box.flushDeadline();
  ASSERT_TRUE(deadline);
  EXPECT_GE(*deadline, t0 + 50ms);
  EXPECT_FALSE(box.flushDue(t0));
  EXPECT_TRUE(box.flushDue(*deadline));
  for (int i = 0; i < 98; ++i) box.append("t", "x", 1, false);
  EXPECT_FALSE(box.flushDue(Outbox::Clock::now() - 1s)) << "99 pending, interval not over";
  box.append("t", "x", 1, false);
  EXPECT_TRUE(box.flushDue(Outbox::Clock::now() - 1s)) << "a full batch is due at once";
  box.flush();
  EXPECT_EQ(box.stats().commits, 1u) << "one transaction for the whole batch";
  EXPECT_EQ(box.stats().written, 100u);
  EXPECT_FALSE(box.flushDeadline());
}

// Everything acknowledged before the batch was due: the flush opens no transaction (under
// a live broker most flushes are like this).
TEST(Outbox, AFlushOfOnlyAcknowledgedMessagesWritesNothing) {
  TempDir dir;
  Outbox box(dir.path("outbox.db"), {});
  std::vector<std::uint64_t> seqs;
  for (int i = 0; i < 3; ++i) seqs.push_back(box.append("t", "x", 1, false));
  for (const auto seq : seqs) box.remove(seq);
  EXPECT_TRUE(box.hasPending());
  box.flush();
  EXPECT_FALSE(box.hasPending());
  EXPECT_FALSE(box.flushDeadline());
  EXPECT_EQ(box.stats().commits, 0u);
  EXPECT_EQ(box.stats().written, 0u);
  EXPECT_EQ(box.size(), 0u);
  // And the next batch still goes in as usual.
  box.append("t", "y", 1, false);
  box.flush();
  EXPECT_EQ(box.stats().commits, 1u);
  EXPECT_EQ(box.read(0, 10).size(), 1u);
}

TEST(Outbox, DropsTheOldestWhenFullAndCountsThem) {
  TempDir dir;
  const std::string path = dir.path("outbox.db");
  OutboxLimits limits;
  limits.max_messages = 10;
  {
    Outbox box(path, limits);
    for (int i = 0; i < 5; ++i) box.append("t", std::to_string(i), 1, false);
    box.flush();  // 0..4 in the file, 5..14 in memory
    for (int i = 5; i < 15; ++i) box.append("t", std::to_string(i), 1, false);
    EXPECT_EQ(box.size(), 10u);
    EXPECT_EQ(box.stats().dropped, 5u);
    auto msgs = all(box);
    ASSERT_EQ(msgs.size(), 10u);
    EXPECT_EQ(msgs.front().payload, "5");
    EXPECT_EQ(msgs.back().payload, "14");
    box.flush();
  }
  EXPECT_EQ(query(path, "SELECT count(*) FROM outbox"), std::vector<std::string>{"10"});
  EXPECT_EQ(query(path, "SELECT min(payload) FROM outbox"), std::vector<std::string>{"10"})
      << "text order; the oldest five are gone from the file";
}

TEST(Outbox, DropsTheOldestWhenOverTheByteBound) {
  TempDir dir;
  OutboxLimits limits;
  limits.max_bytes = 100;  // topic "t" + 29 bytes = 30 per message: three fit
  Outbox box(dir.path("outbox.db"), limits);
  for (int i = 0; i < 5; ++i) box.append("t", std::to_string(i) + std::string(28, 'x'), 1, false);
  EXPECT_EQ(box.size(), 3u);
  EXPECT_EQ(box.bytes(), 90u);
  EXPECT_EQ(box.stats().dropped, 2u);
  EXPECT_EQ(all(box).front().payload.front(), '2');
}

// Issue 17, finding 7: a message larger than max_bytes can never fit; it is refused alone
// (counted) instead of emptying the outbox on its way in.
TEST(Outbox, RefusesAMessageThatCanNeverFitAndKeepsTheRest) {
  TempDir dir;
  OutboxLimits limits;
  limits.max_bytes = 100;
  Outbox box(dir.path("outbox.db"), limits);
  box.append("t", "a", 1, false);
  box.append("t", "b", 1, false);
  EXPECT_EQ(box.append("t", std::string(200, 'x'), 1, false), 0u) << "refused: no seq";
  EXPECT_EQ(payloads(all(box)), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(box.stats().dropped, 0u);
  EXPECT_EQ(box.stats().too_large, 1u);
  EXPECT_EQ(box.append("t", "c", 1, false), 3u) << "seqs stay dense";
}

// Issue 17, finding 12: state files are the gateway's alone, whatever the umask.
TEST(Outbox, CreatesItsFilesReadableByTheOwnerOnly) {
  TempDir dir;
  const std::string path = dir.path("outbox.db");
  {
    Outbox box(path, OutboxLimits{});
    box.append("t", "a", 1, false);
    box.flush();
    for (const std::string& f : {path, path + "-wal"}) {
      ASSERT_TRUE(fs::exists(f)) << f;
      EXPECT_EQ(fs::status(f).permissions() & fs::perms::all,
                fs::perms::owner_read | fs::perms::owner_write)
          << f;
    }
  }
}

TEST(Outbox, ReopenKeepsUnsentMessagesInOrder) {
  TempDir dir;
  const std::string path = dir.path("outbox.db");
  std::uint64_t last = 0;
  {
    Outbox box(path, {});
    for (int i = 0; i < 10; ++i)
      last = box.append("t/" + std::to_string(i), std::to_string(i), 1, i % 2 == 0);
    box.flush();
    box.remove(1);
    box.remove(2);
    // Not flushed: the destructor writes the removals and these two.
    box.append("t/10", "10", 1, false);
    last = box.append("t/11", "11", 1, false);
  }
  Outbox box(path, {});
  auto msgs = all(box);
  ASSERT_EQ(msgs.size(), 10u);
  EXPECT_EQ(msgs.front().payload, "2");
  EXPECT_EQ(msgs.back().payload, "11");
  for (std::size_t i = 1; i < msgs.size(); ++i) EXPECT_LT(msgs[i - 1].seq, msgs[i].seq);
  EXPECT_TRUE(msgs.front().retain);
  EXPECT_GT(box.append("t", "new", 1, false), last) << "seq keeps growing after a reopen";
}

// A flush writes many rows per INSERT statement and the rest one by one: every field of
// every live row must come back, also across a reopen, whatever the batch's size.
TEST(Outbox, LargeFlushWritesEveryFieldOfEveryLiveMessage) {
  TempDir dir;
  const std::string path = dir.path("outbox.db");
  OutboxLimits limits;
  limits.batch_messages = 1000;  // one flush for all of them
  std::vector<OutboxMessage> expected;
  {
    Outbox box(path, limits);
    for (int i = 0; i < 101; ++i) {  // 3 statements of 32 and 5 single rows, minus removals
      const std::string corr = i % 3 == 0 ? "corr-" + std::to_string(i) : "";
      const std::string payload = std::string("p\0", 2) + std::to_string(i);
      const int qos = i % 2 == 0 ? 1 : 2;
      const std::uint64_t seq =
          box.append("t/" + std::to_string(i), payload, qos, i % 5 == 0, corr);
      if (i % 7 == 3) {
        box.remove(seq);  // acknowledged before the flush: never written
        continue;
      }
      expected.push_back(
          OutboxMessage{seq, "t/" + std::to_string(i), payload, qos, i % 5 == 0, corr, 0});
    }
    box.flush();
    EXPECT_EQ(box.stats().commits, 1u);
    EXPECT_EQ(box.stats().written, expected.size());
  }
  EXPECT_EQ(query(path, "SELECT count(*) FROM outbox"),
            std::vector<std::string>{std::to_string(expected.size())});
  Outbox box(path, limits);
  const auto msgs = all(box);
  ASSERT_EQ(msgs.size(), expected.size());
  for (std::size_t i = 0; i < msgs.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(msgs[i].seq, expected[i].seq);
    EXPECT_EQ(msgs[i].topic, expected[i].topic);
    EXPECT_EQ(msgs[i].payload, expected[i].payload);
    EXPECT_EQ(msgs[i].qos, expected[i].qos);
    EXPECT_EQ(msgs[i].retain, expected[i].retain);
    EXPECT_EQ(msgs[i].correlation_data, expected[i].correlation_data);
    EXPECT_GT(msgs[i].enqueued_at_ms, 0);
  }
}

// forEach shows the messages read() copies, across the file and memory, honours the limit
// and stops where the visitor says.
TEST(Outbox, ForEachVisitsInOrderAndStopsWhenAsked) {
  TempDir dir;
  Outbox box(dir.path("outbox.db"), {});
  for (int i = 0; i < 6; ++i) box.append("t/" + std::to_string(i), std::to_string(i), 1, false);
  box.flush();  // 1..6 in the file
  box.remove(2);
  for (int i = 6; i < 9; ++i) box.append("t/" + std::to_string(i), std::to_string(i), 1, false);
  box.remove(8);  // 7..9 in memory, 8 gone

  std::vector<std::string> seen;
  auto collect = [&](const coap2mqtt::gateway::OutboxMessageView& m) {
    seen.push_back(std::string(m.payload) + "@" + std::string(m.topic));
    return true;
  };
  EXPECT_EQ(box.forEach(0, 100, collect), 7u);
  EXPECT_EQ(seen, (std::vector<std::string>{"0@t/0", "2@t/2", "3@t/3", "4@t/4", "5@t/5", "6@t/6",
                                            "8@t/8"}));
  EXPECT_EQ(payloads(all(box)), (std::vector<std::string>{"0", "2", "3", "4", "5", "6", "8"}));

  seen.clear();
  EXPECT_EQ(box.forEach(4, 3, collect), 3u) << "limit across file and memory";
  EXPECT_EQ(seen, (std::vector<std::string>{"3@t/3", "4@t/4", "5@t/5"}));

  for (std::uint64_t from : {1u, 6u}) {  // stop inside the file's part, then in memory
    seen.clear();
    EXPECT_EQ(box.forEach(from, 100,
                          [&](const coap2mqtt::gateway::OutboxMessageView& m) {
                            seen.push_back(std::string(m.payload));
                            return seen.size() < 2;
                          }),
              2u);
    EXPECT_EQ(seen.size(), 2u);
  }
  // A visitor that throws leaves the outbox usable.
  EXPECT_THROW(box.forEach(0, 100,
                           [](const coap2mqtt::gateway::OutboxMessageView&) -> bool {
                             throw std::runtime_error("visitor");
                           }),
               std::runtime_error);
  EXPECT_EQ(all(box).size(), 7u);
  box.flush();
  EXPECT_EQ(all(box).size(), 7u);
}

// A flush that cannot write (here: the file's page bound; in the field: a full disk)
// keeps the live messages and lets go of the acknowledged ones, which would otherwise pile
// up in memory at the message rate; once there is room, the next flush writes them.
TEST(Outbox, AFailedFlushKeepsOnlyLiveMessagesAndTheNextOneWritesThem) {
  TempDir dir;
  const std::string path = dir.path("outbox.db");
  OutboxLimits limits;
  limits.max_file_bytes = 128 * 1024;  // 32 pages of 4 KiB: about 90 rows of 1 KB
  const std::string kilobyte(1000, 'x');
  auto box = std::make_unique<Outbox>(path, limits);
  box->append("t", "first", 1, false, {});
  box->flush();

  std::vector<std::string> live{"first"};
  std::vector<std::uint64_t> live_seqs;
  for (int i = 0; i < 400; ++i) {
    const std::string payload = std::to_string(1000 + i) + kilobyte;
    const std::uint64_t seq = box->append("t", payload, 1, false, {});
    if (i % 2 == 0) {
      live.push_back(payload);
      live_seqs.push_back(seq);
    } else {
      box->remove(seq);  // acknowledged before any flush could write it
    }
  }
  EXPECT_EQ(box->pendingCount(), 400u);
  try {
    box->flush();
    ADD_FAILURE() << "200 KB of live messages in a 128 KiB file";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("full"), std::string::npos) << e.what();
  }
  EXPECT_EQ(box->pendingCount(), 200u) << "only the live ones stay in memory";
  EXPECT_EQ(payloads(all(*box)), live);

  // Room again: the broker acknowledges the oldest 150 of them.
  for (int i = 0; i < 150; ++i) box->remove(live_seqs[std::size_t(i)]);
  live.erase(live.begin() + 1, live.begin() + 151);
  box->flush();
  EXPECT_EQ(box->pendingCount(), 0u);
  box.reset();
  Outbox reopened(path, limits);
  EXPECT_EQ(payloads(all(reopened)), live);
}

// On a full file, a flush that deletes acknowledged rows and inserts new ones fits when the
// deletes free their pages first.
TEST(Outbox, AFlushOnAFullFileDeletesBeforeItInserts) {
  TempDir dir;
  OutboxLimits limits;
  limits.max_file_bytes = 128 * 1024;
  const std::string kilobyte(1000, 'x');
  Outbox box(dir.path("outbox.db"), limits);
  std::vector<std::uint64_t> old;
  for (int i = 0; i < 60; ++i) old.push_back(box.append("t", "old" + kilobyte, 1, false, {}));
  box.flush();  // about two thirds of the bound
  for (std::uint64_t seq : old) box.remove(seq);
  for (int i = 0; i < 60; ++i) box.append("t", "new" + kilobyte, 1, false, {});
  EXPECT_NO_THROW(box.flush()) << "120 rows at once would not fit, 60 do";
  EXPECT_EQ(box.size(), 60u);
  EXPECT_EQ(box.stats().written, 120u);
}

// Two outboxes on one file would both send its messages: the second is refused, with a
// message that says why.
TEST(Outbox, ASecondOutboxOnTheSameFileIsRefused) {
  TempDir dir;
  const std::string path = dir.path("outbox.db");
  Outbox first(path, {});
  first.append("t", "x", 1, false);
  first.flush();
  try {
    Outbox second(path, {});
    ADD_FAILURE() << "opened a locked outbox";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("in use by another process"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(payloads(all(first)), std::vector<std::string>{"x"}) << "the first still works";
}

TEST(Outbox, ReopenWithSmallerBoundsDropsTheOldest) {
  TempDir dir;
  const std::string path = dir.path("outbox.db");
  {
    Outbox box(path, {});
    for (int i = 0; i < 20; ++i) box.append("t", std::to_string(i), 1, false);
  }
  OutboxLimits limits;
  limits.max_messages = 5;
  Outbox box(path, limits);
  EXPECT_EQ(box.size(), 5u);
  EXPECT_EQ(box.stats().dropped, 15u);
  EXPECT_EQ(all(box).front().payload, "15");
}

TEST(Outbox, RefusesAForeignDatabase) {
  TempDir dir;
  const std::string path = dir.path("other.db");
  {
    sqlite3* db = nullptr;
    sqlite3_open(path.c_str(), &db);
    sqlite3_exec(db, "CREATE TABLE t(x)", nullptr, nullptr, nullptr);
    sqlite3_close(db);
  }
  EXPECT_THROW(Outbox(path, {}), std::runtime_error);
  try {
    Outbox box(path, {});
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

// A child appends and flushes (and acknowledges old messages, like PUBACKs) as fast as it
// can and reports every commit through a pipe; it is SIGKILLed at an arbitrary point. The
// file must then pass integrity_check and hold one contiguous, ordered run of messages
// that includes everything the child reported as committed and not acknowledged.
TEST(Outbox, CrashConsistencyUnderSigkill) {
  for (int round = 0; round < 3; ++round) {
    TempDir dir;
    const std::string path = dir.path("outbox.db");
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      try {
        OutboxLimits limits;
        limits.max_messages = 1000000;
        Outbox box(path, limits);
        std::uint64_t n = 0;
        std::vector<std::uint64_t> seqs;
        for (;;) {
          for (int i = 0; i < 37; ++i) {
            seqs.push_back(box.append("crash/topic", std::to_string(n++), 1, false));
          }
          // Acknowledge in order, keeping the last 500 unacknowledged.
          while (seqs.size() > 500) {
            box.remove(seqs.front());
            seqs.erase(seqs.begin());
          }
          box.flush();
          // committed up to n-1; oldest unacknowledged value n - seqs.size()
          const std::uint64_t report[2] = {n - seqs.size(), n - 1};
          if (::write(fds[1], report, sizeof report) != sizeof report) ::_exit(3);
        }
      } catch (...) {
        ::_exit(2);
      }
    }
    ::close(fds[1]);
    std::uint64_t report[2] = {0, 0};
    std::uint64_t last[2] = {0, 0};  // oldest unacknowledged, last committed
    int reports = 0;
    const int stop_after = 50 + round * 97;
    while (reports < stop_after && ::read(fds[0], report, sizeof report) == sizeof report) {
      last[0] = report[0];
      last[1] = report[1];
      ++reports;
    }
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ::close(fds[0]);
    ASSERT_TRUE(WIFSIGNALED(status)) << "child exited early with " << WEXITSTATUS(status);
    ASSERT_EQ(reports, stop_after);

    EXPECT_EQ(query(path, "PRAGMA integrity_check"), std::vector<std::string>{"ok"});
    Outbox box(path, {});
    auto msgs = all(box);
    ASSERT_FALSE(msgs.empty());
    std::uint64_t first = std::stoull(msgs.front().payload);
    for (std::size_t i = 0; i < msgs.size(); ++i) {
      ASSERT_EQ(std::stoull(msgs[i].payload), first + i) << "gap, duplicate or reordering at " << i;
      if (i > 0) {
        ASSERT_LT(msgs[i - 1].seq, msgs[i].seq);
      }
    }
    const std::uint64_t stored_last = first + msgs.size() - 1;
    // The child may have gone on after its last report (the pipe buffers): later commits
    // may be there, but never fewer than the 500 it keeps unacknowledged.
    EXPECT_GE(stored_last, last[1]) << "a reported commit was lost";
    EXPECT_GE(msgs.size(), 500u);
    EXPECT_LE(first, stored_last);
  }
}

}  // namespace
