#include "gateway/command_queue.h"

#include <algorithm>

namespace coap2mqtt::gateway {

const char* toString(CommandOutcome::Kind kind) {
  switch (kind) {
    case CommandOutcome::Kind::Answered:
      return "answered";
    case CommandOutcome::Kind::Failed:
      return "failed";
    case CommandOutcome::Kind::TimedOut:
      return "timeout";
    case CommandOutcome::Kind::QueueFull:
      return "queue_full";
    case CommandOutcome::Kind::RateLimited:
      return "rate_limited";
    case CommandOutcome::Kind::Dropped:
      return "dropped";
  }
  return "?";
}

CommandQueue::CommandQueue(Io io) : io_(std::move(io)) {}

CommandQueue::~CommandQueue() {
  *alive_ = false;
  for (auto& [device, lane] : lanes_) {
    for (auto& c : lane.waiting) {
      if (c->deadline_timer != 0) io_.cancelTimer(c->deadline_timer);
    }
    if (lane.in_flight) {
      if (lane.in_flight->deadline_timer != 0) io_.cancelTimer(lane.in_flight->deadline_timer);
      if (lane.in_flight->exchange != 0) io_.cancel(lane.in_flight->exchange);
    }
  }
}

bool CommandQueue::takeToken(Lane& lane, const bridge::RateLimit& rate, TimePoint now) {
  const double capacity = rate.count;
  if (lane.tokens < 0) {
    lane.tokens = capacity;
  } else if (rate.period.count() > 0) {
    const double elapsed_ms =
        std::chrono::duration<double, std::milli>(now - lane.refilled).count();
    lane.tokens = std::min(
        capacity, lane.tokens + elapsed_ms * capacity / static_cast<double>(rate.period.count()));
  }
  lane.refilled = now;
  if (lane.tokens < 1.0) return false;
  lane.tokens -= 1.0;
  return true;
}

void CommandQueue::submit(CommandRequest request, const CommandLimits& limits, Done done) {
  ++stats_.submitted;
  const TimePoint now = io_.now();
  Lane& lane = lanes_[request.device];
  const std::size_t waiting = lane.waiting.size();
  if (lane.in_flight && waiting >= limits.queue) {
    ++stats_.queue_full;
    CommandOutcome out;
    out.kind = CommandOutcome::Kind::QueueFull;
    out.error =
        "queue full: " + std::to_string(waiting) + " command(s) already wait for " + request.device;
    done(out);
    return;
  }
  if (limits.rate && !takeToken(lane, *limits.rate, now)) {
    ++stats_.rate_limited;
    CommandOutcome out;
    out.kind = CommandOutcome::Kind::RateLimited;
    out.error = "rate limited: more than " + std::to_string(limits.rate->count) +
                " command(s) per " + std::to_string(limits.rate->period.count()) + " ms to " +
                request.device;
    done(out);
    return;
  }
  auto command = std::make_unique<Command>();
  command->id = next_id_++;
  command->request = std::move(request);
  command->done = std::move(done);
  command->submitted = now;
  command->timeout = limits.timeout;
  const std::string device = command->request.device;
  const std::uint64_t id = command->id;
  std::weak_ptr<bool> alive = alive_;
  command->deadline_timer = io_.runAfter(limits.timeout, [this, alive, device, id] {
    if (auto a = alive.lock(); a && *a) onDeadline(device, id);
  });
  lane.waiting.push_back(std::move(command));
  if (!lane.in_flight) startNext(device);
}

void CommandQueue::startNext(const std::string& device) {
  // A loop, not recursion: a reply that comes before send() returns (the CoAP side
  // refused at once) is finished by onReply(), and the next command is started here.
  for (;;) {
    auto it = lanes_.find(device);
    if (it == lanes_.end()) return;
    Lane& lane = it->second;
    if (lane.in_flight || lane.waiting.empty()) return;
    lane.in_flight = std::move(lane.waiting.front());
    lane.waiting.pop_front();
    const std::uint64_t id = lane.in_flight->id;
    std::weak_ptr<bool> alive = alive_;
    in_send_ = true;
    const std::uint64_t exchange =
        io_.send(lane.in_flight->request, [this, alive, device, id](const CommandReply& reply) {
          if (auto a = alive.lock(); a && *a) onReply(device, id, reply);
        });
    in_send_ = false;
    it = lanes_.find(device);
    if (it == lanes_.end()) return;
    if (!it->second.in_flight || it->second.in_flight->id != id) continue;  // answered at once
    if (exchange != 0) {
      it->second.in_flight->exchange = exchange;
      return;
    }
    CommandReply failed;
    failed.error = "cannot send the CoAP request";
    in_send_ = true;
    onReply(device, id, failed);
    in_send_ = false;
  }
}

void CommandQueue::onReply(const std::string& device, std::uint64_t id, const CommandReply& reply) {
  auto it = lanes_.find(device);
  if (it == lanes_.end() || !it->second.in_flight || it->second.in_flight->id != id) return;
  std::unique_ptr<Command> command = std::move(it->second.in_flight);
  if (command->abandoned) {
    // Its timeout result is out already; the device is free for the next one now.
    if (command->deadline_timer != 0) io_.cancelTimer(command->deadline_timer);
    if (!in_send_) startNext(device);
    return;
  }
  CommandOutcome out;
  out.sent = true;
  if (reply.answered) {
    ++stats_.answered;
    ++stats_.answered_by_code[reply.code];
    out.kind = CommandOutcome::Kind::Answered;
    out.reply = reply;
  } else {
    out.error = reply.error.empty() ? std::string("failed") : reply.error;
    // The CoAP layer's own request timeout is a timeout to the user too.
    if (out.error.rfind("timeout", 0) == 0) {
      ++stats_.timed_out;
      out.kind = CommandOutcome::Kind::TimedOut;
    } else {
      ++stats_.failed;
      out.kind = CommandOutcome::Kind::Failed;
    }
  }
  finish(std::move(command), std::move(out));
  if (!in_send_) startNext(device);
}

void CommandQueue::onDeadline(const std::string& device, std::uint64_t id) {
  auto it = lanes_.find(device);
  if (it == lanes_.end()) return;
  Lane& lane = it->second;
  CommandOutcome out;
  out.kind = CommandOutcome::Kind::TimedOut;
  if (lane.in_flight && lane.in_flight->id == id) {
    Command& command = *lane.in_flight;
    command.deadline_timer = 0;
    if (command.abandoned) {
      // The CoAP side never ended it (it normally does within its own request timeout):
      // give up on it for good.
      if (command.exchange != 0) io_.cancel(command.exchange);
      lane.in_flight.reset();
      startNext(device);
      return;
    }
    // The result says timeout now, but the exchange is left to end by itself: libcoap
    // keeps retransmitting a cancelled CON and, with NSTART=1, would hold the device's
    // next requests behind it; the CoAP layer's own request timeout instead starts the
    // device over on a fresh session (a DTLS device's session that lives is kept, and stops
    // holding requests behind the timed-out one: coap_link_keep.cpp). Until then the
    // device's lane stays busy, bounded by a second `timeout`.
    ++stats_.timed_out;
    out.sent = true;
    out.error = "timeout: no response from " + device;
    out.latency =
        std::chrono::duration_cast<std::chrono::milliseconds>(io_.now() - command.submitted);
    command.abandoned = true;
    Done done = std::move(command.done);
    std::weak_ptr<bool> alive = alive_;
    command.deadline_timer = io_.runAfter(command.timeout, [this, alive, device, id] {
      if (auto a = alive.lock(); a && *a) onDeadline(device, id);
    });
    done(out);
    return;
  }
  auto w = std::find_if(lane.waiting.begin(), lane.waiting.end(),
                        [id](const auto& c) { return c->id == id; });
  if (w == lane.waiting.end()) return;
  std::unique_ptr<Command> command = std::move(*w);
  lane.waiting.erase(w);
  command->deadline_timer = 0;
  ++stats_.timed_out;
  out.error = "timeout: still waiting behind earlier commands to " + device;
  finish(std::move(command), std::move(out));
}

void CommandQueue::finish(std::unique_ptr<Command> command, CommandOutcome outcome) {
  if (command->deadline_timer != 0) io_.cancelTimer(command->deadline_timer);
  outcome.latency =
      std::chrono::duration_cast<std::chrono::milliseconds>(io_.now() - command->submitted);
  command->done(outcome);
}

void CommandQueue::dropDevice(const std::string& device, const std::string& reason) {
  auto it = lanes_.find(device);
  if (it == lanes_.end()) return;
  Lane lane = std::move(it->second);
  lanes_.erase(it);
  std::vector<std::unique_ptr<Command>> gone;
  if (lane.in_flight) {
    if (lane.in_flight->exchange != 0) io_.cancel(lane.in_flight->exchange);
    gone.push_back(std::move(lane.in_flight));
  }
  for (auto& c : lane.waiting) gone.push_back(std::move(c));
  for (auto& c : gone) {
    if (c->abandoned) {
      if (c->deadline_timer != 0) io_.cancelTimer(c->deadline_timer);
      continue;  // its result is out already
    }
    CommandOutcome out;
    out.kind = CommandOutcome::Kind::Dropped;
    out.sent = c->exchange != 0;
    out.error = reason;
    finish(std::move(c), std::move(out));
  }
}

std::size_t CommandQueue::waiting(const std::string& device) const {
  auto it = lanes_.find(device);
  return it == lanes_.end() ? 0 : it->second.waiting.size();
}

bool CommandQueue::busy(const std::string& device) const {
  auto it = lanes_.find(device);
  return it != lanes_.end() && it->second.in_flight != nullptr;
}

}  // namespace coap2mqtt::gateway
