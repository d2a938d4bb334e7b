#pragma once
// DTLS credentials in gateway.toml: a device's `psk = { identity, key_file }` and the
// secret files the configuration names. Keys never appear in a message: errors say what is
// wrong with a key file and where, never what it holds.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bridge/toml_reader.h"
#include "gateway/config.h"

namespace coap2mqtt::gateway {

// The longest PSK identity and key we take (RFC 4279 §5.3 asks for identities up to 128
// bytes; OpenSSL 3 takes keys up to 256 bytes for DTLS 1.2).
inline constexpr std::size_t kMaxPskIdentity = 128;
inline constexpr std::size_t kMaxPskKey = 256;

// A key file's content as the key's bytes: the raw bytes, or "hex:" followed by an even
// number of hexadecimal digits; one trailing line end ("\n" or "\r\n") is not part of the
// key. nullopt and *error (which never quotes the content) when it is empty, too long or
// not hexadecimal after "hex:".
std::optional<std::string> parsePskKey(std::string_view content, std::string* error);

// Reads `psk = { identity = "...", key_file = "..." }` of the [[coap.device]] table `device`
// (`prefix` as "coap.device[2]"); key_file is relative to `dir`, or names a systemd
// credential (resolveSecretPath). nullopt when absent or wrong (reported).
std::optional<PskCredentials> parsePsk(bridge::toml_reader::TableReader& device,
                                       bridge::toml_reader::Reporter& report,
                                       const std::string& prefix, const std::string& dir);

// Reads `pki = { ca_file, cert_file, key_file, check_name }` of a [[coap.device]] table:
// the three files readable (relative to `dir`; key_file a systemd credential first). With
// `listener`, the table `key` of [coap] for our coaps:// listeners (no check_name: clients
// are known by [[coap.cert_client]]).
std::optional<PkiCredentials> parsePki(bridge::toml_reader::TableReader& device,
                                       bridge::toml_reader::Reporter& report,
                                       const std::string& prefix, const std::string& dir,
                                       std::string_view key = "pki", bool listener = false);

// Reads the [[coap.cert_client]] tables of `coap` into `out`: name (unique; a DNS SAN or
// the subject CN of the client's certificate), endpoints (globs; default [name]).
void parseCertClients(bridge::toml_reader::TableReader& coap, bridge::toml_reader::Reporter& report,
                      std::vector<CertClient>& out);

// Reads the [[coap.psk_client]] tables of `coap` into `out`: identity (unique), key_file
// (as for psk), endpoints (globs; default [identity]).
void parsePskClients(bridge::toml_reader::TableReader& coap, bridge::toml_reader::Reporter& report,
                     const std::string& dir, std::vector<PskClient>& out);

// Reads the [[coap.credentials]] tables of `coap` into `out`: match = { device, address }
// (globs, default "*"), port (1..65535), and exactly one of psk and pki as for a device.
void parseCredentialRules(bridge::toml_reader::TableReader& coap,
                          bridge::toml_reader::Reporter& report, const std::string& dir,
                          std::vector<CredentialsRule>& out);

// One line per secret file of `config` (PSK key files, mqtt.password_file, mqtt.tls.key_file)
// that its group or others may read, naming the file and its mode. Empty when all are
// private or none is named.
std::vector<std::string> secretFileWarnings(const GatewayConfig& config);

}  // namespace coap2mqtt::gateway
