// The daemon's command line (gateway/command_line.h): what each subcommand and option sets,
// and the runs that parsing alone ends.
#include "gateway/command_line.h"

#include <vector>

#include <gtest/gtest.h>

namespace coap2mqtt::gateway {
namespace {

CommandLine parse(std::vector<const char*> args) {
  args.insert(args.begin(), "coap2mqtt");
  return parseCommandLine(static_cast<int>(args.size()), args.data());
}

TEST(CommandLine, NoArgumentsRunsWithTheInstalledConfig) {
  const CommandLine cl = parse({});
  EXPECT_FALSE(cl.exit_status);
  EXPECT_EQ(cl.command, CommandLine::Command::Run);
  EXPECT_EQ(cl.config_path, "/etc/coap2mqtt/gateway.toml");
  EXPECT_EQ(cl.log_level, "");
}

TEST(CommandLine, GlobalOptionsComeBeforeOrAfterTheSubcommand) {
  const CommandLine before = parse({"-c", "a.toml", "-l", "debug", "run"});
  EXPECT_EQ(before.command, CommandLine::Command::Run);
  EXPECT_EQ(before.config_path, "a.toml");
  EXPECT_EQ(before.log_level, "debug");
  const CommandLine after = parse({"check", "--config", "b.toml"});
  EXPECT_FALSE(after.exit_status);
  EXPECT_EQ(after.command, CommandLine::Command::Check);
  EXPECT_EQ(after.config_path, "b.toml");
}

TEST(CommandLine, DevicesAndDiscoverTakeTheirOwnOptions) {
  const CommandLine devices = parse({"devices", "--json"});
  EXPECT_EQ(devices.command, CommandLine::Command::Devices);
  EXPECT_TRUE(devices.json);
  const CommandLine discover = parse({"discover", "--timeout", "2s", "--group", "224.0.1.187",
                                      "--group", "ff02::fd", "--interface", "eth0"});
  EXPECT_EQ(discover.command, CommandLine::Command::Discover);
  EXPECT_EQ(discover.timeout, "2s");
  EXPECT_EQ(discover.groups, (std::vector<std::string>{"224.0.1.187", "ff02::fd"}));
  EXPECT_EQ(discover.interfaces, std::vector<std::string>{"eth0"});
  EXPECT_FALSE(discover.json);
}

TEST(CommandLine, HelpAndVersionEndTheRunWithSuccess) {
  EXPECT_EQ(parse({"--help"}).exit_status, 0);
  EXPECT_EQ(parse({"--version"}).exit_status, 0);
}

TEST(CommandLine, AnUnknownOptionOrTwoSubcommandsEndTheRunWithAnError) {
  const CommandLine unknown = parse({"--no-such-option"});
  ASSERT_TRUE(unknown.exit_status);
  EXPECT_NE(*unknown.exit_status, 0);
  const CommandLine two = parse({"check", "devices"});
  ASSERT_TRUE(two.exit_status);
  EXPECT_NE(*two.exit_status, 0);
  const CommandLine flag_elsewhere = parse({"check", "--json"});
  ASSERT_TRUE(flag_elsewhere.exit_status);
  EXPECT_NE(*flag_elsewhere.exit_status, 0);
}

}  // namespace
}  // namespace coap2mqtt::gateway
