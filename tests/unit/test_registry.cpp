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

// Issue 17, finding 9: a configured coap://192.0.2.10 that also answered multicast (as
// coap://192.0.2.10:5683) was two devices. One endpoint is one device, however it is spelt.
TEST(Registry, FindByUriMatchesEveryWayOfWritingTheSameEndpoint) {
  Registry reg;
  reg.upsert(makeDevice("boiler", "coap://192.0.2.10"));
  reg.upsert(makeDevice("v6", "coap://[2001:DB8:0:0::1]:5683"));
  reg.upsert(makeDevice("ll", "coap://[fe80::1%eth0]"));
  for (const char* same : {"coap://192.0.2.10", "coap://192.0.2.10:5683", "COAP://192.0.2.10/",
                           "coap://192.0.2.10:05683"}) {
    ASSERT_NE(reg.findByUri(same), nullptr) << same;
    EXPECT_EQ(reg.findByUri(same)->name, "boiler") << same;
  }
  for (const char* same : {"coap://[2001:db8::1]", "coap://[2001:0db8::0001]:5683/"}) {
    ASSERT_NE(reg.findByUri(same), nullptr) << same;
    EXPECT_EQ(reg.findByUri(same)->name, "v6") << same;
  }
  EXPECT_EQ(reg.findByUri("coap://[FE80::1%eth0]:5683")->name, "ll");
  // Another port, another scheme, another zone: another endpoint.
  EXPECT_EQ(reg.findByUri("coap://192.0.2.10:5700"), nullptr);
  EXPECT_EQ(reg.findByUri("coaps://192.0.2.10"), nullptr);
  EXPECT_EQ(reg.findByUri("coap://[fe80::1%eth1]"), nullptr);
}

struct CanonicalCase {
  const char* uri;
  const char* canonical;
  const char* host;
};

class CanonicalUri : public ::testing::TestWithParam<CanonicalCase> {};

TEST_P(CanonicalUri, IsTheOneSpelling) {
  EXPECT_EQ(canonicalUri(GetParam().uri), GetParam().canonical);
  EXPECT_EQ(uriHost(GetParam().uri), GetParam().host);
}

INSTANTIATE_TEST_SUITE_P(
    Table, CanonicalUri,
    ::testing::Values(
        CanonicalCase{"coap://192.0.2.10", "coap://192.0.2.10:5683", "192.0.2.10"},
        CanonicalCase{"coaps://192.0.2.10", "coaps://192.0.2.10:5684", "192.0.2.10"},
        CanonicalCase{"CoAP://Boiler.LAN:1234/", "coap://boiler.lan:1234", "boiler.lan"},
        CanonicalCase{"coap://[FE80::0:1%eth0]/", "coap://[fe80::1%eth0]:5683", "fe80::1%eth0"},
        CanonicalCase{"coap://[::ffff:192.0.2.1]:5683", "coap://[::ffff:192.0.2.1]:5683",
                      "::ffff:192.0.2.1"},
        // Not a base URI: unchanged, no host.
        CanonicalCase{"coap://192.0.2.10/x", "coap://192.0.2.10/x", ""},
        CanonicalCase{"coap://[zz::1]", "coap://[zz::1]", ""},
        CanonicalCase{"coap://h:99999", "coap://h:99999", ""},
        CanonicalCase{"nonsense", "nonsense", ""}));

// Issue 17, finding 3: what one host holds is bounded; the count follows every change.
TEST(Registry, CountAtHostFollowsUpsertsMovesAndRemovals) {
  Registry reg;
  reg.upsert(makeDevice("a", "coap://10.0.0.1:5683"));
  reg.upsert(makeDevice("b", "coap://10.0.0.1:5700"));
  reg.upsert(makeDevice("c", "coap://10.0.0.2"));
  EXPECT_EQ(reg.countAtHost("10.0.0.1"), 2u);
  EXPECT_EQ(reg.countAtHost("10.0.0.2"), 1u);
  reg.upsert(makeDevice("b", "coap://10.0.0.2:5700"));  // b moves
  EXPECT_EQ(reg.countAtHost("10.0.0.1"), 1u);
  EXPECT_EQ(reg.countAtHost("10.0.0.2"), 2u);
  reg.upsert(makeDevice("b", "coap://10.0.0.2:5700"));  // the same again: no change
  EXPECT_EQ(reg.countAtHost("10.0.0.2"), 2u);
  EXPECT_TRUE(reg.remove("a"));
  EXPECT_EQ(reg.countAtHost("10.0.0.1"), 0u);
  EXPECT_EQ(reg.countAtHost("10.0.0.9"), 0u);
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
