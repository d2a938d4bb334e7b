#pragma once
// The typed events the gateway's components tell each other about (zigbee2mqtt's
// eventBus.ts): who emits an event does not know who listens. Listeners run on the loop
// thread, in the order they subscribed; one that throws is logged and the others run on.
#include <exception>
#include <functional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "registry/registry.h"

namespace coap2mqtt::gateway {

struct CoapResponse;
struct ValueSlot;

// A device the gateway did not know before (multicast answer, RD registration, static).
struct DeviceJoined {
  const registry::Device& device;
};
// The device's resources are known (again): `changed` when they differ from before;
// `replan` when its watches must be brought in line even if they did not change.
struct DeviceResources {
  const registry::Device& device;
  bool changed;
  bool replan;
};
// Availability: published on every emit; `changed` when online flipped; `came_back` when a
// device that was online before, then offline, answers again (its observations may be
// gone: a partition or a reboot).
struct DeviceAvailability {
  const registry::Device& device;
  bool changed;
  bool came_back;
};
// About to be forgotten (removed, deregistered, or renamed away): `announce` publishes
// bridge/event device_left (not for a rename, which announces device_renamed).
struct DeviceRemoved {
  const registry::Device& device;
  bool announce;
  std::string_view reason;  // for commands still waiting, e.g. "device removed"
};
// Now at another address (an RD registration from elsewhere): its session and
// observations are new.
struct DeviceMoved {
  const registry::Device& device;
};
struct DeviceRenamed {
  const std::string& from;
  const registry::Device& device;
};
// The resources watched for `device`, after every plan (for Home Assistant discovery).
struct WatchesPlanned {
  const registry::Device& device;
  const std::vector<const ValueSlot*>& slots;
};
// A value from a watched resource (notification, poll answer).
struct ValueReceived {
  ValueSlot& slot;
  const CoapResponse& response;
};
struct RulesReplaced {};
struct MqttConnected {};

template <class... Events>
class EventBus {
 public:
  using ErrorHandler = std::function<void(const char* what)>;

  explicit EventBus(ErrorHandler on_error) : on_error_(std::move(on_error)) {}

  template <class Event>
  void on(std::function<void(const Event&)> listener) {
    std::get<std::vector<std::function<void(const Event&)>>>(listeners_)
        .push_back(std::move(listener));
  }

  template <class Event>
  void emit(const Event& event) {
    for (const auto& listener :
         std::get<std::vector<std::function<void(const Event&)>>>(listeners_)) {
      try {
        listener(event);
      } catch (const std::exception& e) {
        on_error_(e.what());
      } catch (...) {
        on_error_("unknown exception");
      }
    }
  }

 private:
  ErrorHandler on_error_;
  std::tuple<std::vector<std::function<void(const Events&)>>...> listeners_;
};

using Events =
    EventBus<DeviceJoined, DeviceResources, DeviceAvailability, DeviceRemoved, DeviceMoved,
             DeviceRenamed, WatchesPlanned, ValueReceived, RulesReplaced, MqttConnected>;

}  // namespace coap2mqtt::gateway
