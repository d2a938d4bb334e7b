#include "tests/integration/netns.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <utility>

namespace coap2mqtt::test {

namespace {

std::atomic<int> g_counter{0};

std::string joinArgs(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) out += (out.empty() ? "" : " ") + a;
  return out;
}

// Runs argv (on the host) to completion with its output in `log`.
int runTo(std::vector<std::string> argv, const std::string& log, std::string* output,
          std::chrono::milliseconds timeout) {
  Process p(std::move(argv), log);
  int rc = p.stop(0, timeout);  // signal 0: only wait
  if (rc == -1) p.stop(SIGKILL, 2s);
  if (output != nullptr) *output = p.output();
  return rc;
}

constexpr const char* kTapReadyTopic = "c2m-tap/ready";

}  // namespace

// ---------------------------------------------------------------------------------------
// NetNs

NetNs::NetNs() : NetNs(Options{}) {}

NetNs::NetNs(Options options)
    : name_("c2m-" + std::to_string(::getpid()) + "-" + std::to_string(++g_counter)) {
  try {
    setUp(options);
  } catch (...) {
    tearDown();
    throw;
  }
}

NetNs::~NetNs() {
  tearDown();
}

void NetNs::setUp(const Options& options) {
  auto must = [&](std::vector<std::string> argv) {
    std::string out;
    const std::string what = joinArgs(argv);
    int rc =
        runTo(std::move(argv), file("setup-" + std::to_string(++g_counter) + ".log"), &out, 10s);
    if (rc != 0) {
      throw std::runtime_error("'" + what + "' failed (rc " + std::to_string(rc) + "): " + out);
    }
  };
  must({"ip", "netns", "add", name_});
  created_ = true;
  must({"ip", "-n", name_, "link", "set", "lo", "up"});
  if (options.multicast_lo) {
    must({"ip", "-n", name_, "link", "set", "lo", "multicast", "on"});
    must({"ip", "-n", name_, "route", "add", "224.0.0.0/4", "dev", "lo"});
  }
}

void NetNs::tearDown() noexcept {
  if (!created_) return;
  try {
    // Whatever still runs in there (a Process whose owner forgot it, a daemon's child).
    for (int attempt = 0; attempt < 50; ++attempt) {
      auto left = pids();
      if (left.empty()) break;
      for (int pid : left) ::kill(pid, SIGKILL);
      std::this_thread::sleep_for(20ms);
    }
    std::string out;
    if (runTo({"ip", "netns", "delete", name_}, file("delete.log"), &out, 10s) != 0) {
      std::fprintf(stderr, "netns: 'ip netns delete %s' failed: %s\n", name_.c_str(), out.c_str());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "netns: deleting %s: %s\n", name_.c_str(), e.what());
  }
  created_ = false;
}

std::vector<std::string> NetNs::exec(std::vector<std::string> argv) const {
  std::vector<std::string> out = {"ip", "netns", "exec", name_};
  out.insert(out.end(), std::make_move_iterator(argv.begin()), std::make_move_iterator(argv.end()));
  return out;
}

int NetNs::run(std::vector<std::string> argv, std::string* output,
               std::chrono::milliseconds timeout) const {
  return runTo(exec(std::move(argv)), file("run-" + std::to_string(++g_counter) + ".log"), output,
               timeout);
}

int NetNs::socket(int domain, int type, int protocol) const {
  int self = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (self < 0) throw std::runtime_error(std::string("open own netns: ") + std::strerror(errno));
  const std::string path = "/run/netns/" + name_;
  int target = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (target < 0) {
    int err = errno;
    ::close(self);
    throw std::runtime_error("open " + path + ": " + std::strerror(err));
  }
  if (::setns(target, CLONE_NEWNET) != 0) {
    int err = errno;
    ::close(self);
    ::close(target);
    throw std::runtime_error("setns " + name_ + ": " + std::strerror(err));
  }
  int fd = ::socket(domain, type | SOCK_CLOEXEC, protocol);
  int err = errno;
  if (::setns(self, CLONE_NEWNET) != 0) {
    std::fprintf(stderr, "netns: cannot return to the original namespace: %s\n",
                 std::strerror(errno));
    std::abort();  // this thread would keep working inside the test namespace
  }
  ::close(self);
  ::close(target);
  if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(err));
  return fd;
}

std::vector<int> NetNs::pids() const {
  std::string out;
  runTo({"ip", "netns", "pids", name_}, file("pids-" + std::to_string(++g_counter) + ".log"), &out,
        10s);
  std::vector<int> pids;
  std::istringstream in(out);
  std::string word;
  while (in >> word) {
    try {
      size_t used = 0;
      int pid = std::stoi(word, &used);
      if (used == word.size() && pid > 1) pids.push_back(pid);
    } catch (const std::exception&) {
      // not a pid (an error message): ignore
    }
  }
  return pids;
}

