#pragma once
// A small Prometheus registry rendering the text exposition format 0.0.4:
//
//   # HELP portcullis_drift_repairs_total Differences found and repaired ...
//   # TYPE portcullis_drift_repairs_total counter
//   portcullis_drift_repairs_total{layer="nftables"} 2
//   # TYPE portcullis_api_request_duration_seconds histogram
//   portcullis_api_request_duration_seconds_bucket{route="/api/agent/vpn/ensure",le="0.005"} 7
//   ...
//   portcullis_api_request_duration_seconds_bucket{route="/api/agent/vpn/ensure",le="+Inf"} 9
//   portcullis_api_request_duration_seconds_sum{route="/api/agent/vpn/ensure"} 0.031
//   portcullis_api_request_duration_seconds_count{route="/api/agent/vpn/ensure"} 9
//
// Two kinds of families:
// - stored: counter(), gauge(), histogram() return a family; with({label values}) returns the
//   series (created on first use, stable address: cache it on hot paths). Updates are lock-free.
// - collected: add_collector() registers a callback that writes whole families at scrape time
//   from a snapshot (per-device handshake age, rx/tx, eBPF counters), so 10,000 devices cost no
//   stored series.
// Everything is thread-safe. Names and label names are checked with assert (a wrong name is a
// programming error); label values are escaped on output. Counter names must end in _total.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace portcullis::metrics {

enum class Type { kCounter, kGauge, kHistogram };

struct Label {
  std::string_view name;
  std::string_view value;
};

// Writes families in the text format into a string. Used by the registry and by collectors.
class Exposition {
 public:
  explicit Exposition(std::string& out) : out_(out) {}

  // The HELP and TYPE lines of a family; its samples follow.
  void family(std::string_view name, std::string_view help, Type type);
  // One sample line: name{labels} value. For a histogram, name carries the _bucket / _sum /
  // _count suffix and the caller adds the le label.
  void sample(std::string_view name, std::span<const Label> labels, double value);
  void sample(std::string_view name, std::span<const Label> labels, std::uint64_t value);
  void sample(std::string_view name, std::span<const Label> labels, std::int64_t value);
  void sample(std::string_view name, std::initializer_list<Label> labels, double value) {
    sample(name, std::span<const Label>(labels.begin(), labels.size()), value);
  }
  void sample(std::string_view name, std::initializer_list<Label> labels, std::uint64_t value) {
    sample(name, std::span<const Label>(labels.begin(), labels.size()), value);
  }
  void sample(std::string_view name, std::initializer_list<Label> labels, std::int64_t value) {
    sample(name, std::span<const Label>(labels.begin(), labels.size()), value);
  }

  std::string& out() { return out_; }

 private:
  void begin_sample(std::string_view name, std::span<const Label> labels);

  std::string& out_;
};

// Number and escaping rules of the format, exposed for tests.
void append_value(std::string& out, double v);  // integers without exponent, +Inf, -Inf, NaN
void append_label_value(std::string& out, std::string_view v);  // \\, \", \n escaped
void append_help(std::string& out, std::string_view help);      // \\, \n escaped
bool valid_metric_name(std::string_view name);
bool valid_label_name(std::string_view name);

