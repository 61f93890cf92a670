#include "controlplane/daemon/gateway_status.h"

#include <nlohmann/json.hpp>

namespace portcullis::daemon {

GatewayStatus::GatewayStatus(state::Store& store, reconciler::Reconciler& reconciler,
                             metrics::Registry& metrics)
    : store_(store),
      reconciler_(reconciler),
      metrics_(metrics),
      requests_(metrics.counter("portcullis_api_requests_total",
                                "API requests answered, by route and HTTP status code",
                                {"route", "code"})),
      latency_(metrics.histogram("portcullis_api_request_duration_seconds",
                                 "Time spent handling API requests, by route", {"route"})) {}

std::vector<http::Route> GatewayStatus::routes() {
  auto timed = [this](std::string route,
                      http::Response (GatewayStatus::*fn)(const http::Request&)) {
    return [this, route, fn](const http::Request& r) {
      auto t0 = std::chrono::steady_clock::now();
      auto resp = (this->*fn)(r);
      observe(route, resp.status, std::chrono::steady_clock::now() - t0);
      return resp;
    };
  };
  return {{"GET", "/health", timed("/health", &GatewayStatus::health)},
          {"GET", "/metrics", timed("/metrics", &GatewayStatus::metrics)}};
}

api::RequestObserver GatewayStatus::request_observer() {
  return [this](std::string_view route, int status, std::chrono::nanoseconds elapsed) {
    observe(route, status, elapsed);
  };
}

void GatewayStatus::observe(std::string_view route, int status, std::chrono::nanoseconds elapsed) {
  std::string code = std::to_string(status);
  requests_.with({route, code}).inc();
  latency_.with({route}).observe(std::chrono::duration<double>(elapsed).count());
}

http::Response GatewayStatus::health(const http::Request&) {
  nlohmann::json parts = nlohmann::json::object();
  std::vector<std::string> failing;
  auto gen = store_.generation();
  parts["database"] = gen ? nlohmann::json{{"ok", true}, {"generation", *gen}}
                          : nlohmann::json{{"ok", false}, {"error", "database not answering"}};
  if (!gen) failing.push_back("database");

  auto report = reconciler_.last_report();
  if (!report) {
    failing.push_back("reconciler");
    parts["reconciler"] = {{"ok", false}, {"error", "no reconcile pass has finished yet"}};
  } else {
    for (const auto& layer : report->layers) {
      nlohmann::json p = {{"ok", layer.ok()}};
      if (!layer.ok()) {
        // The layer's error names the kernel object, not our internals; it helps the operator.
        p["error"] = layer.error->message();
        failing.push_back(layer.name);
      }
      parts[layer.name] = std::move(p);
    }
    parts["reconciler"] = {{"ok", true},
                           {"generation", report->generation},
                           {"applied_generation", reconciler_.applied_generation()}};
  }
  nlohmann::json body = {{"status", failing.empty() ? "ready" : "not_ready"}, {"parts", parts}};
  if (!failing.empty()) body["failing"] = failing;
  return {failing.empty() ? 200 : 503, "application/json", body.dump(), {}};
}

http::Response GatewayStatus::metrics(const http::Request&) {
  return {200, std::string(metrics::kContentType), metrics_.render(), {}};
}

}  // namespace portcullis::daemon
