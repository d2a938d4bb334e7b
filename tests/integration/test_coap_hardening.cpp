// Issue 17, finding 11 (the CoAP part), against hostile or broken peers on loopback:
//
// - Tokens were sequential: whoever saw one could predict the next and answer a request
//   the gateway had not yet sent. Now they are random (RFC 9175 §4.2).
// - A device whose /.well-known/core is broken was logged at every retry; now once, until
//   its document changes.
// - An RD lookup bigger than one CoAP message came back as an empty 2.05; now it comes in
//   Block2 blocks, whole.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tests/integration/gateway_process.h"
#include "tests/integration/harness.h"

namespace coap2mqtt::test {
namespace {

// A device on 127.0.0.1:PORT that answers every CON GET with a piggybacked 2.05 carrying
// the request's token and a broken link-format: DOC_A for the first SWITCH requests, DOC_B
// after. Prints "GOT <n> <token hex>" for each request.
constexpr const char* kBrokenDevicePy = R"py(
import socket, sys
port, doc_a, doc_b, switch = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3].encode(), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", port))
print("READY", flush=True)
n = 0
while True:
    data, peer = s.recvfrom(2048)
    if len(data) < 4 or data[0] >> 6 != 1:
        continue
    typ, tkl, code = (data[0] >> 4) & 3, data[0] & 0x0F, data[1]
    if code == 0:  # a ping: RST
        s.sendto(bytes([0x70, 0]) + data[2:4], peer)
        continue
    if typ != 0 or code != 1:
        continue
    n += 1
    token = data[4:4 + tkl]
    doc = doc_a if n <= switch else doc_b
    # ACK 2.05, same MID and token, Content-Format 40.
    s.sendto(bytes([0x60 | tkl, 0x45]) + data[2:4] + token + bytes([0xC1, 40, 0xFF]) + doc, peer)
    print("GOT", n, token.hex(), flush=True)
)py";

std::vector<std::uint64_t> tokensIn(const std::string& output) {
  std::vector<std::uint64_t> out;
  std::size_t at = 0;
  while ((at = output.find("GOT ", at)) != std::string::npos) {
    const auto space = output.find(' ', at + 4);
    const auto end = output.find('\n', space);
    if (space == std::string::npos || end == std::string::npos) break;
    out.push_back(std::stoull(output.substr(space + 1, end - space - 1), nullptr, 16));
    at = end;
  }
  return out;
}

class CoapHardening : public ::testing::Test {
 protected:
  void startBrokenDevice(int switch_after) {
    port_ = freeUdpPort();
    dir_.write("device.py", kBrokenDevicePy);
    device_ = std::make_unique<Process>(
        std::vector<std::string>{"python3", dir_.file("device.py"), std::to_string(port_),
                                 "</a>;rt=\"unterminated", "<no-closing-bracket",
                                 std::to_string(switch_after)},
        dir_.file("device.log"));
    ASSERT_TRUE(device_->waitForOutput("READY", 10s)) << device_->output();
  }

  TempDir dir_;
  Mosquitto broker_;
  int port_ = 0;
  std::unique_ptr<Process> device_;
  std::unique_ptr<Process> gateway_;
};

TEST_F(CoapHardening, TokensAreNotSequential) {
  startBrokenDevice(1000);
  gateway_ =
      startGateway(dir_, baseConfig(broker_, dir_) +
                             "[[coap.device]]\nname = \"broken\"\nuri = \"coap://127.0.0.1:" +
                             std::to_string(port_) + "\"\n");
  ASSERT_TRUE(device_->waitForOutput("GOT 6 ", 20s)) << device_->output() << gateway_->output();
  const auto tokens = tokensIn(device_->output());
  ASSERT_GE(tokens.size(), 6u) << device_->output();
  int sequential = 0;
  for (std::size_t i = 1; i < tokens.size(); ++i) sequential += tokens[i] == tokens[i - 1] + 1;
  EXPECT_EQ(sequential, 0) << device_->output();
}

TEST_F(CoapHardening, ABrokenLinkFormatIsLoggedOnceUntilItChanges) {
  startBrokenDevice(4);  // four requests see one broken document, then another
  gateway_ =
      startGateway(dir_, baseConfig(broker_, dir_) +
                             "[[coap.device]]\nname = \"broken\"\nuri = \"coap://127.0.0.1:" +
                             std::to_string(port_) + "\"\n");
  // Every attempt is in the log (at debug level from the second on); four saw document A.
  const auto attempts = [&] {
    return gateway_->countInOutput("discovery failed: bad link-format");
  };
  const auto warnings = [&] {
    return gateway_->countInOutput("warning device broken: discovery failed: bad link-format");
  };
  ASSERT_TRUE(waitUntil([&] { return attempts() >= 4; }, 20s))
      << device_->output() << gateway_->output();
  if (attempts() == 4) {  // (the fifth, with document B, may already be in: 1 s later)
    EXPECT_EQ(warnings(), 1u) << gateway_->output();
  }
  ASSERT_TRUE(waitUntil([&] { return attempts() >= 8; }, 20s))
      << device_->output() << gateway_->output();
  EXPECT_EQ(warnings(), 2u) << "once for document A, once for document B\n" << gateway_->output();
  EXPECT_TRUE(gateway_->running());
}

// 16 registrations with long names: the lookup is several KB, far beyond one message.
TEST_F(CoapHardening, AnRdLookupBiggerThanOneMessageComesWhole) {
  const int rd_port = freeUdpPort();
  gateway_ =
      startGateway(dir_, "[gateway]\nname = \"rd-gw\"\nstate_dir = \"" + dir_.path() +
                             "\"\n\n[coap]\nlisten = [\"127.0.0.1:" + std::to_string(rd_port) +
                             "\"]\n\n[mqtt]\nuri = \"" + broker_.uri() +
                             "\"\nclient_id = \"gw-rd-lookup\"\nbase_topic = \"c2m\"\n");
  ASSERT_TRUE(gateway_->waitForOutput("started: ", 10s)) << gateway_->output();
  const std::string rd = "coap://127.0.0.1:" + std::to_string(rd_port);
  std::vector<std::string> eps;
  for (int i = 0; i < 16; ++i) {
    const std::string ep = "endpoint-with-a-rather-long-name-number-" + std::to_string(i);
    const std::string host = "127.0.0." + std::to_string(60 + i);
    std::string out;
    Process p({"coap-client-openssl", "-v", "6", "-m", "post", "-B", "5", "-t", "40", "-a", host,
               "-e", "</sensors/a-resource-with-a-long-path>;rt=\"temperature-c\";obs",
               rd + "/rd?ep=" + ep + "&lt=600"},
              dir_.file("reg-" + std::to_string(i) + ".log"));
    p.stop(0, 15s);
    ASSERT_NE(p.output().find("2.01"), std::string::npos) << p.output() << gateway_->output();
    eps.push_back(ep);
  }
  const CoapResult lookup = coapRequest("get", rd + "/rd-lookup/ep", "", 10s);
  EXPECT_EQ(lookup.code, "2.05") << gateway_->output();
  EXPECT_GT(lookup.payload.size(), 1024u) << lookup.payload;
  for (const auto& ep : eps) {
    EXPECT_NE(lookup.payload.find("ep=\"" + ep + "\""), std::string::npos) << ep << " missing in:\n"
                                                                           << lookup.payload;
  }
}

}  // namespace
}  // namespace coap2mqtt::test
