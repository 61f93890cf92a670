#pragma once
// The text form of allowlist entries, shared by the config file and the API:
//   "5985"      -> 5985/tcp and 5985/udp
//   "5985/tcp"  -> 5985/tcp
//   "3478/udp"  -> 3478/udp
// Ports are 1..65535 in decimal; protocols are tcp or udp, lowercase.

#include <string>
#include <string_view>
#include <vector>

#include "controlplane/state/store.h"
#include "dataplane/base/result.h"

namespace portcullis::state {

// One entry; EINVAL with a message that quotes the entry and says what is allowed.
Result<std::vector<PortRule>> parse_port_rule(std::string_view text);

// A list of entries: sorted, and EINVAL if two entries name the same port and protocol
// ("'5985/tcp' repeats 5985/tcp from '5985'").
Result<std::vector<PortRule>> parse_port_rules(const std::vector<std::string>& entries);

// "5985/tcp".
std::string format_port_rule(const PortRule& rule);

}  // namespace portcullis::state
