// Block1 uploads put back together, with their bounds, on a fake clock.
#include "gateway/block1_assembly.h"

#include <gtest/gtest.h>

#include <string>

namespace coap2mqtt::gateway {
namespace {

using namespace std::chrono_literals;
using Result = Block1Assembly::Result;

const Block1Assembly::Clock::time_point t0{};

TEST(Block1Assembly, BlocksInOrderMakeTheWholeBody) {
  Block1Assembly a(1024, 4, 30s);
  std::string body;
  EXPECT_EQ(a.add("p /ps/x", 0, true, std::string(16, 'a'), 0, t0, &body), Result::More);
  EXPECT_EQ(a.add("p /ps/x", 16, true, std::string(16, 'b'), 0, t0, &body), Result::More);
  EXPECT_EQ(a.uploads(), 1u);
  EXPECT_EQ(a.add("p /ps/x", 32, false, "end", 0, t0, &body), Result::Complete);
  EXPECT_EQ(body, std::string(16, 'a') + std::string(16, 'b') + "end");
  EXPECT_EQ(a.uploads(), 0u);  // nothing kept once handed over
}

TEST(Block1Assembly, ASingleBlockIsCompleteAtOnceAndKeepsNothing) {
  Block1Assembly a(1024, 4, 30s);
  std::string body;
  EXPECT_EQ(a.add("p /ps/x", 0, false, "whole", 0, t0, &body), Result::Complete);
  EXPECT_EQ(body, "whole");
  EXPECT_EQ(a.uploads(), 0u);
}

TEST(Block1Assembly, TwoPeersUploadingAtOnceStayApart) {
  Block1Assembly a(1024, 4, 30s);
  std::string body;
  EXPECT_EQ(a.add("p1 /ps/x", 0, true, "11", 0, t0, &body), Result::More);
  EXPECT_EQ(a.add("p2 /ps/x", 0, true, "22", 0, t0, &body), Result::More);
  EXPECT_EQ(a.add("p2 /ps/x", 2, false, "2", 0, t0, &body), Result::Complete);
  EXPECT_EQ(body, "222");
  EXPECT_EQ(a.add("p1 /ps/x", 2, false, "1", 0, t0, &body), Result::Complete);
  EXPECT_EQ(body, "111");
}

TEST(Block1Assembly, ARepeatedBlockAsksForTheNextAgainAndAddsNothing) {
  Block1Assembly a(1024, 4, 30s);
  std::string body;
  ASSERT_EQ(a.add("p /x", 0, true, "aaaa", 0, t0, &body), Result::More);
  ASSERT_EQ(a.add("p /x", 4, true, "bbbb", 0, t0, &body), Result::More);
  EXPECT_EQ(a.add("p /x", 4, true, "bbbb", 0, t0, &body), Result::More);  // its ACK was lost
  EXPECT_EQ(a.add("p /x", 8, false, "c", 0, t0, &body), Result::Complete);
  EXPECT_EQ(body, "aaaabbbbc");
}

TEST(Block1Assembly, AGapOrAMissingFirstBlockIsIncompleteAndForgotten) {
  Block1Assembly a(1024, 4, 30s);
  std::string body;
  EXPECT_EQ(a.add("p /x", 16, false, "late", 0, t0, &body), Result::Incomplete);
  ASSERT_EQ(a.add("p /x", 0, true, std::string(16, 'a'), 0, t0, &body), Result::More);
  EXPECT_EQ(a.add("p /x", 48, true, "skipped", 0, t0, &body), Result::Incomplete);
  EXPECT_EQ(a.uploads(), 0u);
  EXPECT_EQ(a.add("p /x", 16, false, "b", 0, t0, &body), Result::Incomplete);
}

TEST(Block1Assembly, AFirstBlockStartsTheBodyAgain) {
  Block1Assembly a(1024, 4, 30s);
  std::string body;
  ASSERT_EQ(a.add("p /x", 0, true, "old-", 0, t0, &body), Result::More);
  ASSERT_EQ(a.add("p /x", 0, true, "new-", 0, t0, &body), Result::More);
  EXPECT_EQ(a.add("p /x", 4, false, "end", 0, t0, &body), Result::Complete);
  EXPECT_EQ(body, "new-end");
}

TEST(Block1Assembly, BeyondTheBoundIsRefusedAsSoonAsItIsKnown) {
  Block1Assembly a(40, 4, 30s);
  std::string body;
  // Announced by Size1 in the first block: refused before anything is kept.
  EXPECT_EQ(a.add("p /x", 0, true, std::string(16, 'a'), 41, t0, &body), Result::TooLarge);
  EXPECT_EQ(a.uploads(), 0u);
  // Not announced: refused at the block that passes the bound, and forgotten.
  ASSERT_EQ(a.add("p /x", 0, true, std::string(16, 'a'), 0, t0, &body), Result::More);
  ASSERT_EQ(a.add("p /x", 16, true, std::string(16, 'b'), 0, t0, &body), Result::More);
  EXPECT_EQ(a.add("p /x", 32, true, std::string(16, 'c'), 0, t0, &body), Result::TooLarge);
  EXPECT_EQ(a.uploads(), 0u);
  // Exactly the bound is fine.
  ASSERT_EQ(a.add("p /x", 0, true, std::string(32, 'a'), 40, t0, &body), Result::More);
  EXPECT_EQ(a.add("p /x", 32, false, std::string(8, 'b'), 40, t0, &body), Result::Complete);
  EXPECT_EQ(body.size(), 40u);
}

TEST(Block1Assembly, AtMostMaxUploadsAtOnceAndIdleOnesAreForgotten) {
  Block1Assembly a(1024, 2, 30s);
  std::string body;
  ASSERT_EQ(a.add("p1 /x", 0, true, "a", 0, t0, &body), Result::More);
  ASSERT_EQ(a.add("p2 /x", 0, true, "a", 0, t0 + 10s, &body), Result::More);
  EXPECT_EQ(a.add("p3 /x", 0, true, "a", 0, t0 + 20s, &body), Result::Busy);
  // A single-block upload needs no room: it is never kept.
  EXPECT_EQ(a.add("p3 /x", 0, false, "a", 0, t0 + 20s, &body), Result::Complete);
  // p1 has been idle for 30 s: forgotten, which makes room; its next block has no start.
  EXPECT_EQ(a.add("p3 /x", 0, true, "a", 0, t0 + 30s, &body), Result::More);
  EXPECT_EQ(a.uploads(), 2u);
  EXPECT_EQ(a.add("p1 /x", 1, false, "b", 0, t0 + 30s, &body), Result::Incomplete);
  // A block keeps its upload alive.
  EXPECT_EQ(a.add("p2 /x", 1, true, "b", 0, t0 + 39s, &body), Result::More);
  EXPECT_EQ(a.add("p2 /x", 2, false, "c", 0, t0 + 68s, &body), Result::Complete);
  EXPECT_EQ(body, "abc");
}

}  // namespace
}  // namespace coap2mqtt::gateway
