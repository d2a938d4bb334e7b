#pragma once
// The daemon: wires the registry, the bridge, the CoAP and MQTT links on one loop thread.
#include <chrono>
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

// COAP2MQTT_TEST_STALL_ON_SIGUSR1=<ms>, for tests only: SIGUSR1 then blocks the loop thread
// that long (the watchdog test needs a stalled loop). 0 when unset, as in production.
std::chrono::milliseconds testStallOnSigusr1();

}  // namespace coap2mqtt::gateway
