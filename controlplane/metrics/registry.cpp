#include "controlplane/metrics/registry.h"

#include <cassert>
#include <charconv>
#include <cmath>

namespace portcullis::metrics {
namespace {

const char* type_name(Type t) {
  switch (t) {
    case Type::kCounter:
      return "counter";
    case Type::kGauge:
      return "gauge";
    case Type::kHistogram:
      return "histogram";
  }
  return "untyped";
}

void atomic_add(std::atomic<double>& a, double v) {
  double old = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(old, old + v, std::memory_order_relaxed)) {
  }
}

template <class Int>
void append_int(std::string& out, Int v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

bool name_char(char c, bool first, bool colon) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') return true;
  if (colon && c == ':') return true;
  return !first && c >= '0' && c <= '9';
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

void append_value(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
  } else if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
  } else if (v == std::trunc(v) && std::fabs(v) < 1e15) {
    append_int(out, static_cast<std::int64_t>(v));
  } else {
    char buf[32];
    auto r = std::to_chars(buf, buf + sizeof buf, v);  // shortest form that reads back exactly
    out.append(buf, r.ptr);
  }
}

void append_label_value(std::string& out, std::string_view v) {
  std::size_t start = 0;
  for (std::size_t i = 0; i < v.size(); ++i) {
    char c = v[i];
    if (c != '\\' && c != '"' && c != '\n') continue;
    out.append(v.data() + start, i - start);
    out += c == '\n' ? "\\n" : c == '"' ? "\\\"" : "\\\\";
    start = i + 1;
  }
  out.append(v.data() + start, v.size() - start);
}

void append_help(std::string& out, std::string_view help) {
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

bool valid_metric_name(std::string_view name) {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (!name_char(name[i], i == 0, true)) return false;
  }
  return true;
}

bool valid_label_name(std::string_view name) {
  if (name.empty() || name.starts_with("__")) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (!name_char(name[i], i == 0, false)) return false;
  }
  return true;
}

void Exposition::family(std::string_view name, std::string_view help, Type type) {
  out_ += "# HELP ";
  out_ += name;
  out_ += ' ';
  append_help(out_, help);
  out_ += "\n# TYPE ";
  out_ += name;
  out_ += ' ';
  out_ += type_name(type);
  out_ += '\n';
}

void Exposition::begin_sample(std::string_view name, std::span<const Label> labels) {
  out_ += name;
  if (!labels.empty()) {
    out_ += '{';
    bool first = true;
    for (const auto& l : labels) {
      if (!first) out_ += ',';
      first = false;
      out_ += l.name;
      out_ += "=\"";
      append_label_value(out_, l.value);
      out_ += '"';
    }
    out_ += '}';
  }
  out_ += ' ';
}

void Exposition::sample(std::string_view name, std::span<const Label> labels, double value) {
  begin_sample(name, labels);
  append_value(out_, value);
  out_ += '\n';
}

void Exposition::sample(std::string_view name, std::span<const Label> labels, std::uint64_t value) {
  begin_sample(name, labels);
  append_int(out_, value);
  out_ += '\n';
}

void Exposition::sample(std::string_view name, std::span<const Label> labels, std::int64_t value) {
  begin_sample(name, labels);
  append_int(out_, value);
  out_ += '\n';
}

void Counter::inc(double v) {
  assert(v >= 0 && "counters only go up");
  atomic_add(value_, v);
}

void Gauge::inc(double v) { atomic_add(value_, v); }

Histogram::Histogram(std::span<const double> bounds)
    : bounds_(bounds.begin(), bounds.end()),
      counts_(new std::atomic<std::uint64_t>[bounds.size() + 1]) {
  assert(std::is_sorted(bounds_.begin(), bounds_.end()));
  for (std::size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0);
}

