#pragma once
// Agent proof of possession: enroll/request and enroll/poll are signed with the agent's Ed25519
// identity key. The request body carries "timestamp" (Unix seconds), "nonce" (16-64 base64url
// characters, fresh per request) and "signature" (base64 of the 64-byte Ed25519 signature) next
// to its other fields. The signature covers these exact bytes (no trailing newline):
//
//   "portcullis-agent-v1\n"
//   <method> " " <path> "\n"            e.g. "POST /api/agent/enroll/request\n"
//   <timestamp, decimal> "\n"
//   <nonce> "\n"
//   <hex SHA-256 of the canonical body>   64 lower-case hex digits
//
// The canonical body is the request object without its "signature" member, serialized with no
// whitespace, members sorted by key (bytewise, at every level), strings as UTF-8 with only the
// escapes JSON requires ('"', '\\', control characters as \b \f \n \r \t or \u00XX lower-case),
// integers in decimal; floating-point numbers are rejected. This is nlohmann::json::dump() of
// the parsed object, and equals RFC 8785 (JCS) when keys are ASCII. So every field the agent sends,
// including timestamp and nonce, is covered, and path binding stops a signature for one endpoint
// from being replayed at another.
//
// The gateway accepts a timestamp within ±300 s of its clock and each (agent key, nonce) once
// within that window (ReplayCache).

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "controlplane/api/crypto.h"
#include "controlplane/api/json_input.h"

namespace portcullis::api {

inline constexpr std::int64_t kProofWindowS = 300;
inline constexpr std::string_view kProofDomain = "portcullis-agent-v1";

// The bytes to sign for `body` (which may still contain "signature"; it is left out).
Checked<std::string> proof_signing_bytes(std::string_view method, std::string_view path,
                                         const nlohmann::json& body);

// Adds timestamp, nonce and signature to `body` (for agents and tests).
Checked<void> sign_agent_request(std::string_view method, std::string_view path,
                                 nlohmann::json& body, const SigningKey& agent_key,
                                 std::int64_t timestamp, const std::string& nonce);

enum class ProofFailure {
  kMalformed,  // timestamp, nonce or signature missing or of the wrong form
  kStale,      // timestamp outside ±300 s
  kSignature,  // not signed by the agent key over these bytes
  kReplayed,   // nonce already seen for this agent key
  kBusy,       // the replay cache is full of live entries
};
const char* proof_failure_name(ProofFailure f);  // "malformed", "stale", …

// Remembers (agent key, nonce) until its timestamp leaves the window. Bounded: when full of live
// entries, new proofs are refused (kBusy) rather than forgetting a live nonce.
class ReplayCache {
 public:
  explicit ReplayCache(std::size_t capacity) : capacity_(capacity) {}
  // False if seen (kReplayed) or full (kBusy, in *busy).
  bool insert(const Key& agent_key, const std::string& nonce, std::int64_t expires_at,
              std::int64_t now, bool* busy);
  std::size_t size() const;

 private:
  void prune(std::int64_t now);

  const std::size_t capacity_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, std::int64_t> seen_;  // key bytes || nonce -> expires_at
  std::multimap<std::int64_t, std::string> by_expiry_;
};

// Checks timestamp window, signature (with `agent_key`), then records the nonce.
tl::expected<void, ProofFailure> verify_agent_proof(std::string_view method, std::string_view path,
                                                    const nlohmann::json& body,
                                                    const Key& agent_key, std::int64_t now,
                                                    ReplayCache& replay);

}  // namespace portcullis::api
