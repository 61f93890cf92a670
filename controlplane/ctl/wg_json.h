#pragma once
// The JSON form of a WireGuard device's state, as `portcullisctl wg dump` prints it and the API
// will serve it. Secrets never appear: only whether a preshared key is set.

#include <nlohmann/json.hpp>

#include "dataplane/wireguard/device.h"

namespace portcullis::ctl {

nlohmann::json device_state_to_json(const wg::DeviceState& state);

}  // namespace portcullis::ctl
