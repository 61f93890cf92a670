// portcullis-agent failures that need root: a full state directory and a gateway host name that
// does not resolve. Root for mount(2) and unshare(1); no named namespace is created (the real
// agent runs in an anonymous network namespace of its own, gone when it exits).
//
//   full disk        a 64 KiB tmpfs mounted on a temporary directory, filled up by a filler file:
//     at first start   the real portcullis-agent logs the file, ENOSPC and what to do, retries
//                      1 s, 2 s ... apart, writes nothing; once the filler is gone it creates
//                      identity.key and wireguard.key (whole, 0600) and goes on
//     tokens arrive    an in-process Agent against the scripted gateway (agent/scripted_gateway.h)
//                      keeps its tokens in memory and uses them, says why it cannot save them,
//                      retries, never leaves a temporary or truncated file, keeps the previous
//                      enrollment.sealed intact on a later failure, and saves once space is back
//   DNS failure      the real agent with gateway_url https://gateway.invalid:8443, in a network
//                    namespace with only lo up (no resolver reachable): "cannot resolve gateway
//                    host 'gateway.invalid'" with what to check, retries with growing waits,
//                    configures nothing, keeps running and stops cleanly on SIGTERM
//
//   unshare --net: [ lo up ]  portcullis-agent (interface pclaf<pid>, never created)

#include <fcntl.h>
#include <signal.h>
#include <sodium.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "agent/scripted_gateway.h"

namespace portcullis::agent {
namespace {

using test::Clock;
using test::free_port;
using test::real_unix_now;
using test::RunningAgent;
using test::ScriptedGateway;
using test::wait_for;
namespace fs = std::filesystem;

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// Every name in `dir` (none of them may be a temporary or half-written file).
std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) out.push_back(e.path().filename());
  std::sort(out.begin(), out.end());
  return out;
}

