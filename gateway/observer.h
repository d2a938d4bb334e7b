#pragma once
// Observer: keeps every device's watched resources in line with the rules. For each device
// it plans (bridge::plan) which resources to observe or poll and runs one Watch per
// resource (gateway/watch.h); re-plans when the resources, the rules or the device's
// address change, restarts the watches when a device comes back, and hands every value to
// the publishing side as a ValueReceived event.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gateway/config.h"
#include "gateway/events.h"
#include "gateway/values.h"
#include "gateway/watch.h"

namespace coap2mqtt::gateway {

class CoapLink;
class Devices;
class EventLoop;

class Observer {
 public:
  struct Counters {
    std::uint64_t notifications = 0;    // accepted (fresh) notifications
    std::uint64_t stale = 0;            // dropped by the RFC 7641 §3.4 rule
    std::uint64_t reregistrations = 0;  // registered again after going quiet
    std::uint64_t failures = 0;         // registrations that failed (timeout, error, RST)
  };

  Observer(const GatewayConfig& config, EventLoop& loop, CoapLink& coap, Devices& devices,
           Events& events);
  ~Observer();
  Observer(const Observer&) = delete;
  Observer& operator=(const Observer&) = delete;

  // Cancels every observation (tells the devices). At shutdown.
  void stop();
  // Stops watching one device until it is planned again (an RD registration expired).
  void stopDevice(const std::string& name);
  // The rules changed: every device's watches are brought in line.
  void replanAll();
  void forEachSlot(const std::function<void(ValueSlot&)>& f);

  std::size_t observations() const;                   // registrations that are delivering
  const Counters& totals() const { return totals_; }  // of all devices, ever
  // Devices with non-zero counters.
  std::vector<std::pair<std::string, Counters>> perDevice() const;

 private:
  struct Watched {
    std::unique_ptr<ValueSlot> slot;
    std::unique_ptr<Watch> watch;
  };
  struct DeviceWatches {
    std::vector<Watched> watches;
    Counters counters;
  };
  class Transport;

  void applyPlan(const registry::Device& device, bool restart);
  void count(DeviceWatches& dw, Watch::Count what);

  const GatewayConfig& config_;
  EventLoop& loop_;
  Devices& devices_;
  Events& events_;
  std::unique_ptr<Transport> transport_;
  std::map<std::string, DeviceWatches, std::less<>> watched_;
  Counters totals_;
};

}  // namespace coap2mqtt::gateway
