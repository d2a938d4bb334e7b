// Registry store benchmark: 1,000 devices x 5 resources in a fresh SQLite file.
// Measures (median of 5 runs) saving every device (one transaction each), loadAll() on an
// open store, a cold start (open + loadAll), and flush() of 1,000 buffered touches.
//
//   bench_registry [DIR]   DIR: where to put the database (default: a new dir in /tmp);
//                          the file system matters, commits and checkpoints hit the disk.
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "registry/store.h"

namespace {

using coap2mqtt::registry::Device;
using coap2mqtt::registry::Resource;
using coap2mqtt::registry::Source;
using coap2mqtt::registry::Store;
using SteadyClock = std::chrono::steady_clock;

constexpr int kDevices = 1000;
constexpr int kResources = 5;
constexpr int kRuns = 5;

Device makeDevice(int i) {
  Device d;
  d.name = "node-" + std::to_string(i);
  d.uri = "coap://10.0." + std::to_string(i / 250) + "." + std::to_string(i % 250) + ":5683";
  d.source = i % 3 == 0 ? Source::ResourceDirectory : Source::Multicast;
  d.online = true;
  d.first_seen = std::chrono::system_clock::now();
  d.last_seen = d.first_seen;
  d.friendly_name = "Sensor node " + std::to_string(i);
  const char* names[kResources] = {"temperature", "humidity", "pressure", "battery", "led"};
  for (int r = 0; r < kResources; ++r) {
    Resource res;
    res.path = std::string("/sensors/") + names[r];
    res.rt = {std::string("oic.r.") + names[r], "sensor"};
    res.ifs = {"core.s"};
    res.ct = {0, 50, 60};
    res.obs = r != 4;
    res.sz = 64;
    res.title = std::string(names[r]) + " of node " + std::to_string(i);
    d.resources.push_back(std::move(res));
  }
  return d;
}

struct Stats {
  double median_ms;
  double min_ms;
  double max_ms;
};

Stats measure(const std::function<void()>& f) {
  std::vector<double> ms;
  for (int run = 0; run < kRuns; ++run) {
    const auto start = SteadyClock::now();
    f();
    ms.push_back(std::chrono::duration<double, std::milli>(SteadyClock::now() - start).count());
  }
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms.front(), ms.back()};
}

void printRow(const char* what, const Stats& s, int items) {
  std::printf("%-34s %10.2f %10.2f %10.2f %12.2f\n", what, s.median_ms, s.min_ms, s.max_ms,
              s.median_ms * 1000.0 / items);
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  bool own_dir = false;
  if (argc > 1) {
    dir = argv[1];
  } else {
    std::string tmpl = "/tmp/c2m_bench_registry_XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) {
      std::perror("mkdtemp");
      return 1;
    }
    dir = tmpl;
    own_dir = true;
  }
  const std::string path = dir + "/bench.db";
  std::filesystem::remove(path);
  std::filesystem::remove(path + "-wal");
  std::filesystem::remove(path + "-shm");

  int status = 0;
  try {
    std::vector<Device> devices;
    devices.reserve(kDevices);
    for (int i = 0; i < kDevices; ++i) devices.push_back(makeDevice(i));

    Store store(path);
    for (const Device& d : devices) store.save(d);  // populate once before timing

    const Stats save = measure([&] {
      for (const Device& d : devices) store.save(d);
    });
    std::size_t loaded_resources = 0;
    std::size_t loaded_devices = 0;
    const Stats load = measure([&] {
      const auto all = store.loadAll();
      loaded_devices = all.size();
      loaded_resources = 0;
      for (const Device& d : all) loaded_resources += d.resources.size();
    });
    const Stats cold = measure([&] {
      Store fresh(path);  // what the daemon does at start-up
      loaded_devices = fresh.loadAll().size();
    });
    const auto now = std::chrono::system_clock::now();
    const Stats touch = measure([&] {
      for (const Device& d : devices) store.touch(d.name, now, true);
    });
    const Stats flush = measure([&] {
      for (const Device& d : devices) store.touch(d.name, now, true);
      store.flush();
    });

    if (loaded_devices != kDevices ||
        loaded_resources != static_cast<std::size_t>(kDevices) * kResources) {
      std::fprintf(stderr, "bench_registry: loaded %zu devices / %zu resources, expected %d / %d\n",
                   loaded_devices, loaded_resources, kDevices, kDevices * kResources);
      status = 1;
    }

    std::printf("registry store: %d devices x %d resources, %s, median of %d runs\n", kDevices,
                kResources, path.c_str(), kRuns);
    std::printf("%-34s %10s %10s %10s %12s\n", "operation", "median ms", "min ms", "max ms",
                "us/device");
    printRow("save 1,000 (1 transaction each)", save, kDevices);
    printRow("loadAll() on an open store", load, kDevices);
    printRow("start-up: open + loadAll()", cold, kDevices);
    printRow("touch() x 1,000 (in memory)", touch, kDevices);
    printRow("touch() x 1,000 + flush() (1 tx)", flush, kDevices);
    std::printf("database file: %.1f KiB\n",
                static_cast<double>(std::filesystem::file_size(path)) / 1024.0);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_registry: %s\n", e.what());
    status = 1;
  }
  if (own_dir) {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  return status;
}
