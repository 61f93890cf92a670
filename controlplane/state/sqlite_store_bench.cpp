// 10,000 devices through the store: approve + ensure_device_address each in their own
// transactions (as the API does them), then list_devices(). Prints wall-clock figures.
//   state_store_bench [devices] [db path]

#include <sodium.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>

#include "controlplane/state/sqlite_store.h"

using namespace portcullis;
using namespace portcullis::state;
using Clock = std::chrono::steady_clock;

namespace {

// Process CPU time, which stays meaningful on a shared, loaded machine.
double cpu_ms() { return 1000.0 * static_cast<double>(std::clock()) / CLOCKS_PER_SEC; }

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

Key random_key() {
  KeyBytes b{};
  randombytes_buf(b.data(), b.size());
  return Key(b);
}

}  // namespace

int main(int argc, char** argv) {
  int n = argc > 1 ? std::atoi(argv[1]) : 10000;
  std::string path =
      argc > 2 ? argv[2] : "/tmp/pcl-state-bench-" + std::to_string(getpid()) + ".db";
  if (sodium_init() < 0) return 1;
  auto store = SqliteStore::open(path);
  if (!store) {
    std::fprintf(stderr, "%s\n", store.error().message().c_str());
    return 1;
  }
  auto pool = *IpPrefix::parse("10.255.0.0/16");
  auto gw = *IpAddress::parse("10.255.0.1");
  std::vector<PortRule> ports = {{filter::Protocol::kTcp, 5985}, {filter::Protocol::kTcp, 5986},
                                 {filter::Protocol::kTcp, 5900}, {filter::Protocol::kTcp, 3478},
                                 {filter::Protocol::kUdp, 3478}, {filter::Protocol::kTcp, 47002}};

  auto t0 = Clock::now();
  std::vector<std::string> ids;
  for (int i = 0; i < n; ++i) {
    Enrollment e;
    e.hostname = "agent-" + std::to_string(i);
    e.agent_key = random_key();
    e.wg_key = random_key();
    e.created_at = i;
    auto en = (*store)->add_enrollment(e);
    if (!en) return std::fprintf(stderr, "%s\n", en.error().message().c_str()), 1;
    ids.push_back(en->id);
  }
  double enroll_ms = ms_since(t0);

  auto t1 = Clock::now();
  double c1 = cpu_ms();
  for (int i = 0; i < n; ++i) {
    auto d = (*store)->approve_enrollment(ids[i], "bench", ports, i);
    if (!d) return std::fprintf(stderr, "%s\n", d.error().message().c_str()), 1;
    auto a = (*store)->ensure_device_address(d->id, pool, gw);
    if (!a) return std::fprintf(stderr, "%s\n", a.error().message().c_str()), 1;
  }
  double approve_ensure_ms = ms_since(t1);
  double approve_ensure_cpu_ms = cpu_ms() - c1;

  auto t2 = Clock::now();
  double c2 = cpu_ms();
  auto devices = (*store)->list_devices();
  double list_ms = ms_since(t2);
  double list_cpu_ms = cpu_ms() - c2;
  if (!devices) return 1;

  auto t3 = Clock::now();
  auto again = (*store)->ensure_device_address(devices->back().id, pool, gw);
  double ensure_again_us = ms_since(t3) * 1000;
  if (!again) return 1;

  // After a restart the allocator has no hint: the first allocation walks the run of taken
  // addresses once.
  store->reset();
  store = SqliteStore::open(path);
  if (!store) return 1;
  Enrollment late;
  late.hostname = "late";
  late.agent_key = random_key();
  late.wg_key = random_key();
  auto late_enrollment = (*store)->add_enrollment(late);
  if (!late_enrollment) return 1;
  auto late_device = (*store)->approve_enrollment(late_enrollment->id, "bench", ports, n);
  if (!late_device) return 1;
  auto t4 = Clock::now();
  auto late_address = (*store)->ensure_device_address(late_device->id, pool, gw);
  double first_after_reopen_ms = ms_since(t4);
  if (!late_address) return 1;
  std::printf("first_allocation_after_reopen_ms=%.2f address=%s\n", first_after_reopen_ms,
              late_address->to_string().c_str());

  std::printf(
      "devices=%d add_enrollment_total_ms=%.1f approve+ensure_total_ms=%.1f (cpu %.1f) "
      "per_device_us=%.1f list_devices_ms=%.1f (cpu %.1f) listed=%zu ensure_existing_us=%.1f "
      "generation=%lld\n",
      n, enroll_ms, approve_ensure_ms, approve_ensure_cpu_ms, approve_ensure_ms * 1000 / n, list_ms,
      list_cpu_ms, devices->size(), ensure_again_us,
      static_cast<long long>(*(*store)->generation()));
  store->reset();
  std::remove(path.c_str());
  std::remove((path + "-wal").c_str());
  std::remove((path + "-shm").c_str());
  return 0;
}
