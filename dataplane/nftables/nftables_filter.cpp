#include "dataplane/nftables/nftables_filter.h"

#include <libnftnl/common.h>
#include <linux/netfilter/nf_tables.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>
#include <utility>

#include "dataplane/nftables/ruleset.h"

namespace portcullis::nftables {

namespace {

using filter::FilterContents;
using filter::FilterDelta;
using filter::FilterSettings;

constexpr int kDumpRetries = 3;

std::string set_elements_what(const char* set) {
  return std::string("read set '") + set + "' of table inet " + kTable;
}

std::string comment_of_elem(nftnl_set_elem* e) {
  if (!nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_USERDATA)) return {};
  std::uint32_t len = 0;
  const auto* data =
      static_cast<const std::uint8_t*>(nftnl_set_elem_get(e, NFTNL_SET_ELEM_USERDATA, &len));
  // udata TLV: type (1 byte), length (1 byte), value.
  std::string out;
  for (std::uint32_t off = 0; off + 2 <= len;) {
    const std::uint8_t type = data[off];
    const std::uint8_t vlen = data[off + 1];
    if (off + 2 + vlen > len) break;
    if (type == NFTNL_UDATA_SET_ELEM_COMMENT && vlen > 0) {
      const char* s = reinterpret_cast<const char*>(data + off + 2);
      out.assign(s, strnlen(s, vlen));
    }
    off += 2 + vlen;
  }
  return out;
}

// Every element of one set, as the kernel holds it (one dump).
Status dump_set_elements(NftSocket& nft, const char* set_name,
                         const std::function<Status(nftnl_set_elem*)>& on_element) {
  NftSetPtr request(nftnl_set_alloc());
  nftnl_set_set_str(request.get(), NFTNL_SET_TABLE, kTable);
  nftnl_set_set_str(request.get(), NFTNL_SET_NAME, set_name);
  nftnl_set_set_u32(request.get(), NFTNL_SET_FAMILY, kFamily);
  NftSetPtr all(nftnl_set_alloc());
  auto ok = nft.dump(
      NFT_MSG_GETSETELEM,
      [&](nlmsghdr* nlh) { nftnl_set_elems_nlmsg_build_payload(nlh, request.get()); },
      [&](const nlmsghdr* nlh) -> Status {
        if (nftnl_set_elems_nlmsg_parse(nlh, all.get()) < 0) {
          return fail(Error::protocol(set_elements_what(set_name) + ": unparsable reply"));
        }
        return {};
      },
      set_elements_what(set_name));
  if (!ok) return ok;
  nftnl_set_elems_iter* it = nftnl_set_elems_iter_create(all.get());
  Status status;
  for (nftnl_set_elem* e = nftnl_set_elems_iter_next(it); e != nullptr && status;
       e = nftnl_set_elems_iter_next(it)) {
    status = on_element(e);
  }
  nftnl_set_elems_iter_destroy(it);
  return status;
}

template <class T>
std::vector<T> sorted(std::vector<T> v) {
  std::sort(v.begin(), v.end());
  return v;
}

}  // namespace

std::string NftDrift::to_string() const {
  if (table_missing) return std::string("table inet ") + kTable + " is missing";
  std::string out;
  auto line = [&out](const std::string& s) { out += (out.empty() ? "" : "\n") + s; };
  for (const auto& s : structure) line(s);
  for (const auto& a : elements.add_agents) line("set 'agents' lacks " + a.address.to_string());
  for (const auto& a : elements.remove_agents)
    line("set 'agents' has extra " + a.address.to_string());
  for (const auto& a : elements.add_allowed)
    line("set 'agent-ports' lacks " + allow_element(a).text);
  for (const auto& a : elements.remove_allowed) {
    line("set 'agent-ports' has extra " + allow_element(a).text);
  }
  return out;
}

NftablesFilter::NftablesFilter(NftSocket nft, ConntrackFlows conntrack)
    : nft_(std::move(nft)), conntrack_(std::move(conntrack)), cutter_([this] { run_cutter(); }) {}

