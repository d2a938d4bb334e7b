#pragma once
// Block-wise uploads to the gateway's own listeners put back together (RFC 7959 §2.5), so a
// handler (the RD, /ps) sees one whole body. Pure: no libcoap, the clock passed in.
//
// Bounds, since any host on the LAN can start uploads: at most `max_uploads` bodies in
// progress, each at most `max_body` bytes, each forgotten once it has been idle for
// `idle_timeout`. A body that would pass `max_body` is refused (4.13) as soon as that is
// known (from Size1, or from the blocks themselves) and nothing of it is kept.
#include <chrono>
#include <cstddef>
#include <map>
#include <string>
#include <string_view>

namespace coap2mqtt::gateway {

class Block1Assembly {
 public:
  using Clock = std::chrono::steady_clock;

  enum class Result {
    More,        // kept; ask for the next block (2.31 Continue)
    Complete,    // the last block: the whole body is in `*body`
    TooLarge,    // beyond max_body (4.13); forgotten
    Incomplete,  // a block that does not follow what is held, or no first block (4.08)
    Busy,        // max_uploads in progress already (5.03)
  };

  Block1Assembly(std::size_t max_body, std::size_t max_uploads, Clock::duration idle_timeout)
      : max_body_(max_body), max_uploads_(max_uploads), idle_timeout_(idle_timeout) {}

  // One block of the upload `key` (the peer and the resource): its byte offset in the body,
  // whether more follow (Block1's M bit), its data, and the Size1 the peer announced (0: none).
  Result add(const std::string& key, std::size_t offset, bool more, std::string_view data,
             std::size_t size1, Clock::time_point now, std::string* body);

  std::size_t uploads() const { return uploads_.size(); }

 private:
  struct Upload {
    std::string body;
    Clock::time_point last;
  };
  void forgetIdle(Clock::time_point now);

  const std::size_t max_body_;
  const std::size_t max_uploads_;
  const Clock::duration idle_timeout_;
  std::map<std::string, Upload> uploads_;
};

}  // namespace coap2mqtt::gateway
