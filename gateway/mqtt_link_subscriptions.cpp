// MqttLink: our subscriptions. Renewed on every connect; with a persistent session
// (clean_session = false) also remembered on disk, so that a filter the configuration
// dropped is unsubscribed from the broker's session on the next connect.
#include <algorithm>
#include <filesystem>
#include <fstream>

#include <spdlog/spdlog.h>

#include "gateway/mqtt_link_internal.h"

namespace coap2mqtt::gateway {

void MqttLink::Impl::setSubscriptionsFile(std::string path) {
  subscriptions_file_ = std::move(path);
  if (config_.clean_session) return;  // nothing outlives a connection
  std::ifstream in(subscriptions_file_);
  for (std::string filter; std::getline(in, filter);) {
    if (!filter.empty()) stale_filters_.insert(filter);
  }
}

void MqttLink::Impl::rememberSubscriptions() {
  if (config_.clean_session || subscriptions_file_.empty()) return;
  // What the broker's session may hold: ours, and what is still to be unsubscribed.
  const std::string tmp = subscriptions_file_ + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    for (const auto& [filter, qos] : subscriptions_) out << filter << '\n';
    for (const auto& filter : stale_filters_) out << filter << '\n';
    if (!out.flush()) {
      spdlog::warn(
          "mqtt: cannot write {}: a filter dropped before a restart may stay "
          "subscribed in the broker's session",
          tmp);
      return;
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, subscriptions_file_, ec);
}

void MqttLink::Impl::renewSubscriptions() {
  // A persistent session keeps what we subscribed before (also in an earlier run): drop
  // what the configuration no longer asks for.
  for (auto it = stale_filters_.begin(); it != stale_filters_.end();) {
    const bool wanted = std::any_of(subscriptions_.begin(), subscriptions_.end(),
                                    [&](const auto& s) { return s.first == *it; });
    try {
      if (!wanted) client_->unsubscribe(*it);
      it = stale_filters_.erase(it);
    } catch (const mqtt::exception& e) {
      spdlog::warn("mqtt: unsubscribe {} failed: {}; trying again on the next connect", *it,
                   e.what());
      ++it;
    }
  }
  for (const auto& [filter, qos] : subscriptions_) {
    try {
      // MQTT 5: no_local, so commands we publish ourselves do not come back to us.
      client_->subscribe(filter, qos,
                         mqtt::subscribe_options(config_.protocol == MqttProtocol::V5));
    } catch (const mqtt::exception& e) {
      spdlog::error("mqtt: subscribe {} failed: {}", filter, e.what());
    }
  }
  rememberSubscriptions();
}

void MqttLink::Impl::subscribe(const std::string& filter, int qos) {
  subscriptions_.emplace_back(filter, qos);
  rememberSubscriptions();
  if (!connected_) return;  // renewed on connect
  try {
    client_->subscribe(filter, qos, mqtt::subscribe_options(config_.protocol == MqttProtocol::V5));
  } catch (const mqtt::exception& e) {
    spdlog::error("mqtt: subscribe {} failed: {}", filter, e.what());
  }
}

void MqttLink::Impl::unsubscribeAll() {
  for (const auto& [filter, qos] : subscriptions_) {
    bool done = false;
    if (connected_) {
      try {
        client_->unsubscribe(filter);
        done = true;
      } catch (const mqtt::exception&) {
        // Not connected any more: see below.
      }
    }
    // A clean session forgets it with the connection; a persistent one keeps it until we
    // unsubscribe on the next connect.
    if (!done && !config_.clean_session) stale_filters_.insert(filter);
  }
  subscriptions_.clear();
  rememberSubscriptions();
}

}  // namespace coap2mqtt::gateway