NftablesFilter::~NftablesFilter() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  cutter_.join();  // after the queued cuts are done
}

Result<std::unique_ptr<NftablesFilter>> NftablesFilter::open() {
  auto nft = NftSocket::open();
  if (!nft) return fail(std::move(nft.error()).wrap("open nftables filter"));
  auto ct = ConntrackFlows::open();
  if (!ct) return fail(std::move(ct.error()).wrap("open nftables filter"));
  return std::unique_ptr<NftablesFilter>(new NftablesFilter(std::move(*nft), std::move(*ct)));
}

Status NftablesFilter::build(const FilterSettings& settings, const FilterContents& contents) {
  // What the old table allowed, to cut flows it no longer does. No table: nothing to cut.
  auto old = read();
  const std::uint32_t seq = nft_.reserve_seq(0);
  auto batch = build_cold_batch(settings, contents, seq);
  if (!batch) return fail(std::move(batch.error()).wrap("build table inet portcullis"));
  nft_.reserve_seq(static_cast<std::uint32_t>(batch->command_count() + 2));
  if (auto ok = nft_.send(*batch); !ok) {
    return fail(std::move(ok.error()).wrap("build table inet portcullis"));
  }
  if (old) queue_cut(filter::diff_contents(contents, *old));
  return settle();
}

Result<FilterContents> NftablesFilter::read() {
  for (int attempt = 1;; ++attempt) {
    auto contents = read_once();
    if (contents || contents.error().errno_value() != EINTR || attempt == kDumpRetries) {
      return contents;
    }
  }
}

Result<FilterContents> NftablesFilter::read_once() {
  FilterContents out;
  auto ok = dump_set_elements(nft_, kAgentsSet, [&](nftnl_set_elem* e) -> Status {
    std::uint32_t len = 0;
    const void* key = nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &len);
    auto addr = parse_agent_key(key, len);
    if (!addr) return fail(addr.error());
    out.agents.push_back(filter::AgentEntry{*addr, comment_of_elem(e)});
    return {};
  });
  if (!ok) return fail(ok.error());
  ok = dump_set_elements(nft_, kAgentPortsSet, [&](nftnl_set_elem* e) -> Status {
    std::uint32_t len = 0;
    const void* key = nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &len);
    auto entry = parse_allow_key(key, len);
    if (!entry) return fail(entry.error());
    entry->device = comment_of_elem(e);
    out.allowed.push_back(std::move(*entry));
    return {};
  });
  if (!ok) return fail(ok.error());
  out.agents = sorted(std::move(out.agents));
  out.allowed = sorted(std::move(out.allowed));
  return out;
}

Status NftablesFilter::apply(const FilterDelta& delta) {
  if (delta.empty()) return {};
  const std::uint32_t seq = nft_.reserve_seq(0);
  auto batch = build_delta_batch(delta, seq);
  if (!batch) return fail(std::move(batch.error()).wrap("apply filter change"));
  nft_.reserve_seq(static_cast<std::uint32_t>(batch->command_count() + 2));
  if (auto ok = nft_.send(*batch); !ok) {
    return fail(std::move(ok.error())
                    .wrap("apply filter change to table inet portcullis (if the table is "
                          "missing, run a cold build)"));
  }
  queue_cut(delta);
  return {};
}

