#pragma once
// Links over rtnetlink (libmnl). One request at a time, each one ACKed and checked.

#include <libmnl/libmnl.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "dataplane/link/links.h"
#include "dataplane/link/rtnl_message.h"

namespace portcullis::link {

// The one owner of a NETLINK_ROUTE socket, with extended ACKs on when the kernel has them.
class RtnlSocket {
 public:
  // Bound in the calling thread's network namespace, which the socket keeps for its life.
  static Result<RtnlSocket> open();

  std::uint32_t next_seq() { return ++seq_; }

  // Sends one request and reads its whole reply, handing each reply message to on_message.
  Status transact(std::span<const std::uint8_t> request,
                  const rtnl::ReplyReader::OnMessage& on_message, bool* interrupted = nullptr);

 private:
  struct Closer {
    void operator()(mnl_socket* s) const {
      if (s) mnl_socket_close(s);
    }
  };

  RtnlSocket(mnl_socket* s, std::uint32_t portid, std::uint32_t seq)
      : socket_(s), portid_(portid), seq_(seq), buffer_(kReceiveBufferSize) {}

  // The kernel sizes dump datagrams to the reader's buffer, capped at 32 KiB; twice that is room.
  static constexpr std::size_t kReceiveBufferSize = 64 * 1024;

  std::unique_ptr<mnl_socket, Closer> socket_;
  std::uint32_t portid_;
  std::uint32_t seq_;
  std::vector<std::uint8_t> buffer_;
};

class NetlinkLinks final : public Links {
 public:
  static Result<std::unique_ptr<NetlinkLinks>> open();

  Result<LinkState> read(const std::string& ifname) override;
  Result<LinkChanges> ensure(const LinkSpec& spec) override;
  Status remove(const std::string& ifname) override;

  // Requests that change kernel state sent so far (an ensure() with nothing to do sends none).
  std::uint64_t changing_requests() const { return changing_requests_; }

 private:
  explicit NetlinkLinks(RtnlSocket socket) : socket_(std::move(socket)) {}

  Result<std::optional<rtnl::LinkMessage>> get_link(const std::string& ifname);
  Result<std::optional<LinkState>> read_if_exists(const std::string& ifname);
  Status change(const rtnl::Message& request, const std::string& context);
  Status apply(const LinkSpec& spec, const LinkChanges& plan, std::uint32_t ifindex);

  RtnlSocket socket_;
  std::uint64_t changing_requests_ = 0;
};

}  // namespace portcullis::link
