#include "gateway/web_events.h"

#include <algorithm>

namespace coap2mqtt::gateway {

std::string WebEventHub::Client::next(std::chrono::milliseconds wait) {
  std::unique_lock<std::mutex> lock(mutex_);
  ready_.wait_for(lock, wait, [this] { return !queue_.empty() || closed_; });
  std::string out;
  for (const auto& event : queue_) out += *event;
  queue_.clear();
  return out;
}

bool WebEventHub::Client::closed() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return closed_;
}

std::uint64_t WebEventHub::Client::dropped() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return dropped_;
}

bool WebEventHub::Client::push(const std::shared_ptr<const std::string>& event,
                               std::uint64_t* dropped_now) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return false;
    if (queue_.size() >= max_queued_) {
      queue_.pop_front();
      ++dropped_;
      ++*dropped_now;
    }
    queue_.push_back(event);
  }
  ready_.notify_one();
  return true;
}

void WebEventHub::Client::close() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    closed_ = true;
    queue_.clear();
  }
  ready_.notify_all();
}

std::shared_ptr<WebEventHub::Client> WebEventHub::connect() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (clients_.size() >= max_clients_) {
    ++counters_.refused;
    return nullptr;
  }
  clients_.push_back(std::make_shared<Client>(max_queued_));
  return clients_.back();
}

void WebEventHub::disconnect(const std::shared_ptr<Client>& client) {
  if (!client) return;
  client->close();
  std::lock_guard<std::mutex> lock(mutex_);
  clients_.erase(std::remove(clients_.begin(), clients_.end(), client), clients_.end());
}

std::string WebEventHub::format(const std::string& type, const std::string& json) {
  return "event: " + type + "\ndata: " + json + "\n\n";
}

void WebEventHub::publish(const std::string& type, const std::string& json) {
  const auto event = std::make_shared<const std::string>(format(type, json));
  std::lock_guard<std::mutex> lock(mutex_);
  ++counters_.published;
  // A client's own mutex is held only while its queue is read or appended: never long.
  for (const auto& client : clients_) client->push(event, &counters_.dropped);
}

bool WebEventHub::hasClients() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return !clients_.empty();
}

void WebEventHub::closeAll() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& client : clients_) client->close();
  clients_.clear();
}

WebEventHub::Counters WebEventHub::counters() const {
  std::lock_guard<std::mutex> lock(mutex_);
  Counters c = counters_;
  c.clients = clients_.size();
  return c;
}

}  // namespace coap2mqtt::gateway
