// In-memory Registry: upsert/find/remove semantics the rest of the gateway relies on.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "registry/registry.h"

namespace coap2mqtt::registry {
namespace {

Device makeDevice(std::string name, std::string uri = "coap://127.0.0.1:5683") {
  Device d;
  d.name = std::move(name);
  d.uri = std::move(uri);
  return d;
}

Resource makeResource(std::string path) {
  Resource r;
  r.path = std::move(path);
  return r;
}

struct SourceCase {
  Source source;
  const char* text;
};

class SourceToString : public ::testing::TestWithParam<SourceCase> {};

TEST_P(SourceToString, MatchesConfigSpelling) {
  EXPECT_STREQ(toString(GetParam().source), GetParam().text);
}

INSTANTIATE_TEST_SUITE_P(Table, SourceToString,
                         ::testing::Values(SourceCase{Source::Static, "static"},
                                           SourceCase{Source::Multicast, "multicast"},
                                           SourceCase{Source::ResourceDirectory, "rd"}));

TEST(Registry, StartsEmpty) {
  Registry reg;
  EXPECT_EQ(reg.size(), 0u);
  EXPECT_TRUE(reg.all().empty());
  EXPECT_EQ(reg.find("x"), nullptr);
  EXPECT_EQ(reg.findMutable("x"), nullptr);
  EXPECT_FALSE(reg.remove("x"));
}

TEST(Registry, UpsertInsertsAndReturnsStoredDevice) {
  Registry reg;
  Device d = makeDevice("kitchen");
  d.source = Source::Multicast;
  d.resources.push_back(makeResource("/temp"));
  const Device& stored = reg.upsert(d);
  EXPECT_EQ(stored.name, "kitchen");
  EXPECT_EQ(stored.source, Source::Multicast);
  EXPECT_EQ(reg.size(), 1u);
  EXPECT_EQ(reg.find("kitchen"), &stored);
}

TEST(Registry, UpsertReplacesByName) {
  Registry reg;
  reg.upsert(makeDevice("kitchen", "coap://10.0.0.1"));
  Device replacement = makeDevice("kitchen", "coap://10.0.0.2");
  replacement.online = true;
  const Device& stored = reg.upsert(std::move(replacement));
  EXPECT_EQ(reg.size(), 1u);
  EXPECT_EQ(stored.uri, "coap://10.0.0.2");
  EXPECT_TRUE(stored.online);
  EXPECT_EQ(reg.find("kitchen")->uri, "coap://10.0.0.2");
}

TEST(Registry, FindIsExactAndCaseSensitive) {
  Registry reg;
  reg.upsert(makeDevice("Kitchen"));
  EXPECT_NE(reg.find("Kitchen"), nullptr);
  EXPECT_EQ(reg.find("kitchen"), nullptr);
  EXPECT_EQ(reg.find("Kitche"), nullptr);
}

TEST(Registry, FindMutableChangesAreVisible) {
  Registry reg;
  reg.upsert(makeDevice("a"));
  Device* d = reg.findMutable("a");
  ASSERT_NE(d, nullptr);
  d->online = true;
  d->resources.push_back(makeResource("/x"));
  EXPECT_TRUE(reg.find("a")->online);
  EXPECT_NE(reg.find("a")->findResource("/x"), nullptr);
}

TEST(Registry, RemoveOnlyTheNamedDevice) {
  Registry reg;
  reg.upsert(makeDevice("a"));
  reg.upsert(makeDevice("b"));
  EXPECT_TRUE(reg.remove("a"));
  EXPECT_FALSE(reg.remove("a"));
  EXPECT_EQ(reg.size(), 1u);
  EXPECT_EQ(reg.find("a"), nullptr);
  EXPECT_NE(reg.find("b"), nullptr);
}

TEST(Registry, FindByUriFollowsUpsertsAndRemovals) {
  Registry reg;
  reg.upsert(makeDevice("a", "coap://10.0.0.1"));
  reg.upsert(makeDevice("b", "coap://10.0.0.2"));
  ASSERT_NE(reg.findByUri("coap://10.0.0.1"), nullptr);
  EXPECT_EQ(reg.findByUri("coap://10.0.0.1")->name, "a");
  EXPECT_EQ(reg.findByUri("coap://10.0.0.2")->name, "b");
  EXPECT_EQ(reg.findByUri("coap://10.0.0.3"), nullptr);
  EXPECT_EQ(reg.findByUri("coap://10.0.0.1:5683"), nullptr) << "exact match only";

  // a moves: its old address is free, the new one names it.
  reg.upsert(makeDevice("a", "coap://10.0.0.3"));
  EXPECT_EQ(reg.findByUri("coap://10.0.0.1"), nullptr);
  EXPECT_EQ(reg.findByUri("coap://10.0.0.3")->name, "a");

  // c takes b's address: the address names c; removing b does not unname it.
  reg.upsert(makeDevice("c", "coap://10.0.0.2"));
  EXPECT_EQ(reg.findByUri("coap://10.0.0.2")->name, "c");
  EXPECT_TRUE(reg.remove("b"));
  EXPECT_EQ(reg.findByUri("coap://10.0.0.2")->name, "c");
  EXPECT_TRUE(reg.remove("c"));
  EXPECT_EQ(reg.findByUri("coap://10.0.0.2"), nullptr);
}

TEST(Registry, AllIsOrderedByName) {
  Registry reg;
  for (const char* n : {"zeta", "alpha", "mid"}) reg.upsert(makeDevice(n));
  std::vector<std::string> names;
  for (const Device* d : reg.all()) names.push_back(d->name);
  EXPECT_EQ(names, (std::vector<std::string>{"alpha", "mid", "zeta"}));
}

TEST(Registry, StoredDevicesStayPutWhenOthersAreAdded) {
  // Callers keep the reference upsert() returns across later upserts of other devices.
  Registry reg;
  const Device& first = reg.upsert(makeDevice("first"));
  for (int i = 0; i < 100; ++i) reg.upsert(makeDevice("d" + std::to_string(i)));
  EXPECT_EQ(&first, reg.find("first"));
  EXPECT_EQ(first.name, "first");
}

TEST(Device, FindResourceByExactPath) {
  Device d = makeDevice("a");
  d.resources = {makeResource("/"), makeResource("/temp"), makeResource("/temp/raw")};
  ASSERT_NE(d.findResource("/temp"), nullptr);
  EXPECT_EQ(d.findResource("/temp")->path, "/temp");
  EXPECT_EQ(d.findResource("/temp/raw"), &d.resources[2]);
  EXPECT_EQ(d.findResource("/"), &d.resources[0]);
  EXPECT_EQ(d.findResource("temp"), nullptr);
  EXPECT_EQ(d.findResource("/temp/"), nullptr);
  EXPECT_EQ(d.findResource(""), nullptr);
}

TEST(Device, FindResourceOnEmptyDevice) {
  const Device d;
  EXPECT_EQ(d.findResource("/x"), nullptr);
}

}  // namespace
}  // namespace coap2mqtt::registry
