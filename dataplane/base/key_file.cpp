#include "dataplane/base/key_file.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string_view>

#include "dataplane/base/unique_fd.h"

namespace portcullis {

Result<SecretKey> load_or_create_private_key(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd && errno == ENOENT) {
    auto key = SecretKey::generate_private();
    UniqueFd out(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!out) return fail(Error::last_errno("create private key file '" + path + "'"));
    std::string text = key.reveal_base64() + "\n";
    bool ok = ::write(out.get(), text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
              ::fsync(out.get()) == 0;
    sodium_memzero(text.data(), text.size());
    if (!ok) {
      auto e = Error::last_errno("write private key file '" + path + "'");
      ::unlink(path.c_str());  // a half-written key would fail every later start
      return fail(std::move(e));
    }
    return key;
  }
  if (!fd) return fail(Error::last_errno("open private key file '" + path + "'"));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return fail(Error::last_errno("stat '" + path + "'"));
  if (st.st_mode & 077) {
    return fail_errno(
        EPERM, "private key file '" + path + "' is readable by group or others: chmod 600 it");
  }
  char buf[128];
  ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
  if (n < 0) return fail(Error::last_errno("read '" + path + "'"));
  std::string_view text(buf, static_cast<std::size_t>(n));
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
  auto key = SecretKey::from_base64(text);
  sodium_memzero(buf, sizeof buf);
  if (!key) return fail(std::move(key.error()).wrap("private key file '" + path + "'"));
  return key;
}

}  // namespace portcullis