// A tmpfs of `size` on a fresh temporary directory; unmounted (lazily, so a file still open
// cannot keep it) and removed however the test ends.
class SmallTmpfs {
 public:
  explicit SmallTmpfs(const std::string& size) {
    char tmpl[64];
    std::snprintf(tmpl, sizeof tmpl, "/tmp/pcl-agent-full-%d-XXXXXX", ::getpid());
    if (::mkdtemp(tmpl) == nullptr) {
      error_ = "mkdtemp: " + std::string(std::strerror(errno));
      return;
    }
    dir_ = tmpl;
    const std::string options = "size=" + size + ",mode=0700";
    if (::mount("tmpfs", tmpl, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, options.c_str()) != 0) {
      error_ = "mount tmpfs on " + dir_.string() + ": " + std::strerror(errno);
      return;
    }
    mounted_ = true;
  }
  ~SmallTmpfs() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
    if (!dir_.empty()) ::rmdir(dir_.c_str());
  }
  SmallTmpfs(const SmallTmpfs&) = delete;
  SmallTmpfs& operator=(const SmallTmpfs&) = delete;

  bool ok() const { return mounted_; }
  const std::string& error() const { return error_; }
  const fs::path& dir() const { return dir_; }

  // Writes a filler file until the file system refuses (ENOSPC). True when it is full.
  bool fill() {
    UniqueFd fd(::open((dir_ / "filler").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
    if (!fd) return false;
    std::array<char, 1024> block{};
    for (;;) {
      ssize_t n = ::write(fd.get(), block.data(), block.size());
      if (n < 0) return errno == ENOSPC;
    }
  }
  void free_space() { ::unlink((dir_ / "filler").c_str()); }

 private:
  fs::path dir_;
  std::string error_;
  bool mounted_ = false;
};

// The real portcullis-agent in a new network namespace with only lo up; stderr (its log) to a
// file. SIGKILLed and reaped however the test ends.
class AgentProcess {
 public:
  AgentProcess(const fs::path& config, const fs::path& log) : log_(log) {
    pid_ = ::fork();
    if (pid_ == 0) {
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      if (fd < 0) ::_exit(126);
      ::dup2(fd, 2);
      ::dup2(fd, 1);
      // unshare(1) execs sh without forking, and sh execs the agent: pid_ is the agent.
      ::execlp("unshare", "unshare", "--net", "--", "sh", "-c",
               "ip link set lo up && exec \"$0\" --config \"$1\"", PORTCULLIS_AGENT_BINARY,
               config.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
  }
  ~AgentProcess() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  AgentProcess(const AgentProcess&) = delete;
  AgentProcess& operator=(const AgentProcess&) = delete;

  pid_t pid() const { return pid_; }
  std::string log() const { return read_text(log_); }
  bool running() {
    if (exited_) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      exited_ = true;
      status_ = status;
    }
    return !exited_;
  }
  // SIGTERM, then the exit code (-1: killed by a signal or no exit within 10 s).
  int stop() {
    if (running()) ::kill(pid_, SIGTERM);
    wait_for([&] { return !running(); }, std::chrono::seconds(10));
    if (!exited_) return -1;
    return WIFEXITED(status_) ? WEXITSTATUS(status_) : -1;
  }
  // The links of the agent's network namespace, one name a line.
  std::string links() const {
    const std::string cmd = "nsenter --net=/proc/" + std::to_string(pid_) +
                            "/ns/net ip -o link show | awk -F': ' '{print $2}'";
    std::string out;
    if (FILE* p = ::popen(cmd.c_str(), "r")) {
      char buf[256];
      while (std::fgets(buf, sizeof buf, p) != nullptr) out += buf;
      ::pclose(p);
    }
    return out;
  }

 private:
  fs::path log_;
  pid_t pid_ = -1;
  bool exited_ = false;
  int status_ = 0;
};

// Arrival times of the lines containing `what` in the log of `agent`, polled every 20 ms until
// `n` were seen or `timeout` passed.
std::vector<Clock::time_point> watch_lines(const AgentProcess& agent, const std::string& what,
                                           std::size_t n, std::chrono::milliseconds timeout) {
  std::vector<Clock::time_point> at;
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline && at.size() < n) {
    const std::size_t seen = count_of(agent.log(), what);
    while (at.size() < seen) at.push_back(Clock::now());
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return at;
}

// Points fd 2 at a file for the life of the object: what the in-process agent logs.
class StderrCapture {
 public:
  explicit StderrCapture(const fs::path& file) : file_(file) {
    std::fflush(stderr);
    saved_ = UniqueFd(::dup(2));
    UniqueFd fd(::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (saved_ && fd) ::dup2(fd.get(), 2);
  }
  ~StderrCapture() {
    std::fflush(stderr);
    if (saved_) ::dup2(saved_.get(), 2);
  }
  std::string text() const { return read_text(file_); }

 private:
  fs::path file_;
  UniqueFd saved_;
};

class AgentFailureNetnsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (mount, unshare)";
    ASSERT_GE(sodium_init(), 0);
    char tmpl[] = "/tmp/pcl-agent-failure-netns-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ifname_ = "pclaf" + std::to_string(::getpid() % 100000);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  fs::path write_config(const std::string& gateway_url, const fs::path& state_dir) {
    const fs::path path = dir_ / "agent.toml";
    std::ofstream(path) << "gateway_url = \"" << gateway_url << "\"\n"
                        << "gateway_pin = \"sha256//" << std::string(43, 'A') << "=\"\n"
                        << "hostname = \"failure-" << ::getpid() << "\"\n"
                        << "interface = \"" << ifname_ << "\"\n"
                        << "backend = \"userspace\"\n"
                        << "state_dir = \"" << state_dir.string() << "\"\n"
                        << "health_port = 0\n"
                        << "poll_max_interval_s = 8\n";
    return path;
  }

  fs::path dir_;
  std::string ifname_;
};

TEST_F(AgentFailureNetnsTest, FullStateDirAtFirstStartIsWaitedOutAndLeavesNoPartialKey) {
  SmallTmpfs disk("64k");
  ASSERT_TRUE(disk.ok()) << disk.error();
  const fs::path state = disk.dir() / "state";
  ASSERT_TRUE(fs::create_directory(state));
  ASSERT_TRUE(disk.fill());
  // Nothing listens there (inside the agent's namespace): the agent gets as far as enrolling.
  const std::string url = "https://127.0.0.1:" + std::to_string(free_port());
  AgentProcess agent(write_config(url, state), dir_ / "agent.log");
  ASSERT_GT(agent.pid(), 0);

  const auto lines = watch_lines(agent, "state directory full", 2, std::chrono::seconds(8));
  ASSERT_EQ(lines.size(), 2u) << agent.log();
  const std::string log = agent.log();
  EXPECT_NE(log.find("'" + (state / kIdentityFile).string() + "'"), std::string::npos) << log;
  EXPECT_NE(log.find("No space left on device"), std::string::npos) << log;
  EXPECT_NE(log.find("free space"), std::string::npos) << log;
  EXPECT_GE(lines[1] - lines[0], std::chrono::milliseconds(900)) << "no wait between retries";
  EXPECT_TRUE(agent.running()) << log;
  // Nothing written, nothing left behind: no key, no temporary file.
  EXPECT_EQ(names_in(state), std::vector<std::string>{}) << log;
  EXPECT_EQ(agent.links(), "lo\n");

  // Space is back: both keys appear whole, and the agent goes on to enroll.
  disk.free_space();
  ASSERT_TRUE(wait_for([&] { return agent.log().find("agent starting") != std::string::npos; },
                       std::chrono::seconds(8)))
      << agent.log();
  EXPECT_EQ(names_in(state), (std::vector<std::string>{kIdentityFile, kWireguardKeyFile}));
  for (const char* name : {kIdentityFile, kWireguardKeyFile}) {
    struct stat st {};
    ASSERT_EQ(::stat((state / name).c_str(), &st), 0) << name;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << name;
    EXPECT_EQ(st.st_size, 45) << name << ": 44 base64 characters and a newline";
  }
  auto identity = AgentIdentity::load_or_create((state / kIdentityFile).string());
  EXPECT_TRUE(identity) << identity.error().message();
  auto wg = load_or_create_wireguard_key((state / kWireguardKeyFile).string());
  EXPECT_TRUE(wg) << wg.error().message();
  EXPECT_TRUE(
      wait_for([&] { return agent.log().find("enrollment request failed") != std::string::npos; },
               std::chrono::seconds(8)))
      << agent.log();
  EXPECT_EQ(agent.links(), "lo\n");
  EXPECT_EQ(agent.stop(), 0) << agent.log();
}

TEST_F(AgentFailureNetnsTest, FullStateDirWhenTokensArriveKeepsThemInMemoryAndSavesLater) {
  std::atomic<std::int64_t> clock{real_unix_now()};
  const std::int64_t start = clock.load();
  ScriptedGateway g(dir_ / "gw", clock);
  ASSERT_TRUE(g.ok()) << g.error();
  SmallTmpfs disk("64k");
  ASSERT_TRUE(disk.ok()) << disk.error();
  const std::string host = "fulldisk";
  const fs::path state = disk.dir() / host;
  const std::string sealed = (state / kEnrollmentFile).string();
  ASSERT_TRUE(ensure_state_dir(state.string()));
  auto identity = AgentIdentity::load_or_create((state / kIdentityFile).string());
  ASSERT_TRUE(identity) << identity.error().message();
  ASSERT_TRUE(disk.fill());

  StderrCapture log(dir_ / "agent.log");
  RunningAgent a(disk.dir(), host, g.url(), g.pin(), clock);
  // Enrolled on tokens it could not store: it uses them (vpn/ensure with the first access token)
  // and says why they are only in memory, after enroll/request, after approval, and on retries.
  ASSERT_TRUE(wait_for([&] { return !g.ensure_tokens(host).empty(); }, std::chrono::seconds(10)));
  EXPECT_EQ(g.ensure_tokens(host).front(), "tok-" + host + "-1");
  const std::string what = "cannot save the enrollment state, continuing with it in memory";
  ASSERT_TRUE(wait_for([&] { return count_of(log.text(), what) >= 3; }, std::chrono::seconds(8)))
      << log.text();
  std::string text = log.text();
  EXPECT_NE(text.find("path=" + sealed), std::string::npos) << text;
  EXPECT_NE(text.find("is full: free space there"), std::string::npos) << text;
  EXPECT_NE(text.find("No space left on device"), std::string::npos) << text;
  EXPECT_TRUE(a.status().enrolled);
  EXPECT_EQ(names_in(state), std::vector<std::string>{kIdentityFile}) << "a partial file was left";
  // Nothing configured (vpn/ensure answers 503 not_ready for this host).
  EXPECT_EQ(a.links().changing_requests(), 0u);

  // Space is back: the next retry saves what the agent holds.
  disk.free_space();
  ASSERT_TRUE(
      wait_for([&] { return log.text().find("enrollment state saved") != std::string::npos; },
               std::chrono::seconds(8)))
      << log.text();
  auto saved = load_enrollment(sealed, *identity);
  ASSERT_TRUE(saved) << saved.error().message();
  ASSERT_TRUE(saved->has_value());
  EXPECT_TRUE((*saved)->approved());
  EXPECT_EQ((*saved)->device_id, "dev-" + host);
  EXPECT_EQ((*saved)->access_token, "tok-" + host + "-1");

  // Full again when the tokens are refreshed: the previous file stays whole and readable.
  ASSERT_TRUE(disk.fill());
  const std::size_t failures = count_of(log.text(), what);
  clock.store(start + 3600 - 59);
  ASSERT_TRUE(
      wait_for([&] { return count_of(log.text(), what) > failures; }, std::chrono::seconds(8)))
      << log.text();
  EXPECT_EQ(g.calls("/api/agent/token/refresh", host), 1);
  saved = load_enrollment(sealed, *identity);
  ASSERT_TRUE(saved && saved->has_value()) << (saved ? "missing" : saved.error().message());
  EXPECT_EQ((*saved)->access_token, "tok-" + host + "-1");
  EXPECT_EQ(names_in(state), (std::vector<std::string>{kEnrollmentFile, kIdentityFile}));
  disk.free_space();
  EXPECT_TRUE(wait_for(
      [&] {
        auto s = load_enrollment(sealed, *identity);
        return s && s->has_value() && (*s)->access_token == "tok-" + host + "-2";
      },
      std::chrono::seconds(8)));
  a.stop();
}

TEST_F(AgentFailureNetnsTest, UnresolvableGatewayHostIsRetriedAndConfiguresNothing) {
  AgentProcess agent(write_config("https://gateway.invalid:8443", dir_ / "state"),
                     dir_ / "agent.log");
  ASSERT_GT(agent.pid(), 0);
  const std::string what = "cannot resolve gateway host 'gateway.invalid'";
  const auto lines = watch_lines(agent, what, 3, std::chrono::seconds(12));
  ASSERT_EQ(lines.size(), 3u) << agent.log();
  const std::string log = agent.log();
  EXPECT_NE(log.find("(check gateway_url and this machine's DNS: /etc/resolv.conf"),
            std::string::npos)
      << log;
  // 1 s, 2 s apart (±20 %): every wait longer than the one before.
  const auto gap1 = lines[1] - lines[0], gap2 = lines[2] - lines[1];
  EXPECT_GE(gap1, std::chrono::milliseconds(700));
  EXPECT_GT(gap2, gap1 + std::chrono::milliseconds(200));
  EXPECT_TRUE(agent.running()) << log;
  EXPECT_EQ(agent.links(), "lo\n");
  EXPECT_EQ(log.find("tunnel configured"), std::string::npos) << log;
  EXPECT_EQ(agent.stop(), 0) << agent.log();
}

}  // namespace
}  // namespace portcullis::agent
