#include "controlplane/api/crypto.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "tests/support/temp_dir.h"

namespace portcullis::api {
namespace {

namespace fs = std::filesystem;
using portcullis::testing::TempDir;

std::span<const std::uint8_t> bytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

TEST(Crypto, Sha256KnownAnswer) {
  EXPECT_EQ(hex(sha256("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Crypto, Base64UrlIsStrict) {
  EXPECT_EQ(base64url_encode(bytes("\xfb\xff")), "-_8");
  EXPECT_EQ(base64url_decode("-_8").value(), "\xfb\xff");
  EXPECT_FALSE(base64url_decode("-_8="));  // padding
  EXPECT_FALSE(base64url_decode("+/8"));   // standard alphabet
  EXPECT_FALSE(base64url_decode("-_9"));   // unused low bits set
  EXPECT_FALSE(base64url_decode("-_ 8"));  // whitespace
  EXPECT_EQ(base64url_decode("").value(), "");
  EXPECT_EQ(random_base64url(16).size(), 22u);
  EXPECT_NE(random_base64url(16), random_base64url(16));
}

TEST(Crypto, Base64IsStrict) {
  EXPECT_EQ(base64_encode(bytes("\xfb\xff")), "+/8=");
  EXPECT_EQ(base64_decode("+/8=").value(), "\xfb\xff");
  EXPECT_FALSE(base64_decode("+/8"));      // missing padding
  EXPECT_FALSE(base64_decode("-_8="));     // URL alphabet
  EXPECT_FALSE(decode_signature("+/8="));  // not 64 bytes
}

TEST(Crypto, SignAndVerify) {
  SigningKey key = SigningKey::generate();
  SigningKey other = SigningKey::generate();
  Signature sig = key.sign("message");
  EXPECT_TRUE(ed25519_verify(key.public_key(), "message", sig));
  EXPECT_FALSE(ed25519_verify(key.public_key(), "messagf", sig));
  EXPECT_FALSE(ed25519_verify(other.public_key(), "message", sig));
  auto decoded = decode_signature(key.sign_base64("message"));
  ASSERT_TRUE(decoded);
  EXPECT_EQ(*decoded, sig);  // Ed25519 is deterministic
  EXPECT_EQ(key.sign_base64("m").size(), 88u);
  EXPECT_EQ(key.key_id().size(), 22u);
  EXPECT_NE(key.key_id(), other.key_id());
}

TEST(Crypto, SeedFileIsCreated0600AndReloaded) {
  TempDir dir("pcl-api");
  const std::string path = (dir.path() / "signing.key").string();
  auto created = SigningKey::load_or_create(path);
  ASSERT_TRUE(created) << created.error().message();
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  auto loaded = SigningKey::load_or_create(path);
  ASSERT_TRUE(loaded) << loaded.error().message();
  EXPECT_EQ(loaded->public_key(), created->public_key());
  EXPECT_EQ(loaded->key_id(), created->key_id());
  // The file holds the seed: the same key signs the same bytes identically.
  EXPECT_EQ(loaded->sign("x"), created->sign("x"));
}

TEST(Crypto, SeedFileReadableByOthersIsRefused) {
  TempDir dir("pcl-api");
  const std::string path = (dir.path() / "signing.key").string();
  ASSERT_TRUE(SigningKey::load_or_create(path));
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  auto r = SigningKey::load_or_create(path);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().errno_value(), EPERM);
  EXPECT_NE(r.error().message().find("chmod 600"), std::string::npos);
}

TEST(Crypto, GarbledSeedFileIsAnError) {
  TempDir dir("pcl-api");
  const std::string path = (dir.path() / "signing.key").string();
  {
    std::ofstream f(path);
    f << "not a key\n";
  }
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  auto r = SigningKey::load_or_create(path);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find(path), std::string::npos);
}

}  // namespace
}  // namespace portcullis::api
