#include "controlplane/reconciler/testing/fake_store.h"

#include <algorithm>

namespace portcullis::reconciler::testing {
namespace {

tl::unexpected<Error> not_modelled(const char* what) {
  return fail_errno(ENOSYS, std::string(what) + ": not modelled by FakeStore");
}

}  // namespace

void FakeStore::put_device(state::Device d) {
  std::lock_guard lock(mu_);
  std::sort(d.ports.begin(), d.ports.end());
  d.generation = ++generation_;
  devices_[d.id] = std::move(d);
}

std::vector<state::AuditEvent> FakeStore::audit_log() const {
  std::lock_guard lock(mu_);
  return audit_;
}

Status FakeStore::atomically(const std::function<Status()>& fn) {
  std::lock_guard lock(mu_);
  return fn();
}

Result<std::int64_t> FakeStore::generation() {
  std::lock_guard lock(mu_);
  return generation_;
}

Result<std::int64_t> FakeStore::applied_generation() {
  std::lock_guard lock(mu_);
  return applied_;
}

Status FakeStore::set_applied_generation(std::int64_t g) {
  std::lock_guard lock(mu_);
  ++set_applied_calls_;
  applied_ = g;
  return {};
}

Status FakeStore::add_enrollment_code(const std::string&, state::Timestamp, const std::string&) {
  return not_modelled("add_enrollment_code");
}
Result<bool> FakeStore::consume_enrollment_code(const std::string&, state::Timestamp,
                                                const std::string&) {
  return not_modelled("consume_enrollment_code");
}
Result<state::Enrollment> FakeStore::add_enrollment(const state::Enrollment&) {
  return not_modelled("add_enrollment");
}
Result<std::optional<state::Enrollment>> FakeStore::find_enrollment(const std::string&) {
  return not_modelled("find_enrollment");
}
Result<std::vector<state::Enrollment>> FakeStore::list_enrollments(
    std::optional<state::EnrollmentStatus>) {
  return not_modelled("list_enrollments");
}
Result<state::Device> FakeStore::approve_enrollment(const std::string&, const std::string&,
                                                    const std::vector<state::PortRule>&,
                                                    state::Timestamp) {
  return not_modelled("approve_enrollment");
}
Status FakeStore::deny_enrollment(const std::string&, const std::string&, state::Timestamp) {
  return not_modelled("deny_enrollment");
}

Result<state::Device*> FakeStore::device(const std::string& id) {
  auto it = devices_.find(id);
  if (it == devices_.end()) return fail_errno(ENOENT, "device '" + id + "'");
  return &it->second;
}

Result<std::optional<state::Device>> FakeStore::find_device(const std::string& id) {
  std::lock_guard lock(mu_);
  auto it = devices_.find(id);
  if (it == devices_.end()) return std::optional<state::Device>();
  return std::optional<state::Device>(it->second);
}

Result<std::vector<state::Device>> FakeStore::list_devices() {
  std::lock_guard lock(mu_);
  ++list_all_calls_;
  if (auto e = list_failures_.next_call()) return fail(std::move(*e));
  std::vector<state::Device> out;
  out.reserve(devices_.size());
  for (const auto& [id, d] : devices_) out.push_back(d);
  return out;
}

Result<std::vector<state::Device>> FakeStore::list_devices_changed_after(std::int64_t generation) {
  std::lock_guard lock(mu_);
  ++changed_after_calls_;
  if (auto e = list_failures_.next_call()) return fail(std::move(*e));
  std::vector<state::Device> out;
  for (const auto& [id, d] : devices_) {
    if (d.generation > generation) out.push_back(d);
  }
  return out;
}

Result<IpAddress> FakeStore::ensure_device_address(const std::string& device_id,
                                                   const IpPrefix& pool, const IpAddress& gateway) {
  std::lock_guard lock(mu_);
  auto d = device(device_id);
  if (!d) return fail(std::move(d.error()));
  if ((*d)->address) return *(*d)->address;
  std::uint32_t base = pool.masked().address().v4_host_order();
  std::uint32_t size = 1u << (32 - pool.cidr());
  for (std::uint32_t i = 1; i + 1 < size; ++i) {
    IpAddress a = IpAddress::v4_host_order(base + i);
    if (a == gateway) continue;
    bool used = std::any_of(devices_.begin(), devices_.end(),
                            [&](const auto& kv) { return kv.second.address == a; });
    if (used) continue;
    (*d)->address = a;
    (*d)->generation = ++generation_;
    return a;
  }
  return fail_errno(ENOSPC, "allocate an address in " + pool.to_string());
}

Status FakeStore::set_device_ports(const std::string& device_id,
                                   const std::vector<state::PortRule>& ports) {
  std::lock_guard lock(mu_);
  auto d = device(device_id);
  if (!d) return fail(std::move(d.error()));
  (*d)->ports = ports;
  std::sort((*d)->ports.begin(), (*d)->ports.end());
  (*d)->generation = ++generation_;
  return {};
}

Status FakeStore::revoke_device(const std::string& device_id, state::Timestamp now) {
  std::lock_guard lock(mu_);
  auto d = device(device_id);
  if (!d) return fail(std::move(d.error()));
  (*d)->status = state::DeviceStatus::kRevoked;
  (*d)->revoked_at = now;
  (*d)->generation = ++generation_;
  return {};
}

Status FakeStore::record_heartbeat(const std::string& device_id, state::Timestamp now,
                                   const std::string& inventory_json) {
  std::lock_guard lock(mu_);
  auto d = device(device_id);
  if (!d) return fail(std::move(d.error()));
  (*d)->last_heartbeat = now;
  (*d)->inventory_json = inventory_json;
  return {};
}

Status FakeStore::add_refresh_token(const KeyBytes&, const state::RefreshToken&) {
  return not_modelled("add_refresh_token");
}
Result<std::optional<state::RefreshToken>> FakeStore::find_refresh_token(const KeyBytes&) {
  return not_modelled("find_refresh_token");
}
Status FakeStore::mark_refresh_token_used(const KeyBytes&) {
  return not_modelled("mark_refresh_token_used");
}
Status FakeStore::revoke_token_family(const std::string&) {
  return not_modelled("revoke_token_family");
}

Status FakeStore::audit(const state::AuditEvent& e) {
  std::lock_guard lock(mu_);
  audit_.push_back(e);
  audit_.back().id = static_cast<std::int64_t>(audit_.size());
  return {};
}

Result<std::vector<state::AuditEvent>> FakeStore::list_audit(std::int64_t after_id, int limit) {
  std::lock_guard lock(mu_);
  std::vector<state::AuditEvent> out;
  for (const auto& e : audit_) {
    if (e.id > after_id && static_cast<int>(out.size()) < limit) out.push_back(e);
  }
  return out;
}

}  // namespace portcullis::reconciler::testing
