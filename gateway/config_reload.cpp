#include "gateway/config_reload.h"

#include <algorithm>
#include <string_view>

namespace coap2mqtt::gateway {

// Every comparison below starts with a structured binding naming every field of the
// struct it compares. A field added to one of these structs stops this file compiling
// ("N names provided for structured binding ... decomposes into M elements") until it is
// compared here, or said here to be applied by a reload, and its name is added.

namespace {

// The keys of changed settings, in the order they are compared, each once.
class Changes {
 public:
  template <class T>
  void compare(std::string_view key, const T& running, const T& fresh) {
    if (!(running == fresh)) add(key);
  }
  void add(std::string_view key) {
    if (std::find(keys_.begin(), keys_.end(), key) == keys_.end()) keys_.emplace_back(key);
  }
  std::vector<std::string> take() { return std::move(keys_); }

 private:
  std::vector<std::string> keys_;
};

void compareDiscovery(Changes& c, const DiscoveryConfig& a, const DiscoveryConfig& b) {
  [[maybe_unused]] const auto& [multicast, interfaces, port, interval, window, query] = a;
  c.compare("coap.discovery.multicast", a.multicast, b.multicast);
  c.compare("coap.discovery.interfaces", a.interfaces, b.interfaces);
  c.compare("coap.discovery.port", a.port, b.port);
  c.compare("coap.discovery.interval", a.interval, b.interval);
  c.compare("coap.discovery.window", a.window, b.window);
  c.compare("coap.discovery.query", a.query, b.query);
}

void compareLimits(Changes& c, const CoapLimits& a, const CoapLimits& b) {
  [[maybe_unused]] const auto& [max_devices, max_devices_per_host, max_answers_per_round,
                                max_sessions] = a;
  c.compare("coap.limits.max_devices", a.max_devices, b.max_devices);
  c.compare("coap.limits.max_devices_per_host", a.max_devices_per_host, b.max_devices_per_host);
  c.compare("coap.limits.max_answers_per_round", a.max_answers_per_round, b.max_answers_per_round);
  c.compare("coap.limits.max_sessions", a.max_sessions, b.max_sessions);
}

void compareCoap(Changes& c, const CoapConfig& a, const CoapConfig& b) {
  [[maybe_unused]] const auto& [listen, psk_clients, listen_pki, cert_clients, credentials,
                                request_timeout, retry_interval, offline_after, resource_directory,
                                ack_timeout, ack_random_factor, max_retransmit, discovery, limits,
                                pubsub] = a;
  c.compare("coap.listen", a.listen, b.listen);
  // Keys included, reported by the key of the table only.
  c.compare("coap.psk_client", a.psk_clients, b.psk_clients);
  c.compare("coap.listen_pki", a.listen_pki, b.listen_pki);
  c.compare("coap.cert_client", a.cert_clients, b.cert_clients);
  c.compare("coap.credentials", a.credentials, b.credentials);
  c.compare("coap.request_timeout", a.request_timeout, b.request_timeout);
  c.compare("coap.retry_interval", a.retry_interval, b.retry_interval);
  c.compare("coap.offline_after", a.offline_after, b.offline_after);
  c.compare("coap.resource_directory", a.resource_directory, b.resource_directory);
  c.compare("coap.ack_timeout", a.ack_timeout, b.ack_timeout);
  c.compare("coap.ack_random_factor", a.ack_random_factor, b.ack_random_factor);
  c.compare("coap.max_retransmit", a.max_retransmit, b.max_retransmit);
  compareDiscovery(c, a.discovery, b.discovery);
  compareLimits(c, a.limits, b.limits);
  c.compare("coap.ps_root", a.pubsub.root, b.pubsub.root);
  c.compare("coap.ps_max_payload", a.pubsub.max_payload, b.pubsub.max_payload);
  c.compare("coap.ps_queue", a.pubsub.queue, b.pubsub.queue);
  c.compare("coap.ps_queue_expiry", a.pubsub.queue_expiry, b.pubsub.queue_expiry);
}

bool sameDevice(const StaticDevice& a, const StaticDevice& b) {
  [[maybe_unused]] const auto& [name, uri, psk, pki] = a;
  // A new key (or key file, or identity) is a changed device too, named by the device only.
  return a.name == b.name && a.uri == b.uri && a.psk == b.psk && a.pki == b.pki;
}

// "coap.device[<name>]" for each static device removed or changed, then each one added.
// Only the order of the [[coap.device]] tables changing is no change.
void compareDevices(Changes& c, const std::vector<StaticDevice>& running,
                    const std::vector<StaticDevice>& fresh) {
  const auto find = [](const std::vector<StaticDevice>& in,
                       const std::string& name) -> const StaticDevice* {
    const auto it =
        std::find_if(in.begin(), in.end(), [&](const StaticDevice& d) { return d.name == name; });
    return it == in.end() ? nullptr : &*it;
  };
  for (const StaticDevice& d : running) {
    const StaticDevice* now = find(fresh, d.name);
    if (now == nullptr || !sameDevice(d, *now)) c.add("coap.device[" + d.name + "]");
  }
  for (const StaticDevice& d : fresh) {
    if (find(running, d.name) == nullptr) c.add("coap.device[" + d.name + "]");
  }
}

void compareTls(Changes& c, const MqttTlsConfig& a, const MqttTlsConfig& b) {
  [[maybe_unused]] const auto& [ca_file, cert_file, key_file, verify, alpn] = a;
  c.compare("mqtt.tls.ca_file", a.ca_file, b.ca_file);
  c.compare("mqtt.tls.cert_file", a.cert_file, b.cert_file);
  c.compare("mqtt.tls.key_file", a.key_file, b.key_file);
  c.compare("mqtt.tls.verify", a.verify, b.verify);
  c.compare("mqtt.tls.alpn", a.alpn, b.alpn);
}

void compareBuffer(Changes& c, const MqttBufferConfig& a, const MqttBufferConfig& b) {
  [[maybe_unused]] const auto& [max_messages, max_bytes, qos0_messages] = a;
  c.compare("mqtt.buffer.max_messages", a.max_messages, b.max_messages);
  c.compare("mqtt.buffer.max_bytes", a.max_bytes, b.max_bytes);
  c.compare("mqtt.buffer.qos0_messages", a.qos0_messages, b.qos0_messages);
}

void compareMqtt(Changes& c, const MqttConfig& a, const MqttConfig& b) {
  [[maybe_unused]] const auto& [uri, client_id, base_topic, username, password_file, password,
                                keepalive, protocol, clean_session, session_expiry, max_inflight,
                                reconnect_max, tls, buffer] = a;
  c.compare("mqtt.uri", a.uri, b.uri);
  c.compare("mqtt.client_id", a.client_id, b.client_id);
  c.compare("mqtt.base_topic", a.base_topic, b.base_topic);
  c.compare("mqtt.username", a.username, b.username);
  c.compare("mqtt.password_file", a.password_file, b.password_file);
  // The password itself is a secret: reported under the key of the file it comes from.
  c.compare("mqtt.password_file", a.password, b.password);
  c.compare("mqtt.keepalive", a.keepalive, b.keepalive);
  c.compare("mqtt.protocol", a.protocol, b.protocol);
  c.compare("mqtt.clean_session", a.clean_session, b.clean_session);
  c.compare("mqtt.session_expiry", a.session_expiry, b.session_expiry);
  c.compare("mqtt.max_inflight", a.max_inflight, b.max_inflight);
  c.compare("mqtt.reconnect_max", a.reconnect_max, b.reconnect_max);
  compareTls(c, a.tls, b.tls);
  compareBuffer(c, a.buffer, b.buffer);
}

}  // namespace

std::vector<std::string> restartRequired(const GatewayConfig& running, const GatewayConfig& fresh) {
  [[maybe_unused]] const auto& [file, name, state_dir, rule_globs, log_level, coap, devices, mqtt,
                                admin, metrics, web, rules] = running;
  // Not compared: `file` (a reload loads the same file), and what a reload applies:
  // `rules`, made from the rule files `rule_globs` names (expanded again on every reload)
  // and from gateway.toml's own [[rule]] and [[command]] tables.
  Changes c;
  c.compare("gateway.name", running.name, fresh.name);
  c.compare("gateway.state_dir", running.state_dir, fresh.state_dir);
  c.compare("gateway.log_level", running.log_level, fresh.log_level);
  compareCoap(c, running.coap, fresh.coap);
  compareDevices(c, running.devices, fresh.devices);
  compareMqtt(c, running.mqtt, fresh.mqtt);
  c.compare("admin.enabled", running.admin.enabled, fresh.admin.enabled);
  c.compare("admin.allow", running.admin.allow, fresh.admin.allow);
  // The HTTP listener is bound once at start; moving it needs a restart.
  c.compare("metrics.listen", running.metrics.listen, fresh.metrics.listen);
  c.compare("web.listen", running.web.listen, fresh.web.listen);
  c.compare("web.token_file", running.web.token_file, fresh.web.token_file);
  return c.take();
}

}  // namespace coap2mqtt::gateway
