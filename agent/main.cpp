// portcullis-agent: the program on each managed endpoint. See agent.h for what it does.
//
//   portcullis-agent [--config /etc/portcullis/agent.toml]
//   portcullis-agent --check-config     validate the configuration, print it, exit 0 or 1

#include <signal.h>
#include <sodium.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <iostream>

#include <CLI/CLI.hpp>

#include "agent/agent.h"
#include "agent/health_server.h"
#include "agent/privileges.h"
#include "dataplane/base/log.h"
#include "dataplane/link/netlink_links.h"

extern char** environ;

namespace {

std::atomic<bool> g_stop{false};

void on_signal(int) { g_stop.store(true); }

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int fatal(const portcullis::Error& e, const std::string& what) {
  portcullis::log_error(what, {{"error", e.message()}});
  return 1;
}

int run(int argc, char** argv) {
  using namespace portcullis;
  CLI::App app{"portcullis-agent: WireGuard tunnel to a Portcullis gateway"};
  std::string config_path;
  bool check = false;
  app.add_option("--config", config_path, "the agent's TOML configuration")
      ->default_str(agent::kDefaultConfigPath);
  app.add_flag("--check-config", check, "validate the configuration and exit");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  auto config = agent::load_agent_config(config_path, agent::environment_from(environ));
  if (!config) {
    std::fprintf(stderr, "portcullis-agent: %s\n", config.error().context().c_str());
    return 1;
  }
  if (check) {
    std::cout << agent::describe(*config) << "configuration ok\n";
    return 0;
  }
  set_log_level(config->log_level);
  if (sodium_init() < 0) {
    log_error("libsodium did not initialise");
    return 1;
  }

  // Handlers first: a start that waits for disk space must still stop on SIGTERM.
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto keys = agent::open_state_dir(config->state_dir, g_stop);
  if (!keys) {
    if (keys.error().errno_value() == ECANCELED) return 0;
    return fatal(keys.error(), "cannot use the state directory");
  }
  auto links = link::NetlinkLinks::open();
  if (!links) return fatal(links.error(), "cannot open rtnetlink (the agent needs CAP_NET_ADMIN)");

  agent::StatusBoard board;
  std::unique_ptr<agent::HealthServer> health;
  if (config->health_port != 0) {
    auto h = agent::HealthServer::start(
        static_cast<std::uint16_t>(config->health_port), [&board](const std::string& path) {
          auto s = board.snapshot();
          if (path == "/healthz") {
            return agent::HealthResponse{s.healthy() ? 200 : 503, "application/json",
                                         s.to_json().dump() + "\n"};
          }
          if (path == "/metrics") {
            return agent::HealthResponse{200, "text/plain; version=0.0.4", s.to_prometheus()};
          }
          return agent::HealthResponse{404, "text/plain", "not found\n"};
        });
    if (!h) return fatal(h.error(), "cannot start the health endpoint");
    health = std::move(*h);
    log_info("health endpoint listening",
             {{"url", "http://127.0.0.1:" + std::to_string(health->port()) + "/healthz"}});
  }

  // Everything that needs more than CAP_NET_ADMIN is done (state files, keys, sockets): keep that
  // one capability for healing and drop the rest (see privileges.h).
  if (auto s = agent::keep_only_net_admin(); !s) {
    return fatal(s.error(), "cannot drop privileges");
  }
  if (auto caps = agent::read_capabilities()) {
    char text[40];
    std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(caps->effective));
    log_info("privileges dropped, keeping CAP_NET_ADMIN only", {{"cap_eff", text}});
  }

  agent::Agent a(*config, std::move(keys->identity), std::move(keys->wireguard), **links, board,
                 unix_now);
  return a.run(g_stop);
}

}  // namespace

int main(int argc, char** argv) { return run(argc, argv); }
