#include "controlplane/metrics/registry.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "controlplane/metrics/testing/promtool.h"

namespace portcullis::metrics {
namespace {

std::string value_text(double v) {
  std::string s;
  append_value(s, v);
  return s;
}

TEST(MetricsFormat, Values) {
  EXPECT_EQ(value_text(0), "0");
  EXPECT_EQ(value_text(42), "42");
  EXPECT_EQ(value_text(-3), "-3");
  EXPECT_EQ(value_text(0.25), "0.25");
  EXPECT_EQ(value_text(0.001), "0.001");
  EXPECT_EQ(value_text(1e20), "1e+20");
  EXPECT_EQ(value_text(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(value_text(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(value_text(std::nan("")), "NaN");
}

TEST(MetricsFormat, LabelValueEscaping) {
  std::string s;
  append_label_value(s, "a\\b\"c\nd");
  EXPECT_EQ(s, "a\\\\b\\\"c\\nd");
}

TEST(MetricsFormat, Names) {
  EXPECT_TRUE(valid_metric_name("portcullis_up"));
  EXPECT_TRUE(valid_metric_name("a:b_c9"));
  EXPECT_FALSE(valid_metric_name("9a"));
  EXPECT_FALSE(valid_metric_name("a-b"));
  EXPECT_FALSE(valid_metric_name(""));
  EXPECT_TRUE(valid_label_name("device"));
  EXPECT_FALSE(valid_label_name("__name__"));
  EXPECT_FALSE(valid_label_name("a:b"));
  EXPECT_FALSE(valid_label_name("1a"));
}

TEST(MetricsRegistry, CountersAndGaugesRenderSortedWithEscapedLabels) {
  Registry r;
  auto& drift = r.counter("portcullis_drift_repairs_total",
                          "Differences found and repaired.\nPer layer, \\ escaped.", {"layer"});
  drift.with({"nftables"}).inc(2);
  drift.with({"ebpf"}).inc();
  r.gauge("portcullis_applied_generation", "The last generation applied.").with({}).set(17);
  r.counter("portcullis_odd_total", "Odd label values.", {"v"}).with({"a\"b\\c\nd"}).inc(0.5);

  EXPECT_EQ(r.render(),
            "# HELP portcullis_applied_generation The last generation applied.\n"
            "# TYPE portcullis_applied_generation gauge\n"
            "portcullis_applied_generation 17\n"
            "# HELP portcullis_drift_repairs_total Differences found and repaired.\\nPer layer, "
            "\\\\ escaped.\n"
            "# TYPE portcullis_drift_repairs_total counter\n"
            "portcullis_drift_repairs_total{layer=\"ebpf\"} 1\n"
            "portcullis_drift_repairs_total{layer=\"nftables\"} 2\n"
            "# HELP portcullis_odd_total Odd label values.\n"
            "# TYPE portcullis_odd_total counter\n"
            "portcullis_odd_total{v=\"a\\\"b\\\\c\\nd\"} 0.5\n");
}

TEST(MetricsRegistry, SameNameReturnsSameFamilyAndSeries) {
  Registry r;
  auto& a = r.counter("x_total", "X.", {"k"});
  auto& b = r.counter("x_total", "X.", {"k"});
  EXPECT_EQ(&a, &b);
  EXPECT_EQ(&a.with({"v"}), &b.with({"v"}));
  a.with({"v"}).inc(3);
  EXPECT_EQ(b.with({"v"}).value(), 3);
}

TEST(MetricsRegistry, HistogramIsCumulativeWithInfSumAndCount) {
  Registry r;
  const double bounds[] = {0.01, 0.1, 1};
  auto& h =
      r.histogram("portcullis_api_request_duration_seconds", "API latency.", {"route"}, bounds);
  auto& ensure = h.with({"/api/agent/vpn/ensure"});
  ensure.observe(0.005);
  ensure.observe(0.01);  // le is inclusive
  ensure.observe(0.5);
  ensure.observe(7);
  EXPECT_EQ(r.render(),
            "# HELP portcullis_api_request_duration_seconds API latency.\n"
            "# TYPE portcullis_api_request_duration_seconds histogram\n"
            "portcullis_api_request_duration_seconds_bucket{route=\"/api/agent/vpn/ensure\","
            "le=\"0.01\"} 2\n"
            "portcullis_api_request_duration_seconds_bucket{route=\"/api/agent/vpn/ensure\","
            "le=\"0.1\"} 2\n"
            "portcullis_api_request_duration_seconds_bucket{route=\"/api/agent/vpn/ensure\","
            "le=\"1\"} 3\n"
            "portcullis_api_request_duration_seconds_bucket{route=\"/api/agent/vpn/ensure\","
            "le=\"+Inf\"} 4\n"
            "portcullis_api_request_duration_seconds_sum{route=\"/api/agent/vpn/ensure\"} 7.515\n"
            "portcullis_api_request_duration_seconds_count{route=\"/api/agent/vpn/ensure\"} 4\n");
}

TEST(MetricsRegistry, CollectorsRunAtRenderAndStopWhenHandleGoes) {
  Registry r;
  int calls = 0;
  {
    auto handle = r.add_collector([&](Exposition& e) {
      ++calls;
      e.family("portcullis_tunnel_rx_bytes_total", "Bytes received.", Type::kCounter);
      e.sample("portcullis_tunnel_rx_bytes_total", {{"device", "d1"}},
               std::uint64_t{18446744073709551615u});
      e.sample("portcullis_tunnel_rx_bytes_total", {{"device", "d2"}}, std::int64_t{-1});
    });
    EXPECT_EQ(r.render(),
              "# HELP portcullis_tunnel_rx_bytes_total Bytes received.\n"
              "# TYPE portcullis_tunnel_rx_bytes_total counter\n"
              "portcullis_tunnel_rx_bytes_total{device=\"d1\"} 18446744073709551615\n"
              "portcullis_tunnel_rx_bytes_total{device=\"d2\"} -1\n");
    EXPECT_EQ(calls, 1);
  }
  EXPECT_EQ(r.render(), "");
  EXPECT_EQ(calls, 1);
}

TEST(MetricsRegistry, ConcurrentUpdatesAreNotLost) {
  Registry r;
  auto& c = r.counter("c_total", "C.", {"t"});
  auto& h = r.histogram("h_seconds", "H.", {});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        c.with({"x"}).inc();
        h.with({}).observe(0.002);
        if (i % 1000 == 0) (void)r.render();
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(c.with({"x"}).value(), 40000);
  auto s = h.with({}).snapshot();
  EXPECT_EQ(s.count, 40000u);
  EXPECT_NEAR(s.sum, 80, 1e-6);
}

// The scrape at 10,000 devices: per device a handshake age, rx, tx and a state, plus five
// ports x two verdicts of eBPF counters, produced by collectors from a snapshot.
void fill_like_gateway(Registry& r, std::vector<std::string>& ids) {
  for (int i = 0; i < 10000; ++i) ids.push_back("dev" + std::to_string(1000000 + i));
  r.counter("portcullis_drift_repairs_total", "Drift repairs.", {"layer"}).with({"nftables"});
}

TEST(MetricsRegistry, RendersTenThousandDevicesInAFewMilliseconds) {
  Registry r;
  std::vector<std::string> ids;
  fill_like_gateway(r, ids);
  auto handle = r.add_collector([&](Exposition& e) {
    e.family("portcullis_tunnel_handshake_age_seconds", "Age.", Type::kGauge);
    for (std::size_t i = 0; i < ids.size(); ++i) {
      e.sample("portcullis_tunnel_handshake_age_seconds", {{"device", ids[i]}},
               std::int64_t(i % 200));
    }
    e.family("portcullis_tunnel_receive_bytes_total", "Rx.", Type::kCounter);
    for (std::size_t i = 0; i < ids.size(); ++i) {
      e.sample("portcullis_tunnel_receive_bytes_total", {{"device", ids[i]}},
               std::uint64_t(i * 12345));
    }
    e.family("portcullis_tunnel_transmit_bytes_total", "Tx.", Type::kCounter);
    for (std::size_t i = 0; i < ids.size(); ++i) {
      e.sample("portcullis_tunnel_transmit_bytes_total", {{"device", ids[i]}},
               std::uint64_t(i * 54321));
    }
    e.family("portcullis_filter_packets_total", "Packets.", Type::kCounter);
    static const char* kPorts[] = {"5985", "5986", "5900", "3478", "47002"};
    for (std::size_t i = 0; i < ids.size(); ++i) {
      for (const char* port : kPorts) {
        for (const char* verdict : {"allowed", "dropped"}) {
          e.sample("portcullis_filter_packets_total",
                   {{"device", ids[i]},
                    {"protocol", "tcp"},
                    {"port", port},
                    {"direction", "to-agent"},
                    {"verdict", verdict}},
                   std::uint64_t(i));
        }
      }
    }
  });
  std::string out;
  out.reserve(16 << 20);
  double best_ms = 1e9;
  for (int round = 0; round < 5; ++round) {
    out.clear();
    auto start = std::chrono::steady_clock::now();
    r.render(out);
    double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    best_ms = std::min(best_ms, ms);
  }
  std::printf("render: 10000 devices, %zu bytes, best of 5: %.2f ms\n", out.size(), best_ms);
  EXPECT_NE(out.find("portcullis_filter_packets_total{device=\"dev1009999\",protocol=\"tcp\","
                     "port=\"47002\",direction=\"to-agent\",verdict=\"dropped\"} 9999\n"),
            std::string::npos);
  // Generous: a sanitizer debug build is ~50 times slower than a release build (~18 ms for these
  // 130,000 series, 14 MB); the bound catches quadratic behaviour, not a slow machine.
  EXPECT_LT(best_ms, 3000);
}

// promtool (Debian package `prometheus`) parses and lints what we render.
TEST(MetricsRegistry, PromtoolAcceptsTheExposition) {
  if (access("/usr/bin/promtool", X_OK) != 0) {
    GTEST_SKIP() << "promtool not installed (Debian package prometheus)";
  }
  Registry r;
  r.counter("portcullis_drift_repairs_total", "Drift repairs.", {"layer"})
      .with({"n\"f\\t\nables"})
      .inc(3);
  r.gauge("portcullis_tunnels", "Tunnels by health state.", {"state"}).with({"fresh"}).set(2);
  r.histogram("portcullis_api_request_duration_seconds", "API latency.", {"route"})
      .with({"/health"})
      .observe(0.003);
  auto handle = r.add_collector([](Exposition& e) {
    e.family("portcullis_tunnel_receive_bytes_total", "Bytes received.", Type::kCounter);
    e.sample("portcullis_tunnel_receive_bytes_total", {{"device", "d1"}}, std::uint64_t{7});
  });
  std::string text = r.render();
  auto check = testing::promtool_check(text);
  ASSERT_TRUE(check);
  EXPECT_TRUE(check->ok) << check->output << "\n" << text;
  EXPECT_EQ(check->output, "") << text;
}

}  // namespace
}  // namespace portcullis::metrics
