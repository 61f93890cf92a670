#pragma once
// What the agent tells the gateway about its machine (the `details` call): host name, OS
// (PRETTY_NAME of /etc/os-release), kernel (uname), and its addresses (not loopback, not the
// tunnel interface). Integers and strings only: the gateway refuses floats.

#include <string>

#include <nlohmann/json.hpp>

namespace portcullis::agent {

std::string local_hostname();
// PRETTY_NAME from os-release text; "" when absent.
std::string os_pretty_name(const std::string& os_release_text);
nlohmann::json collect_inventory(const std::string& hostname, const std::string& tunnel_ifname);

}  // namespace portcullis::agent