void NftablesFilter::queue_cut(const FilterDelta& delta) {
  // An entry removed and added back in the same change stays allowed: keep its flows.
  Cut cut;
  std::set<filter::AllowEntry> added(delta.add_allowed.begin(), delta.add_allowed.end());
  for (const auto& a : delta.remove_allowed) {
    if (added.count(a) == 0) cut.allowed.push_back(a);
  }
  std::set<filter::AgentEntry> added_agents(delta.add_agents.begin(), delta.add_agents.end());
  for (const auto& a : delta.remove_agents) {
    if (added_agents.count(a) == 0) cut.agents.push_back(a);
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto& allowed = pending_.allowed;
    allowed.erase(std::remove_if(allowed.begin(), allowed.end(),
                                 [&](const auto& a) { return added.count(a) > 0; }),
                  allowed.end());
    auto& agents = pending_.agents;
    agents.erase(std::remove_if(agents.begin(), agents.end(),
                                [&](const auto& a) { return added_agents.count(a) > 0; }),
                 agents.end());
    allowed.insert(allowed.end(), cut.allowed.begin(), cut.allowed.end());
    agents.insert(agents.end(), cut.agents.begin(), cut.agents.end());
  }
  wake_.notify_all();
}

void NftablesFilter::run_cutter() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    auto has_work = [this] { return !pending_.allowed.empty() || !pending_.agents.empty(); };
    wake_.wait(lock, [&] { return stopping_ || has_work(); });
    if (!has_work()) return;  // stopping, nothing left
    Cut cut = std::exchange(pending_, Cut{});
    cutting_ = true;
    lock.unlock();
    auto done = conntrack_.cut(cut.allowed, cut.agents);
    lock.lock();
    cutting_ = false;
    if (!done && !cut_error_) {
      cut_error_ = std::move(done.error())
                       .wrap(
                           "filter changed, but the conntrack entries of flows it no longer "
                           "allows were not deleted (the ruleset stops them already)");
    }
    wake_.notify_all();
  }
}

Status NftablesFilter::settle() {
  std::unique_lock<std::mutex> lock(mutex_);
  wake_.wait(lock,
             [this] { return pending_.allowed.empty() && pending_.agents.empty() && !cutting_; });
  if (!cut_error_) return {};
  Error e = std::move(*cut_error_);
  cut_error_.reset();
  return fail(std::move(e));
}

Status NftablesFilter::remove() {
  const std::uint32_t seq = nft_.reserve_seq(4);
  if (auto ok = nft_.send(build_remove_batch(seq)); !ok) {
    return fail(std::move(ok.error()).wrap("remove table inet portcullis"));
  }
  return {};
}

