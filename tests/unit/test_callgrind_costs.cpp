// bench/callgrind_costs.h: instructions by library from a callgrind dump.
#include "bench/callgrind_costs.h"

#include <gtest/gtest.h>

#include <sstream>

namespace coap2mqtt::bench {
namespace {

// The shape valgrind 3.19 writes: name compression, a call whose inclusive cost line must
// not be counted again, position compression (+N, -N, *).
constexpr const char* kDump = R"(# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 4242
cmd:  /usr/bin/coap2mqtt run -c gateway.toml
part: 1

desc: I1 cache:
positions: line
events: Ir
summary: 1610

ob=(1) /usr/bin/coap2mqtt
fl=(1) gateway/values.cpp
fn=(1) coap2mqtt::Values::onNotification
10 100
+2 50
cob=(2) /usr/lib/x86_64-linux-gnu/libc.so.6
cfi=(2) ???
cfn=(2) malloc
calls=3 0
* 1000
-1 10

ob=(2)
fl=(2)
fn=(2)
0 1000

ob=(3) /usr/lib/x86_64-linux-gnu/libcoap-3-openssl.so.3
fl=(3) ???
fn=(3) coap_io_process
0 450

totals: 1610
)";

TEST(CallgrindCosts, CountsEachInstructionOnceByLibrary) {
  std::istringstream in(kDump);
  const auto costs = readCallgrindCosts(in);
  EXPECT_EQ(costs.event, "Ir");
  EXPECT_EQ(costs.total, 1610u);
  ASSERT_EQ(costs.by_object.size(), 3u);
  // 100 + 50 + 10: the call's inclusive 1000 belongs to libc, counted there once.
  EXPECT_EQ(costs.by_object.at("/usr/bin/coap2mqtt"), 160u);
  EXPECT_EQ(costs.by_object.at("/usr/lib/x86_64-linux-gnu/libc.so.6"), 1000u);
  EXPECT_EQ(costs.by_object.at("/usr/lib/x86_64-linux-gnu/libcoap-3-openssl.so.3"), 450u);
  EXPECT_EQ(costs.by_function.at("coap2mqtt::Values::onNotification"), 160u);
  EXPECT_EQ(costs.by_function.at("malloc"), 1000u);  // named first by cfn=
  EXPECT_EQ(costs.by_function.at("coap_io_process"), 450u);
}

TEST(CallgrindCosts, TwoPositionColumnsAndNoTotalsLine) {
  std::istringstream in(
      "positions: instr line\nevents: Ir Dr\nob=/lib/a.so\n0x10 3 7 1\n+4 * 5 2\n");
  const auto costs = readCallgrindCosts(in);
  EXPECT_EQ(costs.by_object.at("/lib/a.so"), 12u);
  EXPECT_EQ(costs.total, 12u);  // the sum when the dump has no totals line
}

}  // namespace
}  // namespace coap2mqtt::bench
