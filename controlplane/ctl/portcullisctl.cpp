// portcullisctl: drives the dataplane without the daemon.
//   portcullisctl wg up portcullis0 --listen-port 30000 --address 10.255.0.1/16 --private-key-file
//   F portcullisctl wg sync portcullis0 peers.conf     apply a wg(8) config as a diff portcullisctl
//   wg dump portcullis0                state as JSON (no secrets) portcullisctl wg down portcullis0

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "controlplane/ctl/wg_json.h"
#include "dataplane/base/key_file.h"
#include "dataplane/link/netlink_links.h"
#include "dataplane/tunnel/tunnel_interface.h"
#include "dataplane/wireguard/open_device.h"
#include "dataplane/wireguard/peer_diff.h"
#include "dataplane/wireguard/wg_conf.h"

namespace portcullis::ctl {
namespace {

int report(const Error& e) {
  std::fprintf(stderr, "portcullisctl: %s\n", e.message().c_str());
  return 1;
}

Result<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(Error::last_errno("read '" + path + "'"));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Common {
  std::string ifname;
  std::string backend = "auto";
  std::string socket_dir = wg::kDefaultUapiSocketDir;

  Result<wg::OpenOptions> open_options() const {
    auto b = wg::parse_backend(backend);
    if (!b) return fail(std::move(b.error()));
    return wg::OpenOptions{*b, socket_dir};
  }
};

int cmd_up(const Common& c, const std::vector<std::string>& addresses, std::uint32_t mtu,
           std::uint16_t listen_port, const std::string& key_file) {
  auto opts = c.open_options();
  if (!opts) return report(opts.error());
  tunnel::TunnelInterfaceSpec spec;
  spec.ifname = c.ifname;
  spec.backend = opts->backend;
  spec.uapi_socket_dir = opts->uapi_socket_dir;
  if (mtu) spec.mtu = mtu;
  for (const auto& a : addresses) {
    auto p = IpPrefix::parse(a);
    if (!p) return report(std::move(p.error()).wrap("--address"));
    spec.addresses.push_back(*p);
  }
  auto links = link::NetlinkLinks::open();
  if (!links) return report(links.error());
  auto tun = tunnel::ensure_tunnel_interface(spec, **links);
  if (!tun) return report(tun.error());

  auto state = tun->device->read();
  if (!state) return report(state.error());
  wg::DeviceDelta delta;
  if (!key_file.empty()) {
    auto key = load_or_create_private_key(key_file);
    if (!key) return report(key.error());
    if (!state->private_key || !state->private_key->equals(*key)) delta.private_key = *key;
  }
  if (listen_port && listen_port != state->listen_port) delta.listen_port = listen_port;
  if (auto s = tun->device->apply(delta); !s) return report(s.error());

  auto after = tun->device->read();
  if (!after) return report(after.error());
  std::printf(
      "%s: %s backend%s, link %s, public key %s, listening on UDP %u\n", c.ifname.c_str(),
      wg::backend_name(tun->backend), tun->started_wireguard_go ? " (started wireguard-go)" : "",
      tun->link_changes.to_string().c_str(),
      after->public_key ? after->public_key->to_base64().c_str() : "(none)", after->listen_port);
  return 0;
}

int cmd_sync(const Common& c, const std::string& file, bool dry_run) {
  auto text = read_file(file);
  if (!text) return report(text.error());
  auto want = wg::parse_wg_conf(*text);
  if (!want) return report(std::move(want.error()).wrap("'" + file + "'"));
  auto opts = c.open_options();
  if (!opts) return report(opts.error());
  auto dev = wg::open_device(c.ifname, *opts);
  if (!dev) return report(dev.error());
  auto have = (*dev)->read();
  if (!have) return report(have.error());
  auto delta = wg::diff_device(*want, *have);
  std::size_t added = 0, updated = 0, removed = 0;
  for (const auto& p : delta.peers) (p.remove ? removed : p.update_only ? updated : added)++;
  std::printf(
      "%s: %zu peers wanted, %zu running: %zu to add, %zu to update, %zu to remove%s\n",
      c.ifname.c_str(), want->peers.size(), have->peers.size(), added, updated, removed,
      delta.private_key || delta.listen_port || delta.fwmark ? ", device settings change" : "");
  if (dry_run || delta.empty()) return 0;
  if (auto s = (*dev)->apply(delta); !s) return report(s.error());
  return 0;
}

int cmd_dump(const Common& c) {
  auto opts = c.open_options();
  if (!opts) return report(opts.error());
  auto dev = wg::open_device(c.ifname, *opts);
  if (!dev) return report(dev.error());
  auto state = (*dev)->read();
  if (!state) return report(state.error());
  std::cout << device_state_to_json(*state).dump(2) << "\n";
  return 0;
}

int cmd_down(const Common& c) {
  auto links = link::NetlinkLinks::open();
  if (!links) return report(links.error());
  if (auto s = tunnel::remove_tunnel_interface(c.ifname, **links, c.socket_dir); !s) {
    return report(s.error());
  }
  return 0;
}

int run(int argc, char** argv) {
  CLI::App app{"portcullisctl: drive the Portcullis dataplane"};
  app.require_subcommand(1);
  auto* wg_cmd = app.add_subcommand("wg", "WireGuard interface and peers");
  wg_cmd->require_subcommand(1);

  Common c;
  auto add_common = [&c](CLI::App* sub) {
    sub->add_option("ifname", c.ifname, "interface name, e.g. portcullis0")->required();
    sub->add_option("--backend", c.backend, "auto | kernel | userspace")
        ->check(CLI::IsMember({"auto", "kernel", "userspace"}));
    sub->add_option("--uapi-socket-dir", c.socket_dir, "where wireguard-go's sockets are");
  };

  std::vector<std::string> addresses;
  std::uint32_t mtu = 0;
  std::uint16_t listen_port = 0;
  std::string key_file;
  auto* up = wg_cmd->add_subcommand("up", "create or converge the interface (idempotent)");
  add_common(up);
  up->add_option("--address", addresses, "address with prefix length, repeatable");
  up->add_option("--mtu", mtu, "MTU in bytes")->check(CLI::Range(68u, 65535u));
  up->add_option("--listen-port", listen_port, "UDP port")->check(CLI::Range(1, 65535));
  up->add_option("--private-key-file", key_file,
                 "private key file (created with mode 0600 if missing)");

  std::string file;
  bool dry_run = false;
  auto* sync = wg_cmd->add_subcommand("sync", "apply a wg(8) config file as a diff");
  add_common(sync);
  sync->add_option("file", file, "wg(8) configuration file")->required();
  sync->add_flag("--dry-run", dry_run, "only print what would change");

  auto* dump = wg_cmd->add_subcommand("dump", "print the device state as JSON");
  add_common(dump);
  auto* down = wg_cmd->add_subcommand("down", "delete the interface");
  add_common(down);

  CLI11_PARSE(app, argc, argv);
  if (*up) return cmd_up(c, addresses, mtu, listen_port, key_file);
  if (*sync) return cmd_sync(c, file, dry_run);
  if (*dump) return cmd_dump(c);
  if (*down) return cmd_down(c);
  return 2;
}

}  // namespace
}  // namespace portcullis::ctl

int main(int argc, char** argv) { return portcullis::ctl::run(argc, argv); }