Status NftablesFilter::check_structure(const FilterSettings& settings, NftDrift& drift) {
  // Chains: name -> (hook, priority, type, policy).
  struct ChainSeen {
    std::uint32_t hook = 0;
    std::int32_t prio = 0;
    std::string type;
    bool base = false;
  };
  std::map<std::string, ChainSeen> chains;
  NftChainPtr chain_req(nftnl_chain_alloc());
  nftnl_chain_set_str(chain_req.get(), NFTNL_CHAIN_TABLE, kTable);
  auto ok = nft_.dump(
      NFT_MSG_GETCHAIN,
      [&](nlmsghdr* nlh) { nftnl_chain_nlmsg_build_payload(nlh, chain_req.get()); },
      [&](const nlmsghdr* nlh) -> Status {
        NftChainPtr c(nftnl_chain_alloc());
        if (nftnl_chain_nlmsg_parse(nlh, c.get()) < 0) {
          return fail(Error::protocol("read chains: unparsable reply"));
        }
        if (std::string(nftnl_chain_get_str(c.get(), NFTNL_CHAIN_TABLE)) != kTable) return {};
        ChainSeen seen;
        seen.base = nftnl_chain_is_set(c.get(), NFTNL_CHAIN_HOOKNUM);
        if (seen.base) {
          seen.hook = nftnl_chain_get_u32(c.get(), NFTNL_CHAIN_HOOKNUM);
          seen.prio = nftnl_chain_get_s32(c.get(), NFTNL_CHAIN_PRIO);
          seen.type = nftnl_chain_get_str(c.get(), NFTNL_CHAIN_TYPE);
        }
        chains[nftnl_chain_get_str(c.get(), NFTNL_CHAIN_NAME)] = seen;
        return {};
      },
      "read chains of table inet portcullis");
  if (!ok) return ok;

  // Rules: chain -> fingerprints in order.
  std::map<std::string, std::vector<std::string>> rules;
  NftRulePtr rule_req(nftnl_rule_alloc());
  nftnl_rule_set_str(rule_req.get(), NFTNL_RULE_TABLE, kTable);
  ok = nft_.dump(
      NFT_MSG_GETRULE, [&](nlmsghdr* nlh) { nftnl_rule_nlmsg_build_payload(nlh, rule_req.get()); },
      [&](const nlmsghdr* nlh) -> Status {
        NftRulePtr r(nftnl_rule_alloc());
        if (nftnl_rule_nlmsg_parse(nlh, r.get()) < 0) {
          return fail(Error::protocol("read rules: unparsable reply"));
        }
        if (std::string(nftnl_rule_get_str(r.get(), NFTNL_RULE_TABLE)) != kTable) return {};
        rules[nftnl_rule_get_str(r.get(), NFTNL_RULE_CHAIN)].push_back(rule_fingerprint(r.get()));
        return {};
      },
      "read rules of table inet portcullis");
  if (!ok) return ok;

  std::set<std::string> expected_chains;
  for (auto& spec : chain_specs(settings)) {
    const std::string name = spec.name;
    expected_chains.insert(name);
    auto it = chains.find(name);
    if (it == chains.end()) {
      drift.structure.push_back("chain '" + name + "' is missing");
      continue;
    }
    const ChainSeen& seen = it->second;
    if (!seen.base || seen.hook != spec.hook || seen.prio != kChainPriority ||
        seen.type != "filter") {
      drift.structure.push_back("chain '" + name + "' has the wrong type, hook or priority");
    }
    const auto& have = rules[name];
    for (std::size_t i = 0; i < std::max(have.size(), spec.rules.size()); ++i) {
      const std::string pos = "chain '" + name + "' rule " + std::to_string(i + 1);
      if (i >= have.size()) {
        drift.structure.push_back(pos + " is missing: " + spec.rules[i].text);
      } else if (i >= spec.rules.size()) {
        drift.structure.push_back(pos + " is extra: " + have[i]);
      } else if (have[i] != rule_fingerprint(spec.rules[i].rule.get())) {
        drift.structure.push_back(pos + " differs from: " + spec.rules[i].text + " (kernel has " +
                                  have[i] + ")");
      }
    }
  }
  for (const auto& [name, seen] : chains) {
    if (expected_chains.count(name) == 0)
      drift.structure.push_back("chain '" + name + "' is extra");
  }

  // Sets: name, key type and flags.
  struct SetSeen {
    std::uint32_t key_type, key_len, flags;
  };
  std::map<std::string, SetSeen> sets;
  NftSetPtr set_req(nftnl_set_alloc());
  nftnl_set_set_str(set_req.get(), NFTNL_SET_TABLE, kTable);
  ok = nft_.dump(
      NFT_MSG_GETSET, [&](nlmsghdr* nlh) { nftnl_set_nlmsg_build_payload(nlh, set_req.get()); },
      [&](const nlmsghdr* nlh) -> Status {
        NftSetPtr s(nftnl_set_alloc());
        if (nftnl_set_nlmsg_parse(nlh, s.get()) < 0) {
          return fail(Error::protocol("read sets: unparsable reply"));
        }
        if (std::string(nftnl_set_get_str(s.get(), NFTNL_SET_TABLE)) != kTable) return {};
        sets[nftnl_set_get_str(s.get(), NFTNL_SET_NAME)] = SetSeen{
            nftnl_set_get_u32(s.get(), NFTNL_SET_KEY_TYPE),
            nftnl_set_get_u32(s.get(), NFTNL_SET_KEY_LEN),
            nftnl_set_is_set(s.get(), NFTNL_SET_FLAGS) ? nftnl_set_get_u32(s.get(), NFTNL_SET_FLAGS)
                                                       : 0};
        return {};
      },
      "read sets of table inet portcullis");
  if (!ok) return ok;
  const std::map<std::string, SetSeen> want_sets = {
      {kAgentsSet, {kTypeIpv4Addr, 4, 0}},
      {kAgentPortsSet, {kTypeAgentPorts, kAgentPortsKeyLen, 0}},
      {kOperatorNetworksSet, {kTypeIpv4Addr, 4, NFT_SET_INTERVAL}},
  };
  for (const auto& [name, want] : want_sets) {
    auto it = sets.find(name);
    if (it == sets.end()) {
      drift.structure.push_back("set '" + name + "' is missing");
    } else if (it->second.key_type != want.key_type || it->second.key_len != want.key_len ||
               (it->second.flags & NFT_SET_INTERVAL) != want.flags) {
      drift.structure.push_back("set '" + name + "' has the wrong type or flags");
    }
  }
  for (const auto& [name, seen] : sets) {
    if (want_sets.count(name) == 0) drift.structure.push_back("set '" + name + "' is extra");
  }

  // operator-networks: part of the settings, compared as its range elements.
  if (sets.count(kOperatorNetworksSet) > 0) {
    auto want = operator_network_elements(settings.operator_networks);
    if (!want) return fail(want.error());
    std::vector<std::pair<std::vector<std::uint8_t>, std::uint32_t>> want_keys, have_keys;
    for (const auto& e : *want) want_keys.emplace_back(e.key, e.flags & NFT_SET_ELEM_INTERVAL_END);
    ok = dump_set_elements(nft_, kOperatorNetworksSet, [&](nftnl_set_elem* e) -> Status {
      std::uint32_t len = 0;
      const auto* key =
          static_cast<const std::uint8_t*>(nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &len));
      const std::uint32_t flags = nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_FLAGS)
                                      ? nftnl_set_elem_get_u32(e, NFTNL_SET_ELEM_FLAGS)
                                      : 0;
      have_keys.emplace_back(std::vector<std::uint8_t>(key, key + len),
                             flags & NFT_SET_ELEM_INTERVAL_END);
      return {};
    });
    if (!ok) return ok;
    if (sorted(want_keys) != sorted(have_keys)) {
      drift.structure.push_back("set 'operator-networks' does not hold the operator networks");
    }
  }
  return {};
}

