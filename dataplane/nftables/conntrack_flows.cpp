#include "dataplane/nftables/conntrack_flows.h"

#include <libnetfilter_conntrack/libnetfilter_conntrack.h>
#include <netinet/in.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <set>
#include <tuple>

namespace portcullis::nftables {

namespace {

struct CtFree {
  void operator()(nf_conntrack* ct) const { nfct_destroy(ct); }
};
using CtPtr = std::unique_ptr<nf_conntrack, CtFree>;

// Network byte order, as ctnetlink reports them.
using FlowKey = std::tuple<std::uint32_t, std::uint8_t, std::uint16_t>;

std::uint32_t be_addr(const IpAddress& a) {
  std::uint32_t v;
  std::memcpy(&v, a.data(), 4);
  return v;
}

struct Match {
  std::set<FlowKey> allowed;
  std::set<std::uint32_t> agents;
  std::vector<CtPtr> hits;
};

}  // namespace

void ConntrackFlows::HandleClose::operator()(nfct_handle* h) const {
  if (h != nullptr) nfct_close(h);
}

Result<ConntrackFlows> ConntrackFlows::open() {
  nfct_handle* h = nfct_open(CONNTRACK, 0);
  if (h == nullptr) return fail(Error::last_errno("open conntrack netlink handle"));
  return ConntrackFlows(std::unique_ptr<nfct_handle, HandleClose>(h));
}

Result<std::size_t> ConntrackFlows::cut(const std::vector<filter::AllowEntry>& allowed,
                                        const std::vector<filter::AgentEntry>& agents) {
  Match m;
  for (const auto& a : allowed) {
    if (!a.agent.is_v4()) continue;
    m.allowed.emplace(be_addr(a.agent), static_cast<std::uint8_t>(a.protocol), htons(a.port));
  }
  for (const auto& a : agents) {
    if (a.address.is_v4()) m.agents.insert(be_addr(a.address));
  }
  if (m.allowed.empty() && m.agents.empty()) return std::size_t{0};

  // Collect during the dump, delete after it: a handle cannot issue requests mid-dump.
  nfct_callback_register(
      handle_.get(), NFCT_T_ALL,
      [](enum nf_conntrack_msg_type, nf_conntrack* ct, void* data) -> int {
        auto* mm = static_cast<Match*>(data);
        const std::uint32_t dst = nfct_get_attr_u32(ct, ATTR_ORIG_IPV4_DST);
        const FlowKey key{dst, nfct_get_attr_u8(ct, ATTR_ORIG_L4PROTO),
                          nfct_get_attr_u16(ct, ATTR_ORIG_PORT_DST)};
        bool hit = mm->allowed.count(key) > 0;
        if (!hit && !mm->agents.empty()) {
          for (auto attr :
               {ATTR_ORIG_IPV4_SRC, ATTR_ORIG_IPV4_DST, ATTR_REPL_IPV4_SRC, ATTR_REPL_IPV4_DST}) {
            if (mm->agents.count(nfct_get_attr_u32(ct, attr)) > 0) hit = true;
          }
        }
        if (hit) mm->hits.emplace_back(nfct_clone(ct));
        return NFCT_CB_CONTINUE;
      },
      &m);
  std::uint32_t family = AF_INET;
  const int ret = nfct_query(handle_.get(), NFCT_Q_DUMP, &family);
  const int dump_errno = errno;
  nfct_callback_unregister(handle_.get());
  if (ret < 0) return fail_errno(dump_errno, "dump conntrack entries to cut removed flows");

  std::size_t deleted = 0;
  for (const auto& ct : m.hits) {
    if (nfct_query(handle_.get(), NFCT_Q_DESTROY, ct.get()) == 0) {
      ++deleted;
    } else if (errno != ENOENT) {
      return fail(Error::last_errno("delete conntrack entry of a removed flow"));
    }
  }
  return deleted;
}

}  // namespace portcullis::nftables