void Histogram::observe(double v) {
  // Bucket i counts observations <= bounds[i]; the last one is +Inf.
  auto i = static_cast<std::size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) -
                                    bounds_.begin());
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  atomic_add(sum_, v);
  count_.fetch_add(1, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::snapshot() const {
  // _count is the sum of the buckets, so it always equals the +Inf bucket.
  Snapshot s;
  s.counts.resize(bounds_.size() + 1);
  for (std::size_t i = 0; i <= bounds_.size(); ++i) {
    s.counts[i] = counts_[i].load(std::memory_order_relaxed);
    s.count += s.counts[i];
  }
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

template <class T>
T& Family<T>::with(std::initializer_list<std::string_view> values) {
  return with(std::span<const std::string_view>(values.begin(), values.size()));
}

template <class T>
T& Family<T>::with(std::span<const std::string_view> values) {
  assert(values.size() == label_names_.size() && "one value per label name");
  std::lock_guard lock(mu_);
  auto it = series_.find(values);
  if (it == series_.end()) {
    std::unique_ptr<T> series;
    if constexpr (std::is_same_v<T, Histogram>) {
      series = std::make_unique<Histogram>(bounds_);
    } else {
      series = std::make_unique<T>();
    }
    it = series_.emplace(std::vector<std::string>(values.begin(), values.end()), std::move(series))
             .first;
  }
  return *it->second;
}

template <class T>
void Family<T>::render(Exposition& e) const {
  e.family(name_, help_, type_);
  std::lock_guard lock(mu_);
  std::vector<Label> labels(label_names_.size() + (std::is_same_v<T, Histogram> ? 1 : 0));
  for (std::size_t i = 0; i < label_names_.size(); ++i) labels[i].name = label_names_[i];
  std::span<const Label> series_labels(labels.data(), label_names_.size());

  if constexpr (std::is_same_v<T, Histogram>) {
    std::vector<std::string> le(bounds_.size() + 1);
    for (std::size_t i = 0; i < bounds_.size(); ++i) append_value(le[i], bounds_[i]);
    le.back() = "+Inf";
    std::string bucket = name_ + "_bucket";
    std::string sum = name_ + "_sum";
    std::string count = name_ + "_count";
    labels.back().name = "le";
    for (const auto& [values, h] : series_) {
      for (std::size_t i = 0; i < values.size(); ++i) labels[i].value = values[i];
      auto s = h->snapshot();
      std::uint64_t cumulative = 0;
      for (std::size_t i = 0; i < s.counts.size(); ++i) {
        cumulative += s.counts[i];
        labels.back().value = le[i];
        e.sample(bucket, std::span<const Label>(labels), cumulative);
      }
      e.sample(sum, series_labels, s.sum);
      e.sample(count, series_labels, s.count);
    }
  } else {
    for (const auto& [values, series] : series_) {
      for (std::size_t i = 0; i < values.size(); ++i) labels[i].value = values[i];
      e.sample(name_, series_labels, series->value());
    }
  }
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

CollectorHandle& CollectorHandle::operator=(CollectorHandle&& o) noexcept {
  if (this != &o) {
    reset();
    registry_ = o.registry_;
    id_ = o.id_;
    o.registry_ = nullptr;
  }
  return *this;
}

void CollectorHandle::reset() {
  if (registry_) registry_->remove_collector(id_);
  registry_ = nullptr;
}

template <class T>
Family<T>& Registry::add_family(std::string name, std::string help, Type type,
                                std::vector<std::string> label_names, std::vector<double> bounds) {
  assert(valid_metric_name(name));
  assert(type != Type::kCounter || ends_with(name, "_total"));
  for ([[maybe_unused]] const auto& l : label_names) {
    assert(valid_label_name(l));
    assert(type != Type::kHistogram || l != "le");
  }
  std::lock_guard lock(mu_);
  auto it = families_.find(name);
  if (it != families_.end()) {
    assert(it->second->type() == type && "a metric name is registered with one type");
    assert(it->second->label_names() == label_names && "a metric name has one label set");
    return static_cast<Family<T>&>(*it->second);
  }
  std::unique_ptr<Family<T>> family(
      new Family<T>(name, std::move(help), type, std::move(label_names), std::move(bounds)));
  auto& ref = *family;
  families_.emplace(std::move(name), std::move(family));
  return ref;
}

Family<Counter>& Registry::counter(std::string name, std::string help,
                                   std::vector<std::string> label_names) {
  return add_family<Counter>(std::move(name), std::move(help), Type::kCounter,
                             std::move(label_names), {});
}

Family<Gauge>& Registry::gauge(std::string name, std::string help,
                               std::vector<std::string> label_names) {
  return add_family<Gauge>(std::move(name), std::move(help), Type::kGauge, std::move(label_names),
                           {});
}

Family<Histogram>& Registry::histogram(std::string name, std::string help,
                                       std::vector<std::string> label_names,
                                       std::span<const double> bounds) {
  return add_family<Histogram>(std::move(name), std::move(help), Type::kHistogram,
                               std::move(label_names),
                               std::vector<double>(bounds.begin(), bounds.end()));
}

CollectorHandle Registry::add_collector(Collector collect) {
  std::lock_guard lock(mu_);
  std::uint64_t id = next_collector_++;
  collectors_.emplace(id, std::move(collect));
  return CollectorHandle(this, id);
}

void Registry::remove_collector(std::uint64_t id) {
  std::lock_guard lock(mu_);
  collectors_.erase(id);
}

std::string Registry::render() const {
  std::string out;
  render(out);
  return out;
}

void Registry::render(std::string& out) const {
  Exposition e(out);
  std::lock_guard lock(mu_);
  for (const auto& [name, family] : families_) family->render(e);
  for (const auto& [id, collect] : collectors_) collect(e);
}

}  // namespace portcullis::metrics
