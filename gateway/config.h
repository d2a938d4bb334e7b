#pragma once
// gateway.toml: the daemon's own settings plus the rules it loads.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bridge/rules.h"

namespace coap2mqtt::gateway {

// DTLS with a pre-shared key (`psk = { identity, key_file }` of a [[coap.device]]).
struct PskCredentials {
  std::string identity;  // sent in the clear in the handshake: not a secret
  std::string key_file;  // resolved path (a systemd credential first, see resolveSecretPath)
  std::string key;       // the key's bytes, read from key_file at load; a secret: never logged
  bool operator==(const PskCredentials& o) const {
    return identity == o.identity && key_file == o.key_file && key == o.key;
  }
};

// DTLS with certificates (`pki = { ca_file, cert_file, key_file }` of a [[coap.device]]):
// the device's certificate must chain to ca_file, be valid now and, unless check_name is
// false, name the URI's host (DNS SAN or CN); cert_file and key_file are ours.
struct PkiCredentials {
  std::string ca_file;  // resolved paths
  std::string cert_file;
  std::string key_file;  // a secret (its content is never read by us, only by OpenSSL)
  bool check_name = true;
  bool operator==(const PkiCredentials& o) const {
    return ca_file == o.ca_file && cert_file == o.cert_file && key_file == o.key_file &&
           check_name == o.check_name;
  }
};

// What a coaps:// device is reached with: one of the two.
struct DtlsCredentials {
  std::optional<PskCredentials> psk;
  std::optional<PkiCredentials> pki;
  bool any() const { return psk.has_value() || pki.has_value(); }
};

// [[coap.psk_client]]: a DTLS client of our coaps:// listeners (a device registering in the
// Resource Directory), known by its PSK identity.
struct PskClient {
  std::string identity;
  std::string key_file;  // resolved path
  std::string key;       // a secret: never logged
  // RD endpoint names (globs) this identity may register, update and delete; default: the
  // identity itself.
  std::vector<std::string> endpoints;
  bool operator==(const PskClient& o) const {
    return identity == o.identity && key_file == o.key_file && key == o.key &&
           endpoints == o.endpoints;
  }
};

// [[coap.cert_client]]: a DTLS client of our coaps:// listeners that proves itself with a
// certificate (chained to [coap].listen_pki's CA), known by the name in it (a DNS SAN, else
// the subject's CN).
struct CertClient {
  std::string name;
  // RD endpoint names (globs) it may register, update and delete; default: [name].
  std::vector<std::string> endpoints;
  bool operator==(const CertClient& o) const { return name == o.name && endpoints == o.endpoints; }
};

// [[coap.credentials]]: how devices found by multicast or registered in the Resource
// Directory are reached over DTLS, chosen by globs on their name and address; the first
// entry that matches wins. Such a device is reached on coaps:// (port 5684, or `port`, or
// the port of a coaps:// RD base).
struct CredentialsRule {
  std::string device = "*";           // glob on the device's name
  std::string address = "*";          // glob on its host (an IP address, IPv6 without brackets)
  std::optional<std::uint16_t> port;  // its DTLS port when its URI is coap://
  std::optional<PskCredentials> psk;  // exactly one of psk and pki
  std::optional<PkiCredentials> pki;
  DtlsCredentials credentials() const { return DtlsCredentials{psk, pki}; }
  bool operator==(const CredentialsRule& o) const {
    return device == o.device && address == o.address && port == o.port && psk == o.psk &&
           pki == o.pki;
  }
};

struct StaticDevice {
  std::string name;                   // [a-zA-Z0-9_.-]+, unique; used as a topic level
  std::string uri;                    // coap://host[:port], or coaps://host[:port] (DTLS, with psk)
  std::optional<PskCredentials> psk;  // coaps:// needs exactly one of psk and pki
  std::optional<PkiCredentials> pki;
  DtlsCredentials credentials() const { return DtlsCredentials{psk, pki}; }
};

enum class MqttProtocol { V311, V5 };

// [mqtt.tls]: used with mqtts://, ssl:// and wss:// URIs (and only with them).
struct MqttTlsConfig {
  std::string ca_file;            // PEM CA certificate(s) to trust; empty = the system's store
  std::string cert_file;          // PEM client certificate (with key_file), for brokers that ask
  std::string key_file;           // PEM private key of cert_file (unencrypted)
  bool verify = true;             // check the broker's certificate chain and host name
  std::vector<std::string> alpn;  // ALPN protocols to offer, e.g. ["mqtt"]; empty = none
};

// [mqtt.buffer]: what is kept while the broker is away.
struct MqttBufferConfig {
  // QoS >= 1: on disk (<state_dir>/outbox.db) until the broker acknowledges them. When a
  // bound is reached the oldest are dropped (counted and logged).
  std::size_t max_messages = 100000;
  std::size_t max_bytes = std::size_t{64} * 1024 * 1024;  // topic + payload bytes
  // QoS 0: in memory only, while disconnected; the oldest are dropped when full.
  std::size_t qos0_messages = 1000;
};

// MQTT 5's Session Expiry Interval that means "never" (§3.1.2.11.2).
inline constexpr std::chrono::seconds kSessionNeverExpires{0xFFFFFFFFu};

struct MqttConfig {
  // mqtt://, tcp:// (plain), mqtts://, ssl:// (TLS), ws://, wss:// (WebSocket, paho's own).
  std::string uri = "mqtt://127.0.0.1:1883";
  std::string client_id;                 // default "coap2mqtt-<gateway.name>"
  std::string base_topic = "coap2mqtt";  // no wildcards, no empty levels
  std::string username;
  std::string password_file;  // path; relative to the config file's folder
  std::string password;       // read from password_file at load; never logged
  std::chrono::seconds keepalive{30};
  MqttProtocol protocol = MqttProtocol::V311;
  // true: the broker forgets our session on every connect (MQTT 5: clean start). Safe
  // because unacknowledged messages live in our outbox, not in the broker's session.
  bool clean_session = true;
  // MQTT 5 only: how long the broker keeps our session (subscriptions, QoS >= 1 commands
  // queued for us) after the connection ends. Unset: 0 with a clean session, else never
  // (kSessionNeverExpires), which is what a 3.1.1 session without clean_session does.
  std::optional<std::chrono::seconds> session_expiry;
  std::size_t max_inflight = 100;  // QoS >= 1 messages sent and not yet acknowledged
  std::chrono::milliseconds reconnect_max{std::chrono::seconds(30)};  // back-off ceiling
  MqttTlsConfig tls;
  MqttBufferConfig buffer;
};

struct DiscoveryConfig {
  // All-CoAP-Nodes groups to ask; empty = no multicast discovery (static/RD devices only).
  std::vector<std::string> multicast;   // e.g. "224.0.1.187", "ff02::fd", "ff05::fd"
  std::vector<std::string> interfaces;  // names; empty = the kernel's choice (IPv4 only)
  std::uint16_t port = 5683;            // where devices listen
  std::chrono::milliseconds interval{std::chrono::minutes(5)};  // between rounds
  // How long answers are collected: devices wait up to 5 s (leisure) before answering.
  std::chrono::milliseconds window{std::chrono::seconds(6)};
  std::string query;  // Uri-Query filter, e.g. "rt=temperature*"; empty = none
};

// [coap.limits]: how much outside peers can make the gateway hold (issue 17). Configured
// devices are always bridged and count towards max_devices; discovered and registered ones
// beyond a bound are refused, counted (bridge/info dropped.device_limit) and logged once per
// interval.
struct CoapLimits {
  std::size_t max_devices = 1000;            // devices in total
  std::size_t max_devices_per_host = 16;     // discovered + registered per IP address
  std::size_t max_answers_per_round = 2000;  // multicast answers taken per round
  std::size_t max_sessions = 1000;           // idle server sessions (RD, /ps clients)
};

// /ps on the listeners (issue 20, gateway/pubsub.h): devices that publish and subscribe.
// [coap] ps_root, ps_max_payload, ps_queue, ps_queue_expiry.
struct PubSubConfig {
  std::string root = "ps";  // one path segment; "" = not served
  // Larger publishes get 4.13, whether in one message or in Block1 blocks.
  std::size_t max_payload = 1024;
  // Queue mode (GET ?queue): messages kept per (device, topic) until it next asks.
  std::size_t queue = 32;
  std::chrono::milliseconds queue_expiry{std::chrono::hours(1)};
  bool operator==(const PubSubConfig& o) const {
    return root == o.root && max_payload == o.max_payload && queue == o.queue &&
           queue_expiry == o.queue_expiry;
  }
};

struct CoapConfig {
  // Server endpoints ("host:port", or "coaps://host:port" for DTLS) for the Resource
  // Directory and our own /.well-known/core; empty = client only (ephemeral ports).
  std::vector<std::string> listen;
  // Who may speak DTLS to the coaps:// listeners (needed when there is one).
  std::vector<PskClient> psk_clients;
  // The coaps:// listeners' own certificate, and the CA that clients' certificates must chain
  // to (listen_pki = { ca_file, cert_file, key_file }); and who those clients are.
  std::optional<PkiCredentials> listen_pki;
  std::vector<CertClient> cert_clients;
  // DTLS for discovered and registered devices ([[coap.credentials]]), first match wins.
  std::vector<CredentialsRule> credentials;
  // How long to wait for /.well-known/core and other requests before giving up.
  std::chrono::milliseconds request_timeout{std::chrono::seconds(10)};
  // How often to retry a static device whose discovery failed.
  std::chrono::milliseconds retry_interval{std::chrono::seconds(15)};
  // A device that has not answered for this long is offline.
  std::chrono::milliseconds offline_after{std::chrono::minutes(3)};
  bool resource_directory = true;  // serve /rd and /rd-lookup on the listen endpoints
  // RFC 7252 §4.8 transmission parameters, per device session.
  std::chrono::milliseconds ack_timeout{2000};
  double ack_random_factor = 1.5;
  unsigned max_retransmit = 4;
  DiscoveryConfig discovery;
  CoapLimits limits;
  PubSubConfig pubsub;
};

// [admin]: the admin API on <base>/bridge/request/<op>. Anyone who may publish there may
// run what is allowed here, so it can be turned off or cut down to harmless operations.
struct AdminConfig {
  bool enabled = true;  // false: not even subscribed
  // The operations answered (names as in admin::operations()); nullopt: all of them.
  std::optional<std::vector<std::string>> allow;
};

// [metrics]: the Prometheus endpoint, GET http://<listen>/metrics (gateway/metrics_server.h).
struct MetricsConfig {
  // "host:port" with host an IPv4 address, [IPv6] or a name; empty = off (the default).
  std::string listen;
};

// [web]: the web page and its JSON API (gateway/web_server.h). Off unless `listen` is set.
struct WebConfig {
  // "host:port" (IPv4, [IPv6] or a name); empty = off (the default).
  std::string listen;
  // When set, every request needs this token (Authorization: Bearer, or the login form's
  // cookie). Required when `listen` is not a loopback address. Never logged.
  std::string token_file;
  std::string token;  // the file's first line
};

// A field added here or in the structs above must also be compared in restartRequired()
// (gateway/config_reload.cpp); its structured bindings fail to compile until it is.
struct GatewayConfig {
  std::string file;  // path it was loaded from
  std::string name;  // [gateway].name, default: host name
  std::string state_dir = "/var/lib/coap2mqtt";
  std::vector<std::string> rule_globs;  // [gateway].rules, relative to the config file
  std::string log_level = "info";       // trace|debug|info|warn|error|critical|off
  CoapConfig coap;
  std::vector<StaticDevice> devices;  // [[coap.device]]
  MqttConfig mqtt;
  AdminConfig admin;
  MetricsConfig metrics;
  WebConfig web;
  bridge::RuleSet rules;  // from rule files, plus any [[rule]]/[[command]] in this file
};

// Loads gateway.toml and every rule file it names. Throws bridge::ConfigErrors listing
// every error (file:line:col, key, what was expected). Unknown keys are errors.
GatewayConfig loadConfig(const std::string& path);

// Parses durations like "500ms", "10s", "5m", "1h" (also a bare integer = seconds).
std::optional<std::chrono::milliseconds> parseDuration(std::string_view text);

}  // namespace coap2mqtt::gateway
