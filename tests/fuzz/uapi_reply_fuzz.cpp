// libFuzzer target: the reply wireguard-go writes on its UAPI socket (uapi_protocol.h), as
// UapiWireguardDevice reads it. Any input must give a state or an error; a crash, a sanitizer
// report or a hang is a bug. Seeds: tests/fuzz/corpus/uapi (one captured from wireguard-go).

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <unordered_set>

#include "dataplane/wireguard/uapi_protocol.h"

namespace {
// Small, so that inputs near the limit are reachable.
constexpr std::size_t kMaxReply = 1 << 16;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto state = portcullis::wg::uapi::parse_get_reply("pclfuzz0", text, kMaxReply);
  if (state) {
    // What the parser promises: a complete reply, each peer once.
    if (!portcullis::wg::uapi::reply_complete(text)) std::abort();
    std::unordered_set<portcullis::Key> keys;
    for (const auto& p : state->peers) {
      if (!keys.insert(p.public_key).second) std::abort();
    }
  }
  (void)portcullis::wg::uapi::parse_set_reply("pclfuzz0", text);
  return 0;
}
