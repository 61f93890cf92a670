#include "agent/privileges.h"

#include <linux/capability.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "tests/support/proc_status.h"

namespace portcullis::agent {
namespace {

using portcullis::testing::proc_status;

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

// The worker's drop, checked from outside: the child drops, tells the parent, and waits; the
// parent reads the child's /proc/<pid>/status.
TEST(PrivilegesTest, WorkerDropsToTheUserWithNothingLeft) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (a uid to leave)";
  bool fell_back = false;
  auto user = find_user("portcullis-agent-does-not-exist", &fell_back);
  ASSERT_TRUE(user) << user.error().message();
  EXPECT_TRUE(fell_back);
  EXPECT_EQ(user->name, "nobody");
  ASSERT_NE(user->uid, 0u);
  int ready[2], done[2];
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(done), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(ready[0]);
    ::close(done[1]);
    const char code = drop_to_user(*user) ? 'y' : 'n';
    (void)!::write(ready[1], &code, 1);
    char c;
    (void)!::read(done[0], &c, 1);
    // Once dropped, nothing brings root back.
    ::_exit(::setuid(0) == 0 || ::setgid(0) == 0 ? 3 : 0);
  }
  ::close(ready[1]);
  ::close(done[0]);
  char code = 0;
  ASSERT_EQ(::read(ready[0], &code, 1), 1);
  auto status = proc_status(pid);
  const char go = 'x';
  (void)!::write(done[1], &go, 1);
  ::close(ready[0]);
  ::close(done[1]);
  int wstatus = 0;
  ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
  EXPECT_EQ(code, 'y') << "drop_to_user failed in the child";
  EXPECT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) << "setuid(0) worked again";
  const std::string uid = std::to_string(user->uid), gid = std::to_string(user->gid);
  EXPECT_EQ(status["Uid"], uid + "\t" + uid + "\t" + uid + "\t" + uid);
  EXPECT_EQ(status["Gid"], gid + "\t" + gid + "\t" + gid + "\t" + gid);
  EXPECT_EQ(status["Groups"], "");
  EXPECT_EQ(status["CapEff"], "0000000000000000");
  EXPECT_EQ(status["CapPrm"], "0000000000000000");
  EXPECT_EQ(status["CapInh"], "0000000000000000");
  EXPECT_EQ(status["CapBnd"], "0000000000000000");
  EXPECT_EQ(status["CapAmb"], "0000000000000000");
  EXPECT_EQ(status["NoNewPrivs"], "1");
}

TEST(PrivilegesTest, RefusesRoot) {
  bool fell_back = false;
  auto root = find_user("root", &fell_back);
  ASSERT_FALSE(root);
  EXPECT_EQ(root.error().errno_value(), EINVAL);
  EXPECT_FALSE(drop_to_user({"root", 0, 0}));
}

// The state directory goes to the worker's user and back; the key files stay root's.
TEST(PrivilegesTest, StateDirectoryHandedOverAndTakenBack) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (chown)";
  namespace fs = std::filesystem;
  char tmpl[] = "/tmp/pcl-privsep-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const fs::path dir = fs::path(tmpl) / "state";
  fs::create_directories(dir);
  for (const char* name : {"identity.key", "wireguard.key", "enrollment.sealed"}) {
    std::ofstream(dir / name) << "x";
  }
  fs::create_symlink("/etc/passwd", dir / "link");
  auto owner = [&](const fs::path& p) {
    struct stat st {};
    ::lstat(p.c_str(), &st);
    return std::to_string(st.st_uid) + ":" + std::to_string(st.st_gid);
  };
  ASSERT_TRUE(give_state_dir(dir.string(), 65534, 65534, {"identity.key", "wireguard.key"}));
  EXPECT_EQ(owner(dir), "65534:65534");
  EXPECT_EQ(owner(dir / "enrollment.sealed"), "65534:65534");
  EXPECT_EQ(owner(dir / "identity.key"), "0:0");
  EXPECT_EQ(owner(dir / "wireguard.key"), "0:0");
  EXPECT_EQ(owner(dir / "link"), "0:0");
  EXPECT_EQ(owner("/etc/passwd"), "0:0");
  ASSERT_TRUE(take_state_dir(dir.string()));
  EXPECT_EQ(owner(dir), "0:0");
  EXPECT_EQ(owner(dir / "enrollment.sealed"), "0:0");
  EXPECT_TRUE(take_state_dir((dir / "missing").string()));
  fs::remove_all(tmpl);
}

}  // namespace
}  // namespace portcullis::agent
