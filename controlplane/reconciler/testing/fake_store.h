#pragma once
// An in-memory Store for unit tests of the reconciler: devices, generations and the audit log
// behave as in SqliteStore; enrollment and token calls are not modelled (ENOSYS). Every change
// bumps the generation, as one SQLite transaction would.

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "controlplane/state/store.h"
#include "dataplane/testing/scheduled_failures.h"

namespace portcullis::reconciler::testing {

class FakeStore final : public state::Store {
 public:
  // Test set-up: adds or replaces a device as given (its generation becomes the new one).
  void put_device(state::Device d);

  // The nth call of list_devices() or list_devices_changed_after() fails.
  void fail_list_devices(int nth, Error e) { list_failures_.fail_call(nth, std::move(e)); }
  // Calls so far: a wake pass should read only the changed devices.
  std::uint64_t list_all_calls() const { return list_all_calls_; }
  std::uint64_t changed_after_calls() const { return changed_after_calls_; }
  std::uint64_t set_applied_calls() const { return set_applied_calls_; }
  std::vector<state::AuditEvent> audit_log() const;

  // Runs fn under the store's lock; a failure is returned but what fn changed stays (the fake
  // models no rollback).
  Status atomically(const std::function<Status()>& fn) override;
  Result<std::int64_t> generation() override;
  Result<std::int64_t> applied_generation() override;
  Status set_applied_generation(std::int64_t g) override;

  Status add_enrollment_code(const std::string& code, state::Timestamp expires_at,
                             const std::string& created_by) override;
  Result<bool> consume_enrollment_code(const std::string& code, state::Timestamp now,
                                       const std::string& enrollment_id) override;
  Result<state::Enrollment> add_enrollment(const state::Enrollment& e) override;
  Result<std::optional<state::Enrollment>> find_enrollment(const std::string& id) override;
  Result<std::vector<state::Enrollment>> list_enrollments(
      std::optional<state::EnrollmentStatus> only) override;
  Result<state::Device> approve_enrollment(const std::string& id, const std::string& by,
                                           const std::vector<state::PortRule>& default_ports,
                                           state::Timestamp now) override;
  Status deny_enrollment(const std::string& id, const std::string& by,
                         state::Timestamp now) override;

  Result<std::optional<state::Device>> find_device(const std::string& id) override;
  Result<std::vector<state::Device>> list_devices() override;
  Result<std::vector<state::Device>> list_devices_changed_after(std::int64_t generation) override;
  Result<IpAddress> ensure_device_address(const std::string& device_id, const IpPrefix& pool,
                                          const IpAddress& gateway) override;
  Status set_device_ports(const std::string& device_id,
                          const std::vector<state::PortRule>& ports) override;
  Status revoke_device(const std::string& device_id, state::Timestamp now) override;
  Status record_heartbeat(const std::string& device_id, state::Timestamp now,
                          const std::string& inventory_json) override;

  Status add_refresh_token(const KeyBytes& token_hash, const state::RefreshToken& t) override;
  Result<std::optional<state::RefreshToken>> find_refresh_token(
      const KeyBytes& token_hash) override;
  Status mark_refresh_token_used(const KeyBytes& token_hash) override;
  Status revoke_token_family(const std::string& family_id) override;

  Status audit(const state::AuditEvent& e) override;
  Result<std::vector<state::AuditEvent>> list_audit(std::int64_t after_id, int limit) override;

 private:
  Result<state::Device*> device(const std::string& id);

  mutable std::recursive_mutex mu_;
  std::int64_t generation_ = 0;
  std::int64_t applied_ = 0;
  std::uint64_t set_applied_calls_ = 0;
  std::uint64_t list_all_calls_ = 0;
  std::uint64_t changed_after_calls_ = 0;
  std::map<std::string, state::Device> devices_;
  std::vector<state::AuditEvent> audit_;
  portcullis::testing::ScheduledFailures list_failures_;
};

}  // namespace portcullis::reconciler::testing
