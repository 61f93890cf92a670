#include "dataplane/wireguard/uapi_device.h"

#include <poll.h>
#include <sodium.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>

namespace portcullis::wg {
namespace {

using SteadyClock = std::chrono::steady_clock;

int remaining_ms(SteadyClock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now());
  return left.count() < 0 ? 0 : static_cast<int>(left.count());
}

// Waits for `events` on fd until the deadline. 0 on ready, else an errno (ETIMEDOUT).
int wait_for(int fd, short events, SteadyClock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, remaining_ms(deadline));
    if (n > 0) return 0;
    if (n == 0) return ETIMEDOUT;
    if (errno != EINTR) return errno;
  }
}

std::string not_running(const std::string& ifname, const std::string& path, int err) {
  return "wireguard-go for '" + ifname + "' is not running (socket " + path + " " +
         (err == ENOENT         ? "does not exist"
          : err == ECONNREFUSED ? "refused the connection"
                                : "failed") +
         "): start it with `wireguard-go " + ifname + "` or let portcullis start it";
}

std::string peer_range(std::size_t first, std::size_t last) {
  return first == last ? std::to_string(first) : std::to_string(first) + "-" + std::to_string(last);
}

}  // namespace

Result<UniqueFd> connect_uapi_socket(const std::string& ifname, const std::string& path,
                                     SteadyClock::time_point deadline) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    return fail_errno(ENAMETOOLONG, "UAPI socket path '" + path + "' is too long");
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return fail(Error::last_errno("create a socket for the UAPI of '" + ifname + "'"));
  for (;;) {
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) break;
    int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN) {
      // A unix stream socket's backlog is full: wireguard-go is alive but busy. Retry briefly.
      if (remaining_ms(deadline) == 0) {
        return fail_errno(ETIMEDOUT, "connect to wireguard-go for '" + ifname + "' at " + path +
                                         ": its backlog stayed full; is it hung?");
      }
      ::poll(nullptr, 0, 5);
      continue;
    }
    if (err == ENOENT || err == ECONNREFUSED)
      return fail_errno(err, not_running(ifname, path, err));
    return fail_errno(err, "connect to wireguard-go for '" + ifname + "' at " + path);
  }
  return fd;
}

Result<std::unique_ptr<UapiWireguardDevice>> UapiWireguardDevice::open(std::string ifname,
                                                                       std::string socket_dir,
                                                                       UapiOptions options) {
  if (ifname.empty() || ifname.size() >= 16 || ifname.find('/') != std::string::npos) {
    return fail_invalid("'" + ifname + "' is not a valid interface name");
  }
  std::string path = socket_dir + "/" + ifname + ".sock";
  // Nothing listening means no wireguard-go: say so now rather than at the first read.
  auto fd = connect_uapi_socket(ifname, path, SteadyClock::now() + options.timeout);
  if (!fd) return fail(std::move(fd.error()));
  return std::unique_ptr<UapiWireguardDevice>(
      new UapiWireguardDevice(std::move(ifname), std::move(path), options));
}

Result<std::string> UapiWireguardDevice::exchange(std::string_view request, std::string_view what) {
  auto deadline = SteadyClock::now() + options_.timeout;
  std::string ctx = std::string(what) + " on '" + ifname_ + "' (" + socket_path_ + ")";
  auto fd = connect_uapi_socket(ifname_, socket_path_, deadline);
  if (!fd) return fail(std::move(fd.error()));

  std::size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = ::send(fd->get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n >= 0) {
      sent += static_cast<std::size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      if (int err = wait_for(fd->get(), POLLOUT, deadline)) {
        return fail_errno(err, ctx + ": wireguard-go stopped reading the request (hung?)");
      }
      continue;
    }
    if (errno == EPIPE || errno == ECONNRESET) {
      return fail_errno(errno,
                        ctx + ": wireguard-go closed the connection while we sent; did it exit?");
    }
    return fail(Error::last_errno(ctx + ": send"));
  }

  std::string reply;
  char buf[16384];
  for (;;) {
    ssize_t n = ::recv(fd->get(), buf, sizeof buf, 0);
    if (n > 0) {
      reply.append(buf, static_cast<std::size_t>(n));
      if (reply.size() > options_.max_reply_bytes) {
        sodium_memzero(reply.data(), reply.size());
        return fail_errno(EMSGSIZE, ctx + ": reply is larger than the limit of " +
                                        std::to_string(options_.max_reply_bytes) + " bytes");
      }
      if (uapi::reply_complete(reply)) break;
      continue;
    }
    if (n == 0 || errno == ECONNRESET) {
      std::size_t got = reply.size();
      sodium_memzero(reply.data(), reply.size());
      return fail_errno(n == 0 ? EPIPE : ECONNRESET,
                        ctx + ": wireguard-go closed the connection after " + std::to_string(got) +
                            " bytes of its reply; did it exit?");
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      if (int err = wait_for(fd->get(), POLLIN, deadline)) {
        std::size_t got = reply.size();
        sodium_memzero(reply.data(), reply.size());
        return fail_errno(err, ctx + ": no complete reply within " +
                                   std::to_string(options_.timeout.count()) + " ms (got " +
                                   std::to_string(got) + " bytes); is wireguard-go hung?");
      }
      continue;
    }
    return fail(Error::last_errno(ctx + ": recv"));
  }
  return reply;
}

Result<DeviceState> UapiWireguardDevice::read() {
  auto reply = exchange("get=1\n\n", "get=1");
  if (!reply) return fail(std::move(reply.error()));
  auto state = uapi::parse_get_reply(ifname_, *reply, options_.max_reply_bytes);
  sodium_memzero(reply->data(), reply->size());  // it holds the private key
  return state;
}

Status UapiWireguardDevice::apply(const DeviceDelta& delta) {
  auto transactions = uapi::format_set(delta, options_.max_transaction_bytes);
  const std::size_t total = delta.peers.size();
  for (std::size_t t = 0; t < transactions.size(); ++t) {
    const uapi::SetTransaction& tx = transactions[t];
    Error err;
    auto reply = exchange(tx.text, "set=1");
    if (reply) {
      auto code = uapi::parse_set_reply(ifname_, *reply);
      if (code && *code == 0) continue;
      err = code ? Error::from_errno(*code, "wireguard-go rejected the change with errno=" +
                                                std::to_string(*code))
                 : std::move(code.error());
    } else {
      err = std::move(reply.error());
    }

    std::string ctx = "device '" + ifname_ + "': ";
    if (total == 0) {
      ctx += "device settings not applied";
    } else {
      std::size_t done = tx.first_peer;  // peers in earlier transactions, all applied
      ctx += done == 0 ? "applied no peers" : "applied peers " + peer_range(1, done);
      ctx += " of " + std::to_string(total) + ", not applied " + peer_range(done + 1, total) +
             " starting at peer '" + delta.peers[done].public_key.short_name() + "…'";
      if (t == 0 && (delta.private_key || delta.listen_port || delta.fwmark)) {
        ctx += " (device settings too)";
      }
      if (tx.end_peer > tx.first_peer) {
        ctx += "; wireguard-go applies line by line, so some of peers " +
               peer_range(done + 1, tx.end_peer) + " may be applied";
      }
    }
    return fail(std::move(err).wrap(ctx));
  }
  return {};
}

}  // namespace portcullis::wg
