#pragma once
// Which libcoap context a device's sessions live in. libcoap 4.3.1 ends every batch of
// datagrams it reads (coap_io_do_epoll) with coap_io_prepare_epoll, a walk of every session
// of that context (~23 ns each here), and matches each incoming ACK or RST against the
// context's retransmission queue from its start. With every device in one context a
// notification from one of 4,000 devices cost a walk of 4,000 sessions (issue 21). So the
// devices' client sessions are spread over client-only contexts ("shards") of at most
// `per_shard` devices each: a batch costs a walk of its shard only, whatever the number of
// devices. The gateway's own listeners and resources stay in a context of their own.
//
// A device keeps its shard for life (its sessions, renewals and probes: a session never
// moves between contexts); removing it frees its slot for the next device. Shards are
// made as devices come and kept when they empty (a context with no session costs two file
// descriptors and its DTLS context, and a discarded session may still be finishing in it).
// Pure bookkeeping; CoapLink makes the contexts.
#include <algorithm>
#include <cstddef>
#include <stdexcept>
#include <vector>

namespace coap2mqtt::gateway {

// Devices per shard. A batch's walk costs ~23 ns per session of its shard: 128 devices
// make it ~3 us, against 60-70 us of CPU per message at 1,000 msg/s on the bench machine
// (2026-12-04). A shard costs a context of its own: 1.0-1.5 MB more peak RSS for the 32
// shards of 4,000 devices (30-47 KB each, with its OpenSSL contexts; under 0.4 KB per
// device beside ~9.5 KB of heap per device); 64 would double that to save ~1.5 us a batch.
inline constexpr std::size_t kDevicesPerShard = 128;

class CoapShardSlots {
 public:
  explicit CoapShardSlots(std::size_t per_shard)
      : per_shard_(std::max<std::size_t>(per_shard, 1)) {}

  // The shard a new device goes to: the first with a free slot, so that emptied slots are
  // reused before a shard is added; shards() when every shard is full (a new one).
  std::size_t pick() const {
    for (std::size_t i = first_free_; i < used_.size(); ++i) {
      if (used_[i] < per_shard_) return i;
    }
    return used_.size();
  }

  // Takes a slot in `shard` (pick()'s answer; shards() adds the shard).
  void take(std::size_t shard) {
    if (shard == used_.size()) used_.push_back(0);
    if (shard >= used_.size() || used_[shard] >= per_shard_) {
      throw std::logic_error("CoapShardSlots: no free slot in that shard");
    }
    ++used_[shard];
    while (first_free_ < used_.size() && used_[first_free_] >= per_shard_) ++first_free_;
  }

  void release(std::size_t shard) {
    if (shard >= used_.size() || used_[shard] == 0) {
      throw std::logic_error("CoapShardSlots: release of a slot never taken");
    }
    --used_[shard];
    first_free_ = std::min(first_free_, shard);
  }

  std::size_t shards() const { return used_.size(); }
  std::size_t devices(std::size_t shard) const { return shard < used_.size() ? used_[shard] : 0; }
  std::size_t perShard() const { return per_shard_; }

 private:
  std::size_t per_shard_;
  std::vector<std::size_t> used_;  // devices per shard
  std::size_t first_free_ = 0;     // no shard before it has a free slot
};

}  // namespace coap2mqtt::gateway