bool NetNs::available(std::string* why) {
  static int cached = -1;  // -1 unknown, 0 no, 1 yes
  static std::string reason;
  if (cached < 0) {
    if (::geteuid() != 0) {
      reason = "network namespaces need root (run the tests as root)";
      cached = 0;
    } else {
      try {
        NetNs probe;
        cached = 1;
      } catch (const std::exception& e) {
        reason = std::string("cannot create a network namespace: ") + e.what();
        cached = 0;
      }
    }
  }
  if (why != nullptr) *why = reason;
  return cached == 1;
}

// ---------------------------------------------------------------------------------------
// NsMosquitto

NsMosquitto::NsMosquitto(const NetNs& ns, int port) : ns_(ns), port_(port) {
  // mosquitto drops to its own user after reading the conf: 0777 dir, readable conf, log
  // to the inherited stdout, nothing persisted.
  dir_.write("mosquitto.conf", "listener " + std::to_string(port_) +
                                   " 127.0.0.1\n"
                                   "allow_anonymous true\n"
                                   "persistence false\n"
                                   "max_queued_messages 100000\n"
                                   "log_dest stdout\n"
                                   "log_type error\nlog_type warning\nlog_type notice\n"
                                   "log_type information\n");
  proc_ = std::make_unique<Process>(ns_.exec({"mosquitto", "-c", dir_.file("mosquitto.conf")}),
                                    dir_.file("mosquitto.log"));
  const bool ready = waitUntil(
      [&] {
        return !proc_->running() ||
               ns_.run({"mosquitto_pub", "-p", std::to_string(port_), "-t", "c2m-ready", "-m", "x"},
                       nullptr, 5s) == 0;
      },
      10s);
  if (!ready || !proc_->running()) {
    std::string out = proc_->output();
    proc_.reset();
    throw std::runtime_error("mosquitto did not come up in " + ns_.name() + ":" +
                             std::to_string(port_) + ":\n" + out);
  }
}

NsMosquitto::~NsMosquitto() = default;

std::string NsMosquitto::output() const {
  return proc_ ? proc_->output() : std::string();
}

// ---------------------------------------------------------------------------------------
// NsMqttTap

NsMqttTap::NsMqttTap(const NetNs& ns, int port, const std::string& filter)
    : log_(ns.file("tap-" + std::to_string(++g_counter) + ".log")) {
  proc_ = std::make_unique<Process>(ns.exec({"mosquitto_sub", "-p", std::to_string(port), "-v",
                                             "-t", filter, "-t", kTapReadyTopic}),
                                    log_);
  const std::string line = std::string(kTapReadyTopic) + " ";
  const bool ready = waitUntil(
      [&] {
        if (!proc_->running()) return true;
        ns.run({"mosquitto_pub", "-p", std::to_string(port), "-t", kTapReadyTopic, "-m", "x"},
               nullptr, 5s);
        return proc_->waitForOutput(line, 200ms);
      },
      10s);
  if (!ready || !proc_->running()) {
    throw std::runtime_error("mosquitto_sub did not come up: " + proc_->output());
  }
}

NsMqttTap::~NsMqttTap() = default;

std::vector<NsMqttTap::Message> NsMqttTap::messages() const {
  std::vector<Message> out;
  std::string text = proc_->output();
  text.erase(text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1);  // partial line
  std::istringstream in(text);
  std::string line;
  const std::string ready = std::string(kTapReadyTopic) + " ";
  while (std::getline(in, line)) {
    if (line.empty() || line.rfind(ready, 0) == 0) continue;
    Message m;
    size_t sp = line.find(' ');
    m.topic = line.substr(0, sp);
    if (sp != std::string::npos) m.payload = line.substr(sp + 1);
    out.push_back(std::move(m));
  }
  return out;
}

std::vector<NsMqttTap::Message> NsMqttTap::messagesOn(const std::string& topic) const {
  std::vector<Message> out;
  for (auto& m : messages()) {
    if (m.topic == topic) out.push_back(std::move(m));
  }
  return out;
}

std::set<std::string> NsMqttTap::topics(const std::function<bool(const std::string&)>& keep) const {
  std::set<std::string> out;
  for (const auto& m : messages()) {
    if (!keep || keep(m.topic)) out.insert(m.topic);
  }
  return out;
}

bool NsMqttTap::waitFor(const std::function<bool(const std::vector<Message>&)>& pred,
                        std::chrono::milliseconds timeout) const {
  return waitUntil([&] { return pred(messages()); }, timeout);
}

std::string NsMqttTap::output() const {
  return proc_->output();
}

}  // namespace coap2mqtt::test
