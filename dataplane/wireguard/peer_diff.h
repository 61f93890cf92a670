#pragma once
// The pure diff between the wanted and the running device (what `wg syncconf` does, minus its
// replace-all): unchanged peers are not mentioned, changed peers are updated in place with only
// their changed fields, missing peers are added, unwanted peers removed. Tested without a kernel.

#include "dataplane/wireguard/device.h"

namespace portcullis::wg {

// Rules:
// - a wanted peer without an endpoint leaves the running endpoint alone (agents roam);
// - a wanted peer without a preshared key means none: a running one is cleared;
// - allowed IPs compare as sets of masked prefixes, in any order;
// - removals come first in the delta, then changes and additions in `want` order.
DeviceDelta diff_device(const DeviceConfig& want, const DeviceState& have);

// Allowed IPs as the kernel keeps them: host bits cleared, sorted, duplicates dropped.
std::vector<IpPrefix> normalize_allowed_ips(const std::vector<IpPrefix>& ips);

}  // namespace portcullis::wg
