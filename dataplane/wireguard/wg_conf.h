#pragma once
// The wg(8) configuration file format (what `wg setconf` and `wg showconf` use):
//
//   [Interface]
//   PrivateKey = <base64>
//   ListenPort = 30000
//   FwMark = 0x1234 | off
//
//   [Peer]
//   PublicKey = <base64>
//   PresharedKey = <base64>
//   AllowedIPs = 10.255.0.7/32, fd00::7/128
//   Endpoint = 192.0.2.10:51820 | [2001:db8::1]:51820
//   PersistentKeepalive = 25 | off
//
// Keys are case-insensitive, '#' starts a comment. Endpoints must be numeric (no DNS here).
// wg-quick keys (Address, DNS, MTU, PostUp, ...) are rejected: they are not wg(8) settings.

#include <string>
#include <string_view>

#include "dataplane/base/result.h"
#include "dataplane/wireguard/device.h"

namespace portcullis::wg {

// Parses a whole file. Errors name the line ("line 12: AllowedIPs: '10.0.0.1/33' ...").
// Duplicate peers, duplicate keys in a section and peers without PublicKey are errors.
Result<DeviceConfig> parse_wg_conf(std::string_view text);

// Writes a configuration in the same format; `parse_wg_conf(format_wg_conf(c))` gives `c` back.
// The private key is included: write the result only to a 0600 file.
std::string format_wg_conf(const DeviceConfig& config);

}  // namespace portcullis::wg
