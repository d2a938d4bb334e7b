#pragma once
// The web page's live stream (issue 22): the loop thread publishes Server-Sent Events; each
// connected browser has a bounded queue its HTTP thread drains. Publishing never blocks and
// never allocates more than the bounds: a browser that does not read loses its oldest
// events (counted), and the loop goes on at full speed. No sockets here (unit-tested).
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace coap2mqtt::gateway {

class WebEventHub {
 public:
  // One browser's stream. Its HTTP thread calls next(); the loop thread never waits on it.
  class Client {
   public:
    explicit Client(std::size_t max_queued) : max_queued_(max_queued) {}
    // Takes what is queued (several events in one string), waiting up to `wait` for one.
    // Empty: nothing came in time, or the hub closed the client (then closed() is true).
    std::string next(std::chrono::milliseconds wait);
    bool closed() const;
    std::uint64_t dropped() const;  // events this client lost, oldest first

   private:
    friend class WebEventHub;
    // False when the client is closed.
    bool push(const std::shared_ptr<const std::string>& event, std::uint64_t* dropped_now);
    void close();

    const std::size_t max_queued_;
    mutable std::mutex mutex_;
    std::condition_variable ready_;
    std::deque<std::shared_ptr<const std::string>> queue_;
    std::uint64_t dropped_ = 0;
    bool closed_ = false;
  };

  struct Counters {
    std::uint64_t published = 0;  // events offered to the clients
    std::uint64_t dropped = 0;    // events clients lost because they did not read
    std::uint64_t refused = 0;    // streams refused: max_clients already connected
    std::size_t clients = 0;
  };

  // At most `max_clients` streams at once, each holding at most `max_queued` events.
  WebEventHub(std::size_t max_clients, std::size_t max_queued)
      : max_clients_(max_clients), max_queued_(max_queued) {}

  // Any thread. nullptr when max_clients streams are open.
  std::shared_ptr<Client> connect();
  // Any thread. The stream ended (the browser went away).
  void disconnect(const std::shared_ptr<Client>& client);
  // Loop thread: one SSE event ("event: <type>\ndata: <json>\n\n") for every client.
  void publish(const std::string& type, const std::string& json);
  // Loop thread: whether anyone listens (publishers skip building events otherwise).
  bool hasClients() const;
  // Closes every stream (stop()).
  void closeAll();
  Counters counters() const;

  // "event: <type>\ndata: <json>\n\n" (`json` must be one line, as nlohmann's dump() is).
  static std::string format(const std::string& type, const std::string& json);

 private:
  const std::size_t max_clients_;
  const std::size_t max_queued_;
  mutable std::mutex mutex_;
  std::vector<std::shared_ptr<Client>> clients_;
  Counters counters_;
};

}  // namespace coap2mqtt::gateway
