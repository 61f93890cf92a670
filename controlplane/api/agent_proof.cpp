#include "controlplane/api/agent_proof.h"

#include <algorithm>

namespace portcullis::api {
namespace {

using nlohmann::json;

bool is_nonce(std::string_view s) {
  return s.size() >= 16 && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
         });
}

}  // namespace

const char* proof_failure_name(ProofFailure f) {
  switch (f) {
    case ProofFailure::kMalformed:
      return "malformed";
    case ProofFailure::kStale:
      return "stale";
    case ProofFailure::kSignature:
      return "signature";
    case ProofFailure::kReplayed:
      return "replayed";
    case ProofFailure::kBusy:
      return "busy";
  }
  return "unknown";
}

Checked<std::string> proof_signing_bytes(std::string_view method, std::string_view path,
                                         const json& body) {
  if (!body.is_object()) return tl::unexpected(InputError{"", "the body must be a JSON object"});
  const auto ts = body.find("timestamp");
  const auto nonce = body.find("nonce");
  if (ts == body.end() || !ts->is_number_integer()) {
    return tl::unexpected(InputError{"timestamp", "must be an integer (Unix seconds)"});
  }
  if (nonce == body.end() || !nonce->is_string() ||
      !is_nonce(nonce->get_ref<const std::string&>())) {
    return tl::unexpected(InputError{"nonce", "must be 16-64 base64url characters"});
  }
  if (has_float(body)) {
    return tl::unexpected(InputError{"", "floating-point numbers are not accepted"});
  }
  json unsigned_body = body;
  unsigned_body.erase("signature");
  auto canonical = dump_json(unsigned_body);
  if (!canonical) return tl::unexpected(std::move(canonical.error()));
  std::string out;
  out.reserve(160);
  out.append(kProofDomain).append("\n");
  out.append(method).append(" ").append(path).append("\n");
  out.append(std::to_string(get_int(body, "timestamp"))).append("\n");
  out.append(nonce->get_ref<const std::string&>()).append("\n");
  out.append(hex(sha256(*canonical)));
  return out;
}

Checked<void> sign_agent_request(std::string_view method, std::string_view path, json& body,
                                 const SigningKey& agent_key, std::int64_t timestamp,
                                 const std::string& nonce) {
  body["timestamp"] = timestamp;
  body["nonce"] = nonce;
  auto bytes = proof_signing_bytes(method, path, body);
  if (!bytes) return tl::unexpected(std::move(bytes.error()));
  body["signature"] = agent_key.sign_base64(*bytes);
  return {};
}

bool ReplayCache::insert(const Key& agent_key, const std::string& nonce, std::int64_t expires_at,
                         std::int64_t now, bool* busy) {
  *busy = false;
  std::string id(reinterpret_cast<const char*>(agent_key.data()), kKeyLen);
  id += nonce;
  std::lock_guard lock(mutex_);
  if (const auto it = seen_.find(id); it != seen_.end() && it->second >= now) return false;
  if (seen_.size() >= capacity_) prune(now);
  if (seen_.size() >= capacity_) {
    *busy = true;
    return false;
  }
  seen_[id] = expires_at;
  by_expiry_.emplace(expires_at, std::move(id));
  return true;
}

void ReplayCache::prune(std::int64_t now) {
  auto end = by_expiry_.lower_bound(now);
  for (auto it = by_expiry_.begin(); it != end; ++it) {
    const auto seen = seen_.find(it->second);
    // Only if the entry still has this expiry (it may have been re-inserted later).
    if (seen != seen_.end() && seen->second == it->first) seen_.erase(seen);
  }
  by_expiry_.erase(by_expiry_.begin(), end);
}

std::size_t ReplayCache::size() const {
  std::lock_guard lock(mutex_);
  return seen_.size();
}

tl::expected<void, ProofFailure> verify_agent_proof(std::string_view method, std::string_view path,
                                                    const json& body, const Key& agent_key,
                                                    std::int64_t now, ReplayCache& replay) {
  using tl::unexpected;
  auto bytes = proof_signing_bytes(method, path, body);
  if (!bytes) return unexpected(ProofFailure::kMalformed);
  const std::int64_t ts = get_int(body, "timestamp");
  if (ts < now - kProofWindowS || ts > now + kProofWindowS) return unexpected(ProofFailure::kStale);
  const auto sig_field = body.find("signature");
  if (sig_field == body.end() || !sig_field->is_string()) {
    return unexpected(ProofFailure::kMalformed);
  }
  auto sig = decode_signature(sig_field->get_ref<const std::string&>());
  if (!sig) return unexpected(ProofFailure::kMalformed);
  if (!ed25519_verify(agent_key, *bytes, *sig)) return unexpected(ProofFailure::kSignature);
  bool busy = false;
  // A nonce must be remembered until its timestamp can no longer pass the window check.
  if (!replay.insert(agent_key, body.at("nonce").get<std::string>(), ts + kProofWindowS, now,
                     &busy)) {
    return unexpected(busy ? ProofFailure::kBusy : ProofFailure::kReplayed);
  }
  return {};
}

}  // namespace portcullis::api