Result<NftDrift> NftablesFilter::check(const FilterSettings& settings,
                                       const FilterContents& contents) {
  if (auto ok = validate(settings); !ok) return fail(ok.error());
  NftDrift drift;
  bool found = false;
  auto ok = nft_.dump(
      NFT_MSG_GETTABLE, [](nlmsghdr*) {},
      [&](const nlmsghdr* nlh) -> Status {
        NftTablePtr t(nftnl_table_alloc());
        if (nftnl_table_nlmsg_parse(nlh, t.get()) < 0) {
          return fail(Error::protocol("read tables: unparsable reply"));
        }
        if (std::string(nftnl_table_get_str(t.get(), NFTNL_TABLE_NAME)) == kTable) found = true;
        return {};
      },
      "read inet tables");
  if (!ok) return fail(ok.error());
  if (!found) {
    drift.table_missing = true;
    return drift;
  }
  if (auto s = check_structure(settings, drift); !s) return fail(s.error());
  auto have = read();
  if (!have) {
    if (have.error().errno_value() == ENOENT) return drift;  // a set is missing: structure says so
    return fail(have.error());
  }
  drift.elements = filter::diff_contents(contents, *have);
  return drift;
}

Status NftablesFilter::repair(const FilterSettings& settings, const FilterContents& contents) {
  auto drift = check(settings, contents);
  if (!drift) return fail(std::move(drift.error()).wrap("repair table inet portcullis"));
  if (drift->empty()) return {};
  if (drift->table_missing || !drift->structure.empty()) return build(settings, contents);
  return apply(drift->elements);
}

}  // namespace portcullis::nftables
