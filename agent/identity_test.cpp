#include "agent/identity.h"

#include <sodium.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

namespace portcullis::agent {
namespace {

class IdentityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_GE(sodium_init(), 0);
    dir_ = std::filesystem::temp_directory_path() /
           ("pcl-agent-identity-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    ASSERT_TRUE(ensure_state_dir(dir_.string()));
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string path(const char* name) const { return (dir_ / name).string(); }

  std::filesystem::path dir_;
};

EnrollmentState sample() {
  EnrollmentState s;
  s.enrollment_id = "enr-1";
  s.device_id = "dev-1";
  s.access_token = "access.token.value";
  s.access_expires_at = 1700000900;
  s.refresh_token = "refresh-token-value";
  s.refresh_expires_at = 1702592000;
  s.gateway_signing_key = SecretKey::generate_private().public_key();
  s.gateway_url = "https://gw:8443";
  return s;
}

TEST_F(IdentityTest, CreatedOnceWithMode0600AndReloaded) {
  auto a = AgentIdentity::load_or_create(path(kIdentityFile));
  ASSERT_TRUE(a) << a.error().message();
  struct stat st {};
  ASSERT_EQ(::stat(path(kIdentityFile).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  auto b = AgentIdentity::load_or_create(path(kIdentityFile));
  ASSERT_TRUE(b);
  EXPECT_EQ(a->public_key(), b->public_key());
  // The state directory itself is 0700.
  ASSERT_EQ(::stat(dir_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700);
}

TEST_F(IdentityTest, RefusesAReadableIdentityFile) {
  ASSERT_TRUE(AgentIdentity::load_or_create(path(kIdentityFile)));
  ::chmod(path(kIdentityFile).c_str(), 0644);
  auto again = AgentIdentity::load_or_create(path(kIdentityFile));
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().errno_value(), EPERM);
  EXPECT_NE(again.error().message().find("chmod 600"), std::string::npos);
}

TEST_F(IdentityTest, SignaturesVerifyWithThePublicKey) {
  auto id = AgentIdentity::load_or_create(path(kIdentityFile));
  ASSERT_TRUE(id);
  const std::string msg = "portcullis-agent-v1\nPOST /x\n1\nnonce\nabc";
  auto sig = base64_standard_decode(id->sign_base64(msg));
  ASSERT_TRUE(sig);
  ASSERT_EQ(sig->size(), 64u);
  EXPECT_EQ(crypto_sign_verify_detached(reinterpret_cast<const unsigned char*>(sig->data()),
                                        reinterpret_cast<const unsigned char*>(msg.data()),
                                        msg.size(), id->public_key().data()),
            0);
}

TEST_F(IdentityTest, EnrollmentStateRoundTripsSealed) {
  auto id = AgentIdentity::load_or_create(path(kIdentityFile));
  ASSERT_TRUE(id);
  const EnrollmentState s = sample();
  ASSERT_TRUE(save_enrollment(path(kEnrollmentFile), *id, s));
  struct stat st {};
  ASSERT_EQ(::stat(path(kEnrollmentFile).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  // Sealed: neither token appears in the file.
  std::ifstream in(path(kEnrollmentFile), std::ios::binary);
  const std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(raw.find(s.refresh_token), std::string::npos);
  EXPECT_EQ(raw.find(s.access_token), std::string::npos);

  auto loaded = load_enrollment(path(kEnrollmentFile), *id);
  ASSERT_TRUE(loaded && *loaded);
  EXPECT_EQ((*loaded)->refresh_token, s.refresh_token);
  EXPECT_EQ((*loaded)->access_token, s.access_token);
  EXPECT_EQ((*loaded)->device_id, "dev-1");
  EXPECT_EQ((*loaded)->access_expires_at, s.access_expires_at);
  EXPECT_EQ((*loaded)->gateway_signing_key, s.gateway_signing_key);
  EXPECT_TRUE((*loaded)->approved());
}

TEST_F(IdentityTest, TokenFileAloneIsUseless) {
  auto id = AgentIdentity::load_or_create(path(kIdentityFile));
  ASSERT_TRUE(id);
  ASSERT_TRUE(save_enrollment(path(kEnrollmentFile), *id, sample()));
  // Another identity (an attacker with the file but not identity.key) cannot open it.
  KeyBytes other{};
  other[0] = 1;
  auto stranger = AgentIdentity::from_seed(SecretKey(other));
  auto r = load_enrollment(path(kEnrollmentFile), stranger);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), EBADMSG);
}

TEST_F(IdentityTest, TamperedTokenFileIsRefused) {
  auto id = AgentIdentity::load_or_create(path(kIdentityFile));
  ASSERT_TRUE(id);
  std::string sealed = id->seal("{\"device_id\":\"x\"}");
  sealed[sealed.size() / 2] ^= 1;
  ASSERT_TRUE(write_file_atomic(path(kEnrollmentFile), sealed));
  auto r = load_enrollment(path(kEnrollmentFile), *id);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), EBADMSG);
  EXPECT_FALSE(id->unseal("short"));
}

TEST_F(IdentityTest, MissingEnrollmentIsNotAnError) {
  auto id = AgentIdentity::load_or_create(path(kIdentityFile));
  ASSERT_TRUE(id);
  auto r = load_enrollment(path(kEnrollmentFile), *id);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->has_value());
}

TEST_F(IdentityTest, AtomicWriteReplacesAndLeavesNoTemporaryFiles) {
  ASSERT_TRUE(write_file_atomic(path("f"), "one"));
  ASSERT_TRUE(write_file_atomic(path("f"), "two"));
  auto r = read_private_file(path("f"));
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, "two");
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_)) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1);
}

TEST_F(IdentityTest, FullDiskKeepsTheOldFileAndSaysSo) {
  // /dev/full: every write fails with ENOSPC. The temporary file lives beside the target, so a
  // file system that is full is simulated by a target directory we cannot write at all and by
  // the write path itself on /dev/full's errno.
  ASSERT_TRUE(write_file_atomic(path("f"), "old"));
  auto r = write_file_atomic("/proc/portcullis-no-such-dir/f", "new");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("create temporary file"), std::string::npos);
  auto still = read_private_file(path("f"));
  ASSERT_TRUE(still);
  EXPECT_EQ(*still, "old");
}

TEST_F(IdentityTest, FullFileSystemIsAClearError) {
  // A tiny tmpfs filled up: the real ENOSPC path. Needs root for mount; skipped otherwise.
  const std::string mnt = path("tiny");
  std::filesystem::create_directories(mnt);
  if (::geteuid() != 0 ||
      std::system(("mount -t tmpfs -o size=4k tmpfs " + mnt + " 2>/dev/null").c_str()) != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs (needs root)";
  }
  struct Unmount {
    std::string dir;
    ~Unmount() { ::umount2(dir.c_str(), MNT_DETACH); }
  } unmount{mnt};
  const std::string target = mnt + "/enrollment.sealed";
  ASSERT_TRUE(write_file_atomic(target, "old"));
  auto r = write_file_atomic(target, std::string(64 * 1024, 'x'));
  auto still = read_private_file(target);
  int leftovers = 0;
  for (const auto& e : std::filesystem::directory_iterator(mnt)) leftovers += e.path() != target;
  ASSERT_TRUE(still);
  EXPECT_EQ(*still, "old");
  EXPECT_EQ(leftovers, 0);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), ENOSPC);
  EXPECT_NE(r.error().message().find("the file system of " + mnt + " is full: free space there"),
            std::string::npos);
}

}  // namespace
}  // namespace portcullis::agent
