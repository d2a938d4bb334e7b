#include "gateway/block1_assembly.h"

#include <utility>

namespace coap2mqtt::gateway {

void Block1Assembly::forgetIdle(Clock::time_point now) {
  for (auto it = uploads_.begin(); it != uploads_.end();) {
    it = now - it->second.last >= idle_timeout_ ? uploads_.erase(it) : std::next(it);
  }
}

Block1Assembly::Result Block1Assembly::add(const std::string& key, std::size_t offset, bool more,
                                           std::string_view data, std::size_t size1,
                                           Clock::time_point now, std::string* body) {
  forgetIdle(now);
  auto it = uploads_.find(key);
  if (offset == 0) {
    // A first block starts the body again (the peer restarted its upload).
    if (it != uploads_.end()) uploads_.erase(it);
    if (size1 > max_body_ || data.size() > max_body_) return Result::TooLarge;
    if (!more) {
      body->assign(data);
      return Result::Complete;
    }
    if (uploads_.size() >= max_uploads_) return Result::Busy;
    Upload& u = uploads_[key];
    u.body.assign(data);
    u.last = now;
    return Result::More;
  }
  if (it == uploads_.end()) return Result::Incomplete;
  Upload& u = it->second;
  if (offset < u.body.size() && offset + data.size() <= u.body.size()) {
    // A block we hold already (its ACK was lost and it came again): ask for what follows.
    u.last = now;
    return Result::More;
  }
  if (offset != u.body.size()) {
    uploads_.erase(it);
    return Result::Incomplete;
  }
  if (size1 > max_body_ || u.body.size() + data.size() > max_body_) {
    uploads_.erase(it);
    return Result::TooLarge;
  }
  u.body.append(data);
  u.last = now;
  if (more) return Result::More;
  *body = std::move(u.body);
  uploads_.erase(it);
  return Result::Complete;
}

}  // namespace coap2mqtt::gateway
