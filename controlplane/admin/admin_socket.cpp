#include "controlplane/admin/admin_socket.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

namespace portcullis::admin {
namespace {

// A reply or request that stalls longer than this is dropped.
constexpr int kIoTimeoutMs = 30'000;

Result<sockaddr_un> socket_address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) {
    return fail_invalid("admin socket path '" + path + "' is empty or too long");
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

Result<UniqueFd> connect_to(const std::string& path) {
  auto addr = socket_address(path);
  if (!addr) return fail(std::move(addr.error()));
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return fail(Error::last_errno("create unix socket"));
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&*addr), sizeof *addr) != 0) {
    return fail(Error::last_errno("connect to '" + path + "'"));
  }
  return fd;
}

// Reads until a newline (not included) or EOF, within the limit and the deadline.
Result<std::string> read_line(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, kIoTimeoutMs);
    if (r == 0) return fail_errno(ETIMEDOUT, "read admin message");
    if (r < 0) {
      if (errno == EINTR) continue;
      return fail(Error::last_errno("read admin message"));
    }
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(Error::last_errno("read admin message"));
    }
    if (n == 0) return out;
    out.append(buf, static_cast<std::size_t>(n));
    if (auto nl = out.find('\n'); nl != std::string::npos) return out.substr(0, nl);
    if (out.size() > kMaxRequestBytes) return fail_errno(EMSGSIZE, "admin message too large");
  }
}

Status write_all(int fd, const std::string& data) {
  std::size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(Error::last_errno("write admin message"));
    }
    off += static_cast<std::size_t>(n);
  }
  return {};
}

}  // namespace

Result<std::unique_ptr<AdminServer>> AdminServer::start(const std::string& path,
                                                        AdminHandler handler) {
  auto addr = socket_address(path);
  if (!addr) return fail(std::move(addr.error()));
  std::error_code ec;
  auto dir = std::filesystem::path(path).parent_path();
  std::filesystem::create_directories(dir, ec);
  if (ec) return fail(Error(ec, "create directory '" + dir.string() + "'"));
  ::chmod(dir.c_str(), 0700);

  if (auto running = connect_to(path)) {
    return fail_errno(EADDRINUSE, "another portcullisd answers on '" + path + "': stop it first");
  }
  ::unlink(path.c_str());  // stale: nobody listens on it

  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return fail(Error::last_errno("create admin socket"));
  // The socket is created 0600 (umask for the bind), then checked.
  mode_t old = ::umask(0177);
  int rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&*addr), sizeof *addr);
  int bind_errno = errno;
  ::umask(old);
  if (rc != 0) return fail_errno(bind_errno, "bind admin socket '" + path + "'");
  if (::listen(fd.get(), 16) != 0) return fail(Error::last_errno("listen on '" + path + "'"));

  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) != 0) return fail(Error::last_errno("pipe"));
  return std::unique_ptr<AdminServer>(new AdminServer(path, std::move(fd), UniqueFd(pipefd[0]),
                                                      UniqueFd(pipefd[1]), std::move(handler)));
}

AdminServer::AdminServer(std::string path, UniqueFd listener, UniqueFd stop_read,
                         UniqueFd stop_write, AdminHandler handler)
    : path_(std::move(path)),
      listener_(std::move(listener)),
      stop_read_(std::move(stop_read)),
      stop_write_(std::move(stop_write)),
      handler_(std::move(handler)) {
  thread_ = std::thread([this] { serve(); });
}

AdminServer::~AdminServer() {
  char c = 0;
  [[maybe_unused]] auto n = ::write(stop_write_.get(), &c, 1);
  if (thread_.joinable()) thread_.join();
  ::unlink(path_.c_str());
}

void AdminServer::serve() {
  for (;;) {
    pollfd fds[2] = {{listener_.get(), POLLIN, 0}, {stop_read_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents) return;
    UniqueFd conn(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (conn) handle(conn.get());
  }
}

void AdminServer::handle(int fd) {
  auto reply = [fd](const nlohmann::json& j) { (void)write_all(fd, j.dump() + "\n"); };
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
      (cred.uid != 0 && cred.uid != ::geteuid())) {
    reply({{"ok", false}, {"error", "permission denied: the admin socket is for root"}});
    return;
  }
  auto line = read_line(fd);
  if (!line) {
    reply({{"ok", false}, {"error", line.error().message()}});
    return;
  }
  auto req = nlohmann::json::parse(*line, nullptr, /*allow_exceptions=*/false);
  if (req.is_discarded() || !req.is_object() || !req.contains("command") ||
      !req["command"].is_string()) {
    reply({{"ok", false}, {"error", "bad request: expected {\"command\": \"…\", \"args\": {…}}"}});
    return;
  }
  nlohmann::json args = req.value("args", nlohmann::json::object());
  if (!args.is_object()) {
    reply({{"ok", false}, {"error", "bad request: args must be an object"}});
    return;
  }
  auto result = handler_(req["command"].get<std::string>(), args);
  if (!result) {
    reply({{"ok", false}, {"error", result.error().context()}});
    return;
  }
  reply({{"ok", true}, {"result", *result}});
}

Result<nlohmann::json> admin_request(const std::string& path, const std::string& command,
                                     const nlohmann::json& args) {
  auto fd = connect_to(path);
  if (!fd) {
    int e = fd.error().errno_value();
    if (e == ENOENT || e == ECONNREFUSED) {
      return fail_errno(e, "portcullisd is not running (no answer on '" + path +
                               "'): start it with systemctl start portcullisd");
    }
    return fail(std::move(fd.error()));
  }
  nlohmann::json req = {{"command", command}, {"args", args}};
  if (auto s = write_all(fd->get(), req.dump() + "\n"); !s) return fail(std::move(s.error()));
  ::shutdown(fd->get(), SHUT_WR);
  auto line = read_line(fd->get());
  if (!line) return fail(std::move(line.error()));
  auto reply = nlohmann::json::parse(*line, nullptr, false);
  if (reply.is_discarded() || !reply.is_object() || !reply.contains("ok")) {
    return fail_errno(EPROTO, "portcullisd sent a malformed admin reply");
  }
  if (!reply["ok"].is_boolean() || !reply["ok"].get<bool>()) {
    std::string msg = reply.contains("error") && reply["error"].is_string()
                          ? reply["error"].get<std::string>()
                          : "unknown error";
    return fail_errno(EPERM, "portcullisd refused '" + command + "': " + msg);
  }
  return reply.value("result", nlohmann::json());
}

}  // namespace portcullis::admin
