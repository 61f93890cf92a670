#include "tests/support/agent_tunnel.h"

#include <vector>

#include "dataplane/link/netlink_links.h"

namespace portcullis::testing {

Result<tunnel::TunnelInterface> bring_up_agent_tunnel(const std::string& ifname,
                                                      const SecretKey& private_key,
                                                      const nlohmann::json& doc) {
  auto links = link::NetlinkLinks::open();
  if (!links) return fail(links.error());
  tunnel::TunnelInterfaceSpec spec;
  spec.ifname = ifname;
  spec.backend = wg::Backend::kUserspace;
  spec.addresses = {*IpPrefix::parse(doc.value("address", ""))};
  spec.routes = {*IpPrefix::parse("10.255.0.1/32")};
  auto tun = tunnel::ensure_tunnel_interface(spec, **links);
  if (!tun) return fail(tun.error());
  wg::DeviceDelta d;
  d.private_key = private_key;
  wg::PeerChange gw;
  gw.public_key = *Key::from_base64(doc["gateway_wg_public_key"].get<std::string>());
  const std::string endpoint = doc["gateway_endpoint"];  // "10.0.9.1:30000"
  gw.endpoint = Endpoint(*IpAddress::parse(endpoint.substr(0, endpoint.rfind(':'))),
                         doc["gateway_port"].get<int>());
  gw.allowed_ips = std::vector<IpPrefix>{*IpPrefix::parse("10.255.0.1/32")};
  gw.persistent_keepalive = doc["persistent_keepalive"].get<int>();
  d.peers = {gw};
  if (auto st = tun->device->apply(d); !st) return fail(st.error());
  return tun;
}

}  // namespace portcullis::testing
