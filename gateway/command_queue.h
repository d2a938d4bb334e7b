#pragma once
// Commands on their way to devices: one FIFO per device, one CoAP exchange at a time per
// device (NSTART=1, RFC 7252 §4.7), a bound on how many may wait, a token-bucket rate
// limit per device and a deadline per command. Pure logic: time, the CoAP exchange and
// timers come in through `Io`, so tests drive it with a fake clock.
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "bridge/command_plan.h"
#include "bridge/rules.h"

namespace coap2mqtt::gateway {

// A command as it goes to a device and how it is delivered: bridge::planCommand makes
// them from the command's [[command]] rule.
using bridge::CommandLimits;
using bridge::CommandRequest;

// What the CoAP side reports for one exchange.
struct CommandReply {
  bool answered = false;  // false: no response (timeout, RST, unknown device, ...)
  unsigned code = 0;      // class*100+detail, e.g. 204
  std::optional<unsigned> content_format;
  std::string payload;
  std::string error;  // when !answered
};

struct CommandOutcome {
  enum class Kind {
    Answered,     // the device responded (any code)
    Failed,       // the exchange failed without a response (`error` says why)
    TimedOut,     // the deadline passed, queued or in flight
    QueueFull,    // refused at once: `queue` commands already wait
    RateLimited,  // refused at once: the device's bucket is empty
    Dropped,      // the device was removed while the command waited
  };
  Kind kind = Kind::Failed;
  CommandReply reply;  // for Answered
  std::string error;   // for every other kind
  std::chrono::milliseconds latency{0};
  bool sent = false;  // a CoAP request went out for it
};

const char* toString(CommandOutcome::Kind kind);

class CommandQueue {
 public:
  using Clock = std::chrono::steady_clock;
  using TimePoint = Clock::time_point;
  using Done = std::function<void(const CommandOutcome&)>;
  using ReplyHandler = std::function<void(const CommandReply&)>;

  struct Io {
    std::function<TimePoint()> now;
    // Starts the exchange; calls `reply` once (possibly before returning) unless cancel()
    // comes first. Returns an id for cancel(), 0 when it failed at once.
    std::function<std::uint64_t(const CommandRequest&, ReplyHandler reply)> send;
    std::function<void(std::uint64_t)> cancel;
    std::function<std::uint64_t(std::chrono::milliseconds, std::function<void()>)> runAfter;
    std::function<void(std::uint64_t)> cancelTimer;
  };

  struct Stats {
    std::uint64_t submitted = 0;
    std::uint64_t answered = 0;
    std::uint64_t failed = 0;
    std::uint64_t timed_out = 0;
    std::uint64_t queue_full = 0;
    std::uint64_t rate_limited = 0;
    // answered, by the response code (class*100+detail, e.g. 204): at most 256 codes exist
    std::map<unsigned, std::uint64_t> answered_by_code;
  };

  explicit CommandQueue(Io io);
  ~CommandQueue();
  CommandQueue(const CommandQueue&) = delete;
  CommandQueue& operator=(const CommandQueue&) = delete;

  // `done` is called exactly once: at once for a refusal (queue full, rate limited), else
  // when the device answers, the exchange fails or the deadline (limits.timeout after
  // submit(), waiting included) passes. A command whose deadline passes in flight keeps
  // the device busy until its exchange ends (or another `timeout` passes; then it is
  // cancelled): the CoAP side may still be retransmitting it. The rate limit is a token bucket per
  // device of `rate.count` tokens refilled over `rate.period`, using the limits of each submit().
  void submit(CommandRequest request, const CommandLimits& limits, Done done);

  // The device is gone: every waiting or in-flight command of it ends as Dropped.
  void dropDevice(const std::string& device, const std::string& reason);

  std::size_t waiting(const std::string& device) const;  // queued, not counting in flight
  bool busy(const std::string& device) const;            // one in flight
  const Stats& stats() const { return stats_; }

 private:
  struct Command {
    std::uint64_t id = 0;
    CommandRequest request;
    Done done;
    TimePoint submitted;
    std::uint64_t deadline_timer = 0;
    std::uint64_t exchange = 0;  // CoAP request id while in flight
    std::chrono::milliseconds timeout{0};
    bool abandoned = false;  // timed out in flight: result published, exchange still open
  };
  struct Lane {
    std::deque<std::unique_ptr<Command>> waiting;
    std::unique_ptr<Command> in_flight;
    double tokens = -1;  // < 0: bucket not yet filled
    TimePoint refilled{};
  };

  bool takeToken(Lane& lane, const bridge::RateLimit& rate, TimePoint now);
  void startNext(const std::string& device);
  void onReply(const std::string& device, std::uint64_t id, const CommandReply& reply);
  void onDeadline(const std::string& device, std::uint64_t id);
  void finish(std::unique_ptr<Command> command, CommandOutcome outcome);

  Io io_;
  std::map<std::string, Lane, std::less<>> lanes_;
  std::uint64_t next_id_ = 1;
  bool in_send_ = false;  // inside Io::send: a synchronous reply must not start the next
  Stats stats_;
  // Handlers posted by the CoAP side may outlive us; they check this.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace coap2mqtt::gateway
