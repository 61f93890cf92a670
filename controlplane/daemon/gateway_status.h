#pragma once
// GET /health and GET /metrics, and the per-route request metrics of the API.
//
// /health: 200 {"status": "ready", "parts": {...}} when the database answers and the last
// reconcile pass applied every layer (wireguard, nftables, ebpf); otherwise 503 with the failing
// part named: {"status": "not_ready", "failing": ["nftables"], "parts": {"nftables": {"ok": false,
// "error": "..."}}}. It reads no kernel state itself, so it stays cheap at 10,000 devices.

#include <chrono>
#include <string_view>
#include <vector>

#include "controlplane/api/agent_api.h"
#include "controlplane/http/https_server.h"
#include "controlplane/metrics/registry.h"
#include "controlplane/reconciler/reconciler.h"
#include "controlplane/state/store.h"

namespace portcullis::daemon {

class GatewayStatus {
 public:
  GatewayStatus(state::Store& store, reconciler::Reconciler& reconciler,
                metrics::Registry& metrics);

  std::vector<http::Route> routes();
  // Counts requests by (route, code) and their handler time by route.
  api::RequestObserver request_observer();

  http::Response health(const http::Request& request);
  http::Response metrics(const http::Request& request);

 private:
  void observe(std::string_view route, int status, std::chrono::nanoseconds elapsed);

  state::Store& store_;
  reconciler::Reconciler& reconciler_;
  metrics::Registry& metrics_;
  metrics::Family<metrics::Counter>& requests_;
  metrics::Family<metrics::Histogram>& latency_;
};

}  // namespace portcullis::daemon
