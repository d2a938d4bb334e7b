#include "tests/integration/bridge_info.h"

#include <atomic>
#include <thread>

namespace coap2mqtt::test {
namespace {

// One question, one answer: the response carrying this question's transaction.
nlohmann::json askOnce(MqttProbe& probe, const std::string& base,
                       std::chrono::milliseconds timeout) {
  static std::atomic<unsigned> next{0};
  const std::string transaction = "stats-" + std::to_string(next++);
  probe.publish(base + "/bridge/request/info", R"({"transaction":")" + transaction + "\"}", 0);
  nlohmann::json stats;
  probe.waitFor(
      [&](const std::vector<MqttMessage>& ms) {
        for (auto m = ms.rbegin(); m != ms.rend(); ++m) {
          if (m->topic != base + "/bridge/response/info") continue;
          const auto j = nlohmann::json::parse(m->payload, nullptr, false);
          if (j.is_discarded() || j.value("transaction", "") != transaction) continue;
          if (!j.contains("data")) return false;
          stats = j["data"]["stats"];
          return true;
        }
        return false;
      },
      timeout);
  return stats;
}

}  // namespace

nlohmann::json bridgeStatsUntil(MqttProbe& probe,
                                const std::function<bool(const nlohmann::json&)>& until,
                                std::chrono::milliseconds timeout, const std::string& base) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  nlohmann::json last;
  while (std::chrono::steady_clock::now() < deadline) {
    nlohmann::json stats = askOnce(probe, base, std::chrono::seconds(2));
    if (!stats.is_null()) {
      last = std::move(stats);
      if (until(last)) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the next question
  }
  return last;
}

nlohmann::json bridgeStats(MqttProbe& probe, const std::string& base) {
  return askOnce(probe, base, std::chrono::seconds(10));
}

long exitStat(const std::string& gateway_output, const std::string& name) {
  const auto stats = gateway_output.rfind("stats: {");
  if (stats == std::string::npos) return -1;
  const std::string line = gateway_output.substr(stats, gateway_output.find('\n', stats) - stats);
  const auto at = line.find("\"" + name + "\":");
  if (at == std::string::npos) return -1;
  return std::stol(line.substr(at + name.size() + 3));
}

}  // namespace coap2mqtt::test
