#pragma once
// bridge/info's stats, asked for through the admin API (`<base>/bridge/request/info`), for
// tests that check what the gateway counted.
#include <chrono>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "tests/integration/harness.h"

namespace coap2mqtt::test {

// Asks again (each answer awaited up to 2 s) until `until` holds for an answer's
// data.stats or `timeout` passes; the last stats answered, null when none came.
nlohmann::json bridgeStatsUntil(MqttProbe& probe,
                                const std::function<bool(const nlohmann::json&)>& until,
                                std::chrono::milliseconds timeout, const std::string& base = "c2m");

// One answer's data.stats (null when none came within 10 s).
nlohmann::json bridgeStats(MqttProbe& probe, const std::string& base = "c2m");

// The counter `name` in the line the gateway logs when it stops ("stats: {...}"), read from
// its output: -1 when there is no such line or counter.
long exitStat(const std::string& gateway_output, const std::string& name);

}  // namespace coap2mqtt::test
