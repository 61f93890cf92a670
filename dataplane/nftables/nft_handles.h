#pragma once
// One owner for each libnftnl / libmnl object: move-only std::unique_ptr with the library's free
// function as deleter (all of them accept null).

#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>

#include <memory>
#include <utility>

namespace portcullis::nftables {

template <class T, auto Free>
struct NftFree {
  void operator()(T* p) const {
    if (p != nullptr) Free(p);
  }
};

using NftTablePtr = std::unique_ptr<nftnl_table, NftFree<nftnl_table, nftnl_table_free>>;
using NftChainPtr = std::unique_ptr<nftnl_chain, NftFree<nftnl_chain, nftnl_chain_free>>;
using NftRulePtr = std::unique_ptr<nftnl_rule, NftFree<nftnl_rule, nftnl_rule_free>>;
using NftSetPtr = std::unique_ptr<nftnl_set, NftFree<nftnl_set, nftnl_set_free>>;
using NftSetElemPtr = std::unique_ptr<nftnl_set_elem, NftFree<nftnl_set_elem, nftnl_set_elem_free>>;
using NftExprPtr = std::unique_ptr<nftnl_expr, NftFree<nftnl_expr, nftnl_expr_free>>;
using NftUdataPtr =
    std::unique_ptr<nftnl_udata_buf, NftFree<const nftnl_udata_buf, nftnl_udata_buf_free>>;
using MnlSocketPtr = std::unique_ptr<mnl_socket, NftFree<mnl_socket, mnl_socket_close>>;

// Calls f(attr) for each attribute in [begin, end): libmnl's mnl_attr_for_each* are C macros
// that assign void* to a typed pointer, which C++ rejects.
template <class F>
void for_each_attr(const void* begin, const void* end, F&& f) {
  const auto* attr = static_cast<const nlattr*>(begin);
  const auto* stop = static_cast<const char*>(end);
  while (mnl_attr_ok(attr, static_cast<int>(stop - reinterpret_cast<const char*>(attr)))) {
    f(attr);
    attr = mnl_attr_next(attr);
  }
}

// The attributes of a message after its `offset`-byte family header.
template <class F>
void for_each_attr(const nlmsghdr* nlh, std::size_t offset, F&& f) {
  for_each_attr(mnl_nlmsg_get_payload_offset(nlh, offset), mnl_nlmsg_get_payload_tail(nlh),
                std::forward<F>(f));
}

// The attributes nested in `nest`.
template <class F>
void for_each_nested(const nlattr* nest, F&& f) {
  const auto* payload = static_cast<const char*>(mnl_attr_get_payload(nest));
  for_each_attr(payload, payload + mnl_attr_get_payload_len(nest), std::forward<F>(f));
}

}  // namespace portcullis::nftables
