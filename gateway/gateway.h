#pragma once
// The daemon: wires the registry, the bridge, the CoAP and MQTT links on one loop thread.
#include <memory>

#include "gateway/config.h"

namespace coap2mqtt::gateway {

class Gateway {
 public:
  explicit Gateway(GatewayConfig config);
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // Runs until SIGTERM/SIGINT. SIGHUP reloads the rules. Returns the process exit code.
  int run();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace coap2mqtt::gateway
