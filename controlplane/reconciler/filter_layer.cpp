#include "controlplane/reconciler/filter_layer.h"

#include "dataplane/bpf/bpf_filter.h"
#include "dataplane/nftables/nftables_filter.h"

namespace portcullis::reconciler {
namespace {

// Audit details stay short: the first structural difference, cut, and how many more.
constexpr std::size_t kMaxWhy = 100;

Result<LayerCheck> check_nftables(nftables::NftablesFilter& nft,
                                  const filter::FilterSettings& settings,
                                  const filter::FilterContents& want) {
  auto drift = nft.check(settings, want);
  if (!drift) return fail(std::move(drift.error()));
  LayerCheck c;
  if (drift->table_missing) {
    c.rebuild = true;
    c.why = "table inet portcullis missing";
  } else if (!drift->structure.empty()) {
    c.rebuild = true;
    c.why = drift->structure.front();
    if (c.why.size() > kMaxWhy) c.why = c.why.substr(0, kMaxWhy) + "...";
    if (drift->structure.size() > 1) {
      c.why += " (and " + std::to_string(drift->structure.size() - 1) + " more)";
    }
  } else {
    c.elements = std::move(drift->elements);
  }
  return c;
}

Result<LayerCheck> check_ebpf(bpf::BpfFilter& ebpf, const filter::FilterSettings& settings,
                              const filter::FilterContents& want) {
  auto drift = ebpf.check(settings, want);
  if (!drift) return fail(std::move(drift.error()));
  LayerCheck c;
  c.rebuild = drift->rebuild;
  c.why = std::move(drift->why);
  if (c.why.size() > kMaxWhy) c.why = c.why.substr(0, kMaxWhy) + "...";
  c.elements = std::move(drift->elements);
  return c;
}

}  // namespace

Result<LayerCheck> check_contents(filter::PacketFilter& filter,
                                  const filter::FilterContents& want) {
  auto have = filter.read();
  if (!have) {
    if (have.error().errno_value() == ENOENT) return LayerCheck{true, "not installed", {}};
    return fail(std::move(have.error()));
  }
  return LayerCheck{false, "", filter::diff_contents(want, *have)};
}

FilterLayer nftables_layer(nftables::NftablesFilter& nft) {
  return FilterLayer{
      "nftables", nft,
      [&nft](const filter::FilterSettings& settings, const filter::FilterContents& want) {
        return check_nftables(nft, settings, want);
      }};
}

FilterLayer ebpf_layer(bpf::BpfFilter& ebpf) {
  return FilterLayer{
      "ebpf", ebpf,
      [&ebpf](const filter::FilterSettings& settings, const filter::FilterContents& want) {
        return check_ebpf(ebpf, settings, want);
      }};
}

}  // namespace portcullis::reconciler