class Counter {
 public:
  void inc(double v = 1);  // v >= 0
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Gauge {
 public:
  void set(double v) { value_.store(v, std::memory_order_relaxed); }
  void inc(double v = 1);
  void dec(double v = 1) { inc(-v); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Histogram {
 public:
  explicit Histogram(std::span<const double> bounds);  // upper bounds, sorted, without +Inf
  void observe(double v);

  // A consistent-enough copy: counts per bucket (not cumulative), sum and count.
  struct Snapshot {
    std::vector<std::uint64_t> counts;  // bounds.size() + 1 (the last is +Inf)
    double sum = 0;
    std::uint64_t count = 0;
  };
  Snapshot snapshot() const;
  std::span<const double> bounds() const { return bounds_; }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> counts_;
  std::atomic<double> sum_{0};
  std::atomic<std::uint64_t> count_{0};
};

// Latency buckets in seconds, 1 ms .. 10 s.
inline constexpr double kLatencyBuckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                             0.25,  0.5,    1,     2.5,  5,     10};

// Compares label-value keys without building a std::vector<std::string> for a lookup.
struct LabelValuesLess {
  using is_transparent = void;
  template <class A, class B>
  bool operator()(const A& a, const B& b) const {
    return std::lexicographical_compare(
        a.begin(), a.end(), b.begin(), b.end(),
        [](std::string_view x, std::string_view y) { return x < y; });
  }
};

class FamilyBase {
 public:
  virtual ~FamilyBase() = default;
  const std::string& name() const { return name_; }
  Type type() const { return type_; }
  const std::vector<std::string>& label_names() const { return label_names_; }

 protected:
  FamilyBase(std::string name, std::string help, Type type, std::vector<std::string> label_names)
      : name_(std::move(name)),
        help_(std::move(help)),
        type_(type),
        label_names_(std::move(label_names)) {}

 private:
  friend class Registry;
  virtual void render(Exposition& e) const = 0;

 protected:
  std::string name_;
  std::string help_;
  Type type_;
  std::vector<std::string> label_names_;
};

class Registry;

// One family of stored series, keyed by label values in label-name order.
template <class T>
class Family final : public FamilyBase {
 public:
  // The series for these label values (as many as label names), created on first use. The
  // reference stays valid as long as the registry.
  T& with(std::initializer_list<std::string_view> values);
  T& with(std::span<const std::string_view> values);

 private:
  friend class Registry;
  Family(std::string name, std::string help, Type type, std::vector<std::string> label_names,
         std::vector<double> bounds)
      : FamilyBase(std::move(name), std::move(help), type, std::move(label_names)),
        bounds_(std::move(bounds)) {}
  void render(Exposition& e) const override;

  std::vector<double> bounds_;  // histograms only
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<T>, LabelValuesLess> series_;
};

// Removes its collector when destroyed; move-only.
class CollectorHandle {
 public:
  CollectorHandle() = default;
  CollectorHandle(CollectorHandle&& o) noexcept : registry_(o.registry_), id_(o.id_) {
    o.registry_ = nullptr;
  }
  CollectorHandle& operator=(CollectorHandle&& o) noexcept;
  ~CollectorHandle() { reset(); }
  void reset();

 private:
  friend class Registry;
  CollectorHandle(Registry* r, std::uint64_t id) : registry_(r), id_(id) {}
  Registry* registry_ = nullptr;
  std::uint64_t id_ = 0;
};

class Registry {
 public:
  using Collector = std::function<void(Exposition&)>;

  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Registering the same name twice returns the same family (type and labels must match).
  Family<Counter>& counter(std::string name, std::string help,
                           std::vector<std::string> label_names = {});
  Family<Gauge>& gauge(std::string name, std::string help,
                       std::vector<std::string> label_names = {});
  Family<Histogram>& histogram(std::string name, std::string help,
                               std::vector<std::string> label_names,
                               std::span<const double> bounds = kLatencyBuckets);

  // Called at every render, after the stored families, in registration order. A collector
  // writes complete families whose names no other family uses.
  [[nodiscard]] CollectorHandle add_collector(Collector collect);

  // The whole exposition (Content-Type: text/plain; version=0.0.4; charset=utf-8).
  std::string render() const;
  void render(std::string& out) const;

 private:
  friend class CollectorHandle;
  void remove_collector(std::uint64_t id);

  template <class T>
  Family<T>& add_family(std::string name, std::string help, Type type,
                        std::vector<std::string> label_names, std::vector<double> bounds);

  // Held for a whole render, so a collector is never running when remove_collector returns.
  // Collectors must not call back into the registry.
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<FamilyBase>, std::less<>> families_;  // sorted by name
  std::map<std::uint64_t, Collector> collectors_;
  std::uint64_t next_collector_ = 1;
};

inline constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace portcullis::metrics
