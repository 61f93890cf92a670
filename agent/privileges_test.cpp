#include "agent/privileges.h"

#include <linux/capability.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include <gtest/gtest.h>

namespace portcullis::agent {
namespace {

constexpr std::uint64_t kNetAdmin = std::uint64_t{1} << CAP_NET_ADMIN;

// The CapEff line a shell exec'd by the (dropped) process reports: what wireguard-go would get.
std::string cap_eff_after_exec() {
  FILE* p = ::popen("grep CapEff /proc/self/status", "r");
  if (p == nullptr) return "";
  char buf[128] = {};
  std::string out = std::fgets(buf, sizeof buf, p) != nullptr ? buf : "";
  ::pclose(p);
  return out;
}

// Runs in a child so the test process keeps its capabilities. Exit 0: all checks held.
int drop_and_check() {
  if (!keep_only_net_admin()) return 10;
  auto c = read_capabilities();
  if (!c) return 11;
  if (c->effective != kNetAdmin || c->permitted != kNetAdmin) return 12;
  if (c->bounding != kNetAdmin) return 13;
  if ((c->inheritable & ~kNetAdmin) != 0) return 14;
  // An exec (root, as when the agent starts wireguard-go while healing) gets CAP_NET_ADMIN only.
  if (cap_eff_after_exec() != "CapEff:\t0000000000001000\n") return 15;
  // Idempotent: a second call finds nothing to drop.
  if (!keep_only_net_admin()) return 16;
  return 0;
}

TEST(PrivilegesTest, KeepsOnlyNetAdminAndExecGetsNoMore) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (capabilities to drop)";
  auto before = read_capabilities();
  ASSERT_TRUE(before);
  if ((before->permitted & kNetAdmin) == 0) GTEST_SKIP() << "no CAP_NET_ADMIN to keep";
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) ::_exit(drop_and_check());
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "see drop_and_check() for the meaning of the code";
  // The parent is untouched.
  auto after = read_capabilities();
  ASSERT_TRUE(after);
  EXPECT_EQ(after->effective, before->effective);
}

}  // namespace
}  // namespace portcullis::agent
