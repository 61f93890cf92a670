// portcullis-agent: the program on each managed endpoint. See agent.h for what it does, and
// privileges.h for its two processes (the worker, and the tunnel keeper it starts).
//
//   portcullis-agent [--config /etc/portcullis/agent.toml]
//   portcullis-agent --check-config     validate the configuration, print it, exit 0 or 1

#include <signal.h>
#include <sodium.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>

#include <CLI/CLI.hpp>

#include "agent/agent.h"
#include "agent/health_server.h"
#include "agent/privileges.h"
#include "agent/tunnel_controller.h"
#include "agent/tunnel_keeper.h"
#include "dataplane/base/log.h"
#include "dataplane/link/netlink_links.h"

extern char** environ;

namespace {

std::atomic<bool> g_stop{false};
std::atomic<bool> g_keeper_gone{false};

void on_signal(int) { g_stop.store(true); }
// The worker's only child is the tunnel keeper.
void on_child(int) {
  g_keeper_gone.store(true);
  g_stop.store(true);
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int fatal(const portcullis::Error& e, const std::string& what) {
  portcullis::log_error(what, {{"error", e.message()}});
  return 1;
}

// The tunnel keeper (privileges.h): CAP_NET_ADMIN only, the WireGuard key, rtnetlink and the
// TunnelController, answering the worker on `socket` until it goes. The exit status of the child.
int run_keeper(const portcullis::agent::AgentConfig& config, portcullis::SecretKey wg_key,
               portcullis::UniqueFd socket, pid_t worker) {
  using namespace portcullis;
  // The worker's end of file stops the keeper; SIGTERM too (the worker died without closing,
  // or an operator), after the request in hand. A terminal's Ctrl-C reaches both processes: the
  // worker's end of file is the orderly way.
  signal(SIGINT, SIG_IGN);
  if (::prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || ::getppid() != worker) return 1;
  auto refuse = [&](Error e) {
    const std::string reply = agent::encode_error(e);
    ::send(socket.get(), reply.data(), reply.size(), MSG_NOSIGNAL);
    return 1;
  };
  if (auto s = agent::keep_only_net_admin(); !s) {
    return refuse(std::move(s.error()).wrap("tunnel keeper: keep only CAP_NET_ADMIN"));
  }
  auto links = link::NetlinkLinks::open();
  if (!links) {
    return refuse(
        std::move(links.error()).wrap("tunnel keeper: open rtnetlink (needs CAP_NET_ADMIN)"));
  }
  auto caps = agent::read_capabilities();
  if (!caps) return refuse(std::move(caps.error()));
  agent::TunnelController tunnel(agent::tunnel_settings(config), std::move(wg_key), **links);
  agent::TunnelKeeper keeper(tunnel);
  const std::string ready = agent::encode_ready(caps->effective);
  if (::send(socket.get(), ready.data(), ready.size(), MSG_NOSIGNAL) < 0) return 1;
  if (auto s = keeper.serve(socket.get(), g_stop); !s) {
    log_error("tunnel keeper stopped", {{"error", s.error().message()}});
    return 1;
  }
  log_info("tunnel keeper exiting, the tunnel stays up", {{"ifname", config.interface}});
  return 0;
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

  // Root, as the unit starts it: the last worker owned the state directory, and root without
  // CAP_DAC_OVERRIDE takes it back before reading its keys.
  const bool root = ::geteuid() == 0;
  if (root) {
    if (auto s = agent::take_state_dir(config->state_dir); !s) {
      return fatal(s.error(), "cannot take back the state directory");
    }
  }
  auto keys = agent::open_state_dir(config->state_dir, g_stop);
  if (!keys) {
    if (keys.error().errno_value() == ECANCELED) return 0;
    return fatal(keys.error(), "cannot use the state directory");
  }

  // The worker's account, and the state directory handed to it (the key files stay root's: the
  // worker never reads them).
  agent::UserAccount account{"", ::getuid(), ::getgid()};
  if (root) {
    bool fell_back = false;
    auto user = agent::find_user(config->user, &fell_back);
    if (!user) return fatal(user.error(), "cannot find the agent's user");
    if (fell_back) {
      log_warning("user does not exist, running the agent's worker as 'nobody'",
                  {{"user", config->user},
                   {"todo", "systemd-sysusers portcullis-agent.conf, or set user in the config"}});
    }
    account = *user;
    if (auto s = agent::give_state_dir(config->state_dir, account.uid, account.gid,
                                       {agent::kIdentityFile, agent::kWireguardKeyFile});
        !s) {
      return fatal(s.error(), "cannot give the state directory to the agent's user");
    }
  } else {
    log_warning(
        "not started as root: the worker keeps this uid, and healing a userspace "
        "interface may fail (its UAPI socket is root's)",
        {{"uid", std::to_string(account.uid)}});
  }

  // The split, while this process has one thread: the child keeps CAP_NET_ADMIN and the
  // WireGuard key; this process (systemd's MainPID) drops everything and runs the agent.
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
    return fatal(Error::last_errno("socketpair"), "cannot start the tunnel keeper");
  }
  UniqueFd worker_end(pair[0]), keeper_end(pair[1]);
  const pid_t worker_pid = ::getpid();
  std::fflush(nullptr);
  const pid_t keeper_pid = ::fork();
  if (keeper_pid < 0) return fatal(Error::last_errno("fork"), "cannot start the tunnel keeper");
  if (keeper_pid == 0) {
    worker_end.reset();
    { auto forget = std::move(keys->identity); }  // the keeper signs nothing
    ::_exit(run_keeper(*config, std::move(keys->wireguard), std::move(keeper_end), worker_pid));
  }
  keeper_end.reset();
  struct sigaction child {};
  child.sa_handler = on_child;
  child.sa_flags = SA_NOCLDSTOP;
  sigemptyset(&child.sa_mask);
  sigaction(SIGCHLD, &child, nullptr);
  const Key wg_public_key = keys->wireguard.public_key();
  { auto forget = std::move(keys->wireguard); }  // wiped: only the keeper holds it

  if (auto s = agent::drop_to_user(account); !s) {
    return fatal(s.error(), "cannot drop privileges");
  }
  if (::access(config->state_dir.c_str(), R_OK | W_OK | X_OK) != 0) {
    // Not fatal, as a full disk is not: the agent goes on with its state in memory.
    log_error(
        "the agent's user cannot use the state directory: enrollment state will not be "
        "saved",
        {{"path", config->state_dir},
         {"user", account.name},
         {"error", std::strerror(errno)},
         {"todo", "make the directories above it searchable (chmod o+x)"}});
  }
  agent::TunnelClient tunnel(std::move(worker_end), [] { g_stop.store(true); });
  auto keeper_caps = tunnel.wait_ready();
  if (!keeper_caps) {
    return fatal(keeper_caps.error(), "the tunnel keeper did not start");
  }
  auto caps = agent::read_capabilities();
  log_info("privileges separated",
           {{"worker_pid", std::to_string(worker_pid)},
            {"user", account.name},
            {"uid", std::to_string(::getuid())},
            {"cap_eff", caps ? agent::capability_text(caps->effective) : "unknown"},
            {"keeper_pid", std::to_string(keeper_pid)},
            {"keeper_cap_eff", agent::capability_text(*keeper_caps)}});

  // After the drop, so that its thread inherits no capability and no_new_privs.
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
    if (!h) {
      return fatal(h.error(), h.error().errno_value() == EACCES
                                  ? "cannot start the health endpoint (the unprivileged worker "
                                    "serves it: use a port from 1024)"
                                  : "cannot start the health endpoint");
    }
    health = std::move(*h);
    log_info("health endpoint listening",
             {{"url", "http://127.0.0.1:" + std::to_string(health->port()) + "/healthz"}});
  }

  int status = 0;
  {
    agent::Agent a(*config, std::move(keys->identity), wg_public_key, tunnel, board, unix_now);
    status = a.run(g_stop);
  }
  if (g_keeper_gone.load() || tunnel.keeper_lost()) {
    log_error("the tunnel keeper process is gone, stopping (systemd restarts the agent)",
              {{"keeper_pid", std::to_string(keeper_pid)}});
    return 1;
  }
  return status;
}

}  // namespace

int main(int argc, char** argv) { return run(argc, argv); }
