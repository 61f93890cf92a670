// libFuzzer target: the kernel WireGuard dump parser, fed whole streams of netlink messages (as
// read() collects them), plus the ACK and family-reply parsers on the same bytes. Any input must
// give a value or an error; a crash, a sanitizer report or a hang is a bug.
// Seeds: tests/fuzz/corpus/genl_dump (family id 0x1c, the value the seeds use).

#include <cstddef>
#include <cstdint>
#include <span>

#include "dataplane/wireguard/genl_messages.h"

namespace {
constexpr std::uint16_t kFamily = 0x1c;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::span<const std::uint8_t> bytes(data, size);
  auto state = portcullis::wg::genl::parse_get_device_dump(bytes, kFamily);
  if (state) {
    std::size_t ips = 0;
    for (const auto& p : state->peers) ips += p.allowed_ips.size();
    (void)ips;
  }
  (void)portcullis::wg::genl::parse_ack(bytes);
  (void)portcullis::wg::genl::parse_family_reply(bytes);
  return 0;
}
