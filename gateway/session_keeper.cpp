#include "gateway/session_keeper.h"

#include <algorithm>
#include <utility>

namespace coap2mqtt::gateway {

SessionKeeper::Timeout SessionKeeper::timedOut(Token token, Clock::time_point until) {
  if (abandoned_.count(token) == 0 && abandoned_.size() >= kMaxAbandoned) return Timeout::Renew;
  Abandoned& a = abandoned_[token];
  a.until = std::max(a.until, until);
  a.awaiting_verdict = true;
  if (probing_) return Timeout::Joined;
  probing_ = true;
  return Timeout::Probe;
}

std::vector<SessionKeeper::Token> SessionKeeper::kept() {
  probing_ = false;
  std::vector<Token> out;
  for (auto& [token, a] : abandoned_) {
    if (!a.awaiting_verdict) continue;
    a.awaiting_verdict = false;
    out.push_back(token);
  }
  return out;
}

std::vector<SessionKeeper::Token> SessionKeeper::reset() {
  probing_ = false;
  std::vector<Token> out;
  out.reserve(abandoned_.size());
  for (const auto& entry : abandoned_) out.push_back(entry.first);
  abandoned_.clear();
  return out;
}

bool SessionKeeper::settle(Token token) {
  return abandoned_.erase(token) != 0;
}

std::vector<SessionKeeper::Token> SessionKeeper::expire(Clock::time_point now) {
  std::vector<Token> out;
  for (auto it = abandoned_.begin(); it != abandoned_.end();) {
    // One still awaiting the probe's verdict stays: the verdict reports it.
    if (it->second.until <= now && !it->second.awaiting_verdict) {
      out.push_back(it->first);
      it = abandoned_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

std::optional<SessionKeeper::Clock::time_point> SessionKeeper::nextExpiry() const {
  std::optional<Clock::time_point> next;
  for (const auto& [token, a] : abandoned_) {
    if (a.awaiting_verdict) continue;
    if (!next || a.until < *next) next = a.until;
  }
  return next;
}

bool SessionKeeper::awaitingVerdict(Token token) const {
  auto it = abandoned_.find(token);
  return it != abandoned_.end() && it->second.awaiting_verdict;
}

}  // namespace coap2mqtt::gateway
