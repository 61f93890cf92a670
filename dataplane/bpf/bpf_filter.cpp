#include "dataplane/bpf/bpf_filter.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <tuple>
#include <type_traits>
#include <unordered_map>

#include "bpf/portcullis_filter.h"
#include "dataplane/base/unique_fd.h"
#include "portcullis_filter.skel.h"

namespace portcullis::bpf {

static_assert(static_cast<int>(VerdictReason::kUnknownAgent) == PCL_REASON_UNKNOWN_AGENT &&
                  PCL_REASON_MAX == 11,
              "VerdictReason must follow enum pcl_reason in bpf/portcullis_filter.h");

const char* verdict_reason_name(VerdictReason r) {
  switch (r) {
    case VerdictReason::kAllowed:
      return "allowed";
    case VerdictReason::kPortNotAllowed:
      return "port-not-allowed";
    case VerdictReason::kAgentInitiated:
      return "agent-initiated";
    case VerdictReason::kAgentToAgent:
      return "agent-to-agent";
    case VerdictReason::kNoFlow:
      return "no-flow";
    case VerdictReason::kSourceNotAllowed:
      return "source-not-allowed";
    case VerdictReason::kNotIpv4:
      return "not-ipv4";
    case VerdictReason::kFragment:
      return "fragment";
    case VerdictReason::kMalformed:
      return "malformed";
    case VerdictReason::kProtocol:
      return "protocol";
    case VerdictReason::kUnknownAgent:
      return "unknown-agent";
  }
  return "unknown";
}

const char* direction_name(Direction d) {
  return d == Direction::kToAgent ? "to-agent" : "from-agent";
}

namespace {

// The maps of bpf/portcullis_filter.bpf.c that are pinned, and the programs, by index.
enum MapIndex { kAgentPorts, kAgents, kSources, kFlows, kCounters, kMapCount };
constexpr const char* kMapNames[kMapCount] = {"pcl_agent_ports", "pcl_agents", "pcl_sources",
                                              "pcl_flows", "pcl_counters"};
enum ProgIndex { kEgress, kIngress, kProgCount };
constexpr const char* kProgNames[kProgCount] = {"pcl_tc_egress", "pcl_tc_ingress"};

struct SkeletonDeleter {
  void operator()(portcullis_filter_bpf* s) const { portcullis_filter_bpf__destroy(s); }
};
using SkeletonPtr = std::unique_ptr<portcullis_filter_bpf, SkeletonDeleter>;
using Rodata = std::remove_pointer_t<decltype(portcullis_filter_bpf::rodata)>;

}  // namespace

// Loaded by build() (the skeleton owns every fd), or adopted from the pins of a previous process
// (no skeleton; `adopted` owns the fds of the pinned maps and programs).
struct BpfFilter::Objects {
  SkeletonPtr skeleton;
  std::vector<UniqueFd> adopted;
  int map[kMapCount] = {-1, -1, -1, -1, -1};
  int prog[kProgCount] = {-1, -1};
  std::uint32_t prog_id[kProgCount] = {};
  std::uint32_t l2_len = 0;  // the programs' pcl_l2_len
};

namespace {

// Our filters' place on each clsact hook; a fixed place lets a restarted daemon replace its
// own programs atomically (BPF_TC_F_REPLACE) and leave other filters alone.
constexpr std::uint32_t kTcHandle = 0x70636c;  // "pcl"
constexpr std::uint32_t kTcPriority = 0x7063;
constexpr std::uint32_t kEthernetHeaderLen = 14;
// Elements per BPF_MAP_LOOKUP_BATCH call.
constexpr std::uint32_t kBatchSize = 4096;

// libbpf reports verifier and pin problems through its print callback. The dataplane does not
// log: the last warnings are kept here and put into the error of the failing call.
std::string& libbpf_messages() {
  static std::string messages;
  return messages;
}

int keep_libbpf_message(enum libbpf_print_level level, const char* format, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  char line[1024];
  std::vsnprintf(line, sizeof(line), format, args);
  auto& messages = libbpf_messages();
  messages += line;
  if (messages.size() > 4096) messages.erase(0, messages.size() - 4096);
  return 0;
}

// Routes libbpf's messages into libbpf_messages() while alive (libbpf's default prints them).
class LibbpfMessageCapture {
 public:
  LibbpfMessageCapture() : previous_(libbpf_set_print(keep_libbpf_message)) {
    libbpf_messages().clear();
  }
  ~LibbpfMessageCapture() { libbpf_set_print(previous_); }
  LibbpfMessageCapture(const LibbpfMessageCapture&) = delete;
  LibbpfMessageCapture& operator=(const LibbpfMessageCapture&) = delete;

 private:
  libbpf_print_fn_t previous_;
};

Error libbpf_error(int err, const std::string& context) {
  std::string text = context;
  auto& messages = libbpf_messages();
  if (!messages.empty()) {
    while (!messages.empty() && messages.back() == '\n') messages.pop_back();
    text += " (libbpf: " + messages + ")";
    messages.clear();
  }
  return Error::from_errno(err, std::move(text));
}

std::string quote(const std::string& s) { return "'" + s + "'"; }

Result<std::uint32_t> v4_key(const IpAddress& a, const char* what) {
  if (!a.is_v4()) return fail_invalid(std::string(what) + " " + a.to_string() + " is not IPv4");
  std::uint32_t key;
  std::memcpy(&key, a.data(), 4);
  return key;
}

IpAddress from_v4_key(std::uint32_t key) {
  in_addr a;
  a.s_addr = key;
  return IpAddress::v4(a);
}

pcl_port_key port_key(std::uint32_t agent, const filter::AllowEntry& e) {
  pcl_port_key k{};
  k.agent = agent;
  k.port = e.port;
  k.proto = static_cast<std::uint8_t>(e.protocol);
  return k;
}

pcl_agent_value agent_value(const std::string& device) {
  pcl_agent_value v{};
  std::strncpy(v.device, device.c_str(), sizeof(v.device) - 1);
  return v;
}

std::string describe(const filter::AllowEntry& e) {
  return e.agent.to_string() + " " + filter::protocol_name(e.protocol) + "/" +
         std::to_string(e.port);
}

// Every (key, value bytes) of a hash map, read in batches. value_size is the map's value size
// times the number of possible CPUs for per-CPU maps (each CPU's value 8-byte aligned).
template <class Key>
Result<std::vector<std::pair<Key, std::vector<std::uint8_t>>>> dump_map(int fd,
                                                                        std::size_t value_size,
                                                                        const char* name) {
  std::vector<std::pair<Key, std::vector<std::uint8_t>>> out;
  std::uint32_t batch_size = kBatchSize;
  std::vector<Key> keys(batch_size);
  std::vector<std::uint8_t> values(batch_size * value_size);
  // Hash maps use a bucket index as the batch token; a key-sized buffer always fits it.
  Key in_token{}, out_token{};
  bool first = true;
  for (;;) {
    std::uint32_t count = batch_size;
    LIBBPF_OPTS(bpf_map_batch_opts, opts);
    int err = bpf_map_lookup_batch(fd, first ? nullptr : &in_token, &out_token, keys.data(),
                                   values.data(), &count, &opts);
    if (err < 0 && errno == ENOSPC && count == 0) {
      // One bucket holds more than batch_size entries.
      batch_size *= 2;
      keys.resize(batch_size);
      values.resize(batch_size * value_size);
      continue;
    }
    if (err < 0 && errno != ENOENT) {
      return fail_errno(errno, std::string("read BPF map ") + quote(name));
    }
    for (std::uint32_t i = 0; i < count; ++i) {
      auto v = values.begin() + i * value_size;
      out.emplace_back(keys[i], std::vector<std::uint8_t>(v, v + value_size));
    }
    if (err < 0) break;  // ENOENT: that was the last batch
    in_token = out_token;
    first = false;
  }
  return out;
}

Status make_dirs(const std::string& path) {
  for (std::size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos != path.size() && path[pos] != '/') continue;
    std::string part = path.substr(0, pos);
    if (::mkdir(part.c_str(), 0700) < 0 && errno != EEXIST) {
      return fail_errno(errno, "create BPF pin directory " + quote(part));
    }
  }
  return {};
}

Result<std::uint32_t> l2_header_len(const std::string& ifname) {
  UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock) return fail_errno(errno, "open socket to query interface " + quote(ifname));
  ifreq req{};
  std::strncpy(req.ifr_name, ifname.c_str(), IFNAMSIZ - 1);
  if (::ioctl(sock.get(), SIOCGIFHWADDR, &req) < 0) {
    return fail_errno(errno, "read link type of interface " + quote(ifname));
  }
  switch (req.ifr_hwaddr.sa_family) {
    case ARPHRD_NONE:
      return 0;  // WireGuard, TUN: the packet starts at the IP header
    case ARPHRD_ETHER:
      return kEthernetHeaderLen;
    default:
      return fail_errno(EOPNOTSUPP, "interface " + quote(ifname) + " has link type " +
                                        std::to_string(req.ifr_hwaddr.sa_family) +
                                        "; use a WireGuard, TUN or Ethernet interface");
  }
}

// Identifies the BPF object embedded in this binary: FNV-1a over its bytes (not a defence
// against anyone: whoever can load BPF programs is root anyway). Loaded as pcl_build_id.
std::uint64_t build_id() {
  static const std::uint64_t id = [] {
    std::size_t size = 0;
    const auto* p = static_cast<const unsigned char*>(portcullis_filter_bpf__elf_bytes(&size));
    std::uint64_t h = 0xcbf29ce484222325ULL;
    for (std::size_t i = 0; i < size; ++i) {
      h ^= p[i];
      h *= 0x100000001b3ULL;
    }
    return h;
  }();
  return id;
}

// Opens (does not load) the BPF object with the read-only settings this process loads it with.
Result<SkeletonPtr> open_skeleton(std::uint32_t l2_len) {
  SkeletonPtr skel(portcullis_filter_bpf__open());
  if (!skel) return fail(libbpf_error(errno, "open BPF object portcullis_filter"));
  skel->rodata->pcl_l2_len = l2_len;
  skel->rodata->pcl_build_id = build_id();
  return skel;
}

Result<bpf_map_info> map_info(int fd, const std::string& what) {
  bpf_map_info info{};
  std::uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) < 0) {
    return fail_errno(errno, "read the definition of BPF map " + what);
  }
  return info;
}

// The program's info and the ids of the maps it uses.
Result<bpf_prog_info> prog_info(int fd, std::vector<std::uint32_t>* map_ids,
                                const std::string& what) {
  bpf_prog_info info{};
  std::uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) < 0) {
    return fail_errno(errno, "read BPF program " + what);
  }
  if (!map_ids) return info;
  map_ids->assign(info.nr_map_ids, 0);
  bpf_prog_info again{};
  again.nr_map_ids = info.nr_map_ids;
  again.map_ids = reinterpret_cast<std::uintptr_t>(map_ids->data());
  len = sizeof(again);
  if (bpf_obj_get_info_by_fd(fd, &again, &len) < 0) {
    return fail_errno(errno, "read the maps of BPF program " + what);
  }
  map_ids->resize(std::min(again.nr_map_ids, info.nr_map_ids));
  return info;
}

// Empty if the kernel map `info` has the definition of `want`, else what differs.
std::string map_mismatch(const bpf_map_info& info, const bpf_map* want) {
  if (std::strcmp(info.name, bpf_map__name(want)) == 0 && info.type == bpf_map__type(want) &&
      info.key_size == bpf_map__key_size(want) && info.value_size == bpf_map__value_size(want) &&
      info.max_entries == bpf_map__max_entries(want) &&
      info.map_flags == bpf_map__map_flags(want)) {
    return {};
  }
  char text[256];
  std::snprintf(text, sizeof(text),
                "had name '%s' type %u key %u value %u max %u flags %#x, want type %u key %u "
                "value %u max %u flags %#x",
                info.name, info.type, info.key_size, info.value_size, info.max_entries,
                info.map_flags, bpf_map__type(want), bpf_map__key_size(want),
                bpf_map__value_size(want), bpf_map__max_entries(want), bpf_map__map_flags(want));
  return text;
}

// Empty if a program that uses the maps `used` is the one this process would load over the
// pinned maps: every map it uses is a pin, except its .rodata, which holds exactly what
// `skel` would load (pcl_l2_len, pcl_build_id). Else what differs.
Result<std::string> program_mismatch(const std::vector<std::uint32_t>& used,
                                     const std::set<std::uint32_t>& pinned,
                                     const portcullis_filter_bpf& skel) {
  static_assert(std::is_trivially_copyable_v<Rodata>);
  std::size_t size = 0;
  const void* want = bpf_map__initial_value(skel.maps.rodata, &size);
  if (!want || size != sizeof(Rodata)) return fail_errno(EINVAL, "read this build's .rodata");
  bool saw_rodata = false;
  for (std::uint32_t id : used) {
    if (pinned.count(id)) continue;
    const std::string what = "id " + std::to_string(id);
    UniqueFd fd(bpf_map_get_fd_by_id(id));
    if (!fd) return fail_errno(errno, "open BPF map " + what + " of a pinned program");
    auto info = map_info(fd.get(), what);
    if (!info) return fail(std::move(info.error()));
    if (std::strcmp(info->name, bpf_map__name(skel.maps.rodata)) != 0) {
      return "uses map '" + std::string(info->name) + "' (" + what + "), which is not pinned";
    }
    saw_rodata = true;
    if (info->value_size != size) return std::string("was loaded by another portcullisd build");
    Rodata have;
    std::uint32_t key = 0;
    if (bpf_map_lookup_elem(fd.get(), &key, &have) < 0) {
      return fail_errno(errno, "read .rodata of a pinned program (BPF map " + what + ")");
    }
    if (std::memcmp(&have, want, size) == 0) continue;
    Rodata w;
    std::memcpy(&w, want, size);
    char text[128];
    if (have.pcl_build_id != w.pcl_build_id) {
      std::snprintf(text, sizeof(text),
                    "was loaded by another portcullisd build (build id %016llx, this one %016llx)",
                    static_cast<unsigned long long>(have.pcl_build_id),
                    static_cast<unsigned long long>(w.pcl_build_id));
    } else if (have.pcl_l2_len != w.pcl_l2_len) {
      std::snprintf(text, sizeof(text),
                    "was loaded for an L2 header of %u bytes, the interface has %u",
                    have.pcl_l2_len, w.pcl_l2_len);
    } else {
      std::snprintf(text, sizeof(text), "has other read-only settings than this build");
    }
    return std::string(text);
  }
  if (!saw_rodata) return std::string("has no .rodata: not loaded by portcullisd");
  return std::string();
}

// The id of the program at our place on the hook; 0 if none.
Result<std::uint32_t> attached_prog_id(int ifindex, bpf_tc_attach_point point,
                                       const std::string& ifname) {
  bpf_tc_hook hook{};
  hook.sz = sizeof(hook);
  hook.ifindex = ifindex;
  hook.attach_point = point;
  bpf_tc_opts opts{};
  opts.sz = sizeof(opts);
  opts.handle = kTcHandle;
  opts.priority = kTcPriority;
  int err = bpf_tc_query(&hook, &opts);
  // ENOENT: no such filter; EINVAL: no clsact qdisc at all.
  if (err == -ENOENT || err == -EINVAL) return 0;
  if (err < 0)
    return fail(libbpf_error(-err, "query the tc filters of interface " + quote(ifname)));
  return opts.prog_id;
}

const char* hook_name(int prog) { return prog == kEgress ? "egress" : "ingress"; }

using SourceSet = std::set<std::pair<std::uint32_t, std::uint32_t>>;  // (prefixlen, addr)

std::string source_text(const std::pair<std::uint32_t, std::uint32_t>& s) {
  return from_v4_key(s.second).to_string() + "/" + std::to_string(s.first);
}

// The gateway /32 and the IPv4 operator networks. IPv6 operator networks need no entry: the
// programs drop all IPv6.
Result<SourceSet> wanted_sources(const filter::FilterSettings& settings) {
  SourceSet want;
  if (settings.gateway_address.is_v4()) {
    std::uint32_t a;
    std::memcpy(&a, settings.gateway_address.data(), 4);
    want.emplace(32, a);
  }
  for (const IpPrefix& p : settings.operator_networks) {
    if (!p.address().is_v4()) continue;
    IpPrefix m = p.masked();
    std::uint32_t a;
    std::memcpy(&a, m.address().data(), 4);
    want.emplace(static_cast<std::uint32_t>(m.cidr()), a);
  }
  if (want.size() > PCL_MAX_SOURCES) {
    return fail_errno(E2BIG, "operator networks: " + std::to_string(want.size()) +
                                 " prefixes exceed the limit of " +
                                 std::to_string(PCL_MAX_SOURCES));
  }
  return want;
}

// An LPM trie answers lookups by longest match, so its exact keys are read by iteration.
Result<SourceSet> read_sources(int fd) {
  SourceSet have;
  pcl_source_key key{}, next{};
  bool first = true;
  while (bpf_map_get_next_key(fd, first ? nullptr : &key, &next) == 0) {
    have.emplace(next.prefixlen, next.addr);
    key = next;
    first = false;
  }
  if (errno != ENOENT) return fail_errno(errno, "read BPF map 'pcl_sources'");
  return have;
}

}  // namespace

BpfFilter::BpfFilter(BpfFilterOptions options)
    : options_(std::move(options)), ifname_(options_.tunnel_ifname) {}

BpfFilter::~BpfFilter() = default;

int BpfFilter::egress_prog_fd() const { return objects_ ? objects_->prog[kEgress] : -1; }

int BpfFilter::ingress_prog_fd() const { return objects_ ? objects_->prog[kIngress] : -1; }

std::string BpfFilter::pin_dir() const {
  if (options_.pin_root.empty() || ifname_.empty()) return {};
  return options_.pin_root + "/" + ifname_;
}

Result<std::uint32_t> BpfFilter::wanted_l2_len() {
  if (options_.l2_header_len) return *options_.l2_header_len;
  return l2_header_len(ifname_);
}

// Open, set read-only config, check pins, load: the skeleton's fixed steps. Maps pinned with our
// definition are re-used (with their entries, flows and counters); others are replaced.
Result<std::unique_ptr<BpfFilter::Objects>> BpfFilter::load(std::uint32_t l2_len) {
  LibbpfMessageCapture capture;
  auto opened = open_skeleton(l2_len);
  if (!opened) return fail(std::move(opened.error()));
  auto objects = std::make_unique<Objects>();
  objects->skeleton = std::move(*opened);
  bpf_object* obj = objects->skeleton->obj;

  const std::string dir = pin_dir();
  if (!dir.empty()) {
    if (auto made = make_dirs(dir); !made) return fail(std::move(made.error()));
    for (const char* name : kMapNames) {
      bpf_map* map = bpf_object__find_map_by_name(obj, name);
      assert(map);
      std::string path = dir + "/" + name;
      UniqueFd pinned(bpf_obj_get(path.c_str()));
      if (!pinned && errno != ENOENT) {
        return fail_errno(errno, "open pinned BPF object " + quote(path) +
                                     "; remove it if it is not Portcullis's");
      }
      if (pinned) {
        auto info = map_info(pinned.get(), quote(path));
        std::string differs = info ? map_mismatch(*info, map) : info.error().message();
        if (!differs.empty()) {
          ++changing_calls_;
          if (::unlink(path.c_str()) < 0) {
            return fail_errno(errno, "remove stale BPF pin " + quote(path));
          }
          notices_.push_back("replaced stale or foreign BPF pin '" + path + "' (" + differs + ")");
        } else {
          notices_.push_back("re-used pinned BPF map '" + path + "'");
        }
      }
      // libbpf re-uses a compatible pin at this path, or creates the map and pins it there.
      if (int err = bpf_map__set_pin_path(map, path.c_str()); err < 0) {
        return fail(libbpf_error(-err, "set pin path of BPF map " + quote(path)));
      }
    }
  }

  ++changing_calls_;
  if (int err = portcullis_filter_bpf__load(objects->skeleton.get()); err < 0) {
    return fail(libbpf_error(
        -err, "load BPF programs for interface " + quote(ifname_) + " (verifier or pinned maps)"));
  }
  for (int i = 0; i < kMapCount; ++i) {
    objects->map[i] = bpf_map__fd(bpf_object__find_map_by_name(obj, kMapNames[i]));
  }
  objects->prog[kEgress] = bpf_program__fd(objects->skeleton->progs.pcl_tc_egress);
  objects->prog[kIngress] = bpf_program__fd(objects->skeleton->progs.pcl_tc_ingress);
  for (int p = 0; p < kProgCount; ++p) {
    auto info = prog_info(objects->prog[p], nullptr, kProgNames[p]);
    if (!info) return fail(std::move(info.error()));
    objects->prog_id[p] = info->id;
  }
  objects->l2_len = l2_len;
  return objects;
}

// Takes over what a previous process left under pin_dir() when it is exactly what this process
// would have built: maps with our definitions, programs whose .rodata is ours (build id and L2
// header length) and that use only the pinned maps, and (when attaching) those very programs
// on the interface's egress and ingress. Only reads; returns why not, or empty when adopted.
Result<std::string> BpfFilter::adopt(const std::string& ifname) {
  ifname_ = ifname;
  const std::string dir = pin_dir();
  if (dir.empty()) return std::string("nothing is pinned");
  if (options_.attach && ::if_nametoindex(ifname.c_str()) == 0) {
    return "interface " + quote(ifname) + " not found";
  }
  auto l2_len = wanted_l2_len();
  if (!l2_len) return fail(std::move(l2_len.error()));

  LibbpfMessageCapture capture;
  auto skel = open_skeleton(*l2_len);
  if (!skel) return fail(std::move(skel.error()));
  auto objects = std::make_unique<Objects>();
  std::set<std::uint32_t> pinned_maps;
  for (int i = 0; i < kMapCount; ++i) {
    std::string path = dir + "/" + kMapNames[i];
    UniqueFd fd(bpf_obj_get(path.c_str()));
    if (!fd) {
      if (errno == ENOENT) return "no pin " + quote(path);
      return fail_errno(errno, "open pinned BPF map " + quote(path));
    }
    auto info = map_info(fd.get(), quote(path));
    if (!info) return fail(std::move(info.error()));
    std::string differs =
        map_mismatch(*info, bpf_object__find_map_by_name((*skel)->obj, kMapNames[i]));
    if (!differs.empty()) return "pinned map " + quote(path) + " " + differs;
    pinned_maps.insert(info->id);
    objects->map[i] = fd.get();
    objects->adopted.push_back(std::move(fd));
  }
  for (int p = 0; p < kProgCount; ++p) {
    std::string path = dir + "/" + kProgNames[p];
    UniqueFd fd(bpf_obj_get(path.c_str()));
    if (!fd) {
      if (errno == ENOENT) return "no pin " + quote(path);
      return fail_errno(errno, "open pinned BPF program " + quote(path));
    }
    std::vector<std::uint32_t> used;
    auto info = prog_info(fd.get(), &used, quote(path));
    if (!info) return fail(std::move(info.error()));
    if (info->type != BPF_PROG_TYPE_SCHED_CLS || std::strcmp(info->name, kProgNames[p]) != 0) {
      return "pin " + quote(path) + " is not program " + kProgNames[p];
    }
    auto differs = program_mismatch(used, pinned_maps, **skel);
    if (!differs)
      return fail(std::move(differs.error()).wrap("check pinned program " + quote(path)));
    if (!differs->empty()) return std::string(kProgNames[p]) + " " + *differs;
    objects->prog[p] = fd.get();
    objects->prog_id[p] = info->id;
    objects->adopted.push_back(std::move(fd));
  }
  objects->l2_len = *l2_len;
  if (options_.attach) {
    auto attached = attachment_mismatch(*objects);
    if (!attached) return fail(std::move(attached.error()));
    if (!attached->empty()) return *attached;
  }
  objects_ = std::move(objects);
  notices_.push_back("adopted the BPF filter pinned at '" + dir + "': programs current" +
                     (options_.attach ? " and attached" : "") + ", maps re-used, nothing changed");
  return std::string();
}

// read(), apply() and read_counters() work on what this object loaded, else on what it can adopt.
Status BpfFilter::hold(const std::string& doing) {
  if (objects_) return {};
  if (ifname_.empty()) return fail_errno(ENOENT, doing + ": not loaded; build() it first");
  auto why = adopt(ifname_);
  if (!why) return fail(std::move(why.error()).wrap(doing));
  if (!why->empty()) {
    return fail_errno(ENOENT, doing + ": no current BPF filter on interface " + quote(ifname_) +
                                  " (" + *why + "); build() installs it");
  }
  return {};
}

// Empty if the interface runs exactly `objects`' programs at our place on both hooks.
Result<std::string> BpfFilter::attachment_mismatch(const Objects& objects) {
  LibbpfMessageCapture capture;
  int index = static_cast<int>(::if_nametoindex(ifname_.c_str()));
  if (index == 0) return "interface " + quote(ifname_) + " not found";
  ifindex_ = index;
  for (int p = 0; p < kProgCount; ++p) {
    auto id = attached_prog_id(index, p == kEgress ? BPF_TC_EGRESS : BPF_TC_INGRESS, ifname_);
    if (!id) return fail(std::move(id.error()));
    if (*id == 0) {
      return std::string(kProgNames[p]) + " not attached to " + quote(ifname_) + " " + hook_name(p);
    }
    if (*id != objects.prog_id[p]) {
      return quote(ifname_) + " " + hook_name(p) + " runs program id " + std::to_string(*id) +
             ", not " + kProgNames[p] + " id " + std::to_string(objects.prog_id[p]);
    }
  }
  return std::string();
}

Status BpfFilter::attach(const Objects& objects) {
  LibbpfMessageCapture capture;
  ifindex_ = static_cast<int>(::if_nametoindex(ifname_.c_str()));
  if (ifindex_ == 0) return fail_errno(errno, "find tunnel interface " + quote(ifname_));

  bpf_tc_hook hook{};
  hook.sz = sizeof(hook);
  hook.ifindex = ifindex_;
  hook.attach_point = BPF_TC_INGRESS;
  // An existing clsact qdisc (another tool's, or ours from before a restart) is accepted; we
  // remove only one we created, so other filters on it keep working.
  int err = bpf_tc_hook_create(&hook);
  if (err < 0 && err != -EEXIST) {
    return fail(libbpf_error(-err, "create clsact qdisc on interface " + quote(ifname_)));
  }
  if (err == 0) {
    ++changing_calls_;
    created_clsact_ = true;
  }
  for (int p = 0; p < kProgCount; ++p) {
    hook.attach_point = p == kEgress ? BPF_TC_EGRESS : BPF_TC_INGRESS;
    bpf_tc_opts opts{};
    opts.sz = sizeof(opts);
    opts.prog_fd = objects.prog[p];
    opts.handle = kTcHandle;
    opts.priority = kTcPriority;
    // Replaces our previous program in one step: no moment without a filter.
    opts.flags = BPF_TC_F_REPLACE;
    ++changing_calls_;
    if (int e = bpf_tc_attach(&hook, &opts); e < 0) {
      return fail(libbpf_error(
          -e, std::string("attach ") + kProgNames[p] + " to interface " + quote(ifname_)));
    }
  }
  return {};
}

// The programs' pins say which programs are ours and current (adopt()); they are replaced
// after the programs were attached, so they always name what runs.
Status BpfFilter::pin_programs(const Objects& objects) {
  const std::string dir = pin_dir();
  if (dir.empty()) return {};
  for (int p = 0; p < kProgCount; ++p) {
    std::string path = dir + "/" + kProgNames[p];
    ++changing_calls_;
    if (::unlink(path.c_str()) < 0 && errno != ENOENT) {
      return fail_errno(errno, "remove old program pin " + quote(path));
    }
    ++changing_calls_;
    if (bpf_obj_pin(objects.prog[p], path.c_str()) < 0) {
      return fail_errno(errno, "pin BPF program at " + quote(path));
    }
  }
  return {};
}

Result<std::string> BpfFilter::sources_mismatch(const filter::FilterSettings& settings) {
  auto want = wanted_sources(settings);
  if (!want) return fail(std::move(want.error()));
  auto have = read_sources(objects_->map[kSources]);
  if (!have) return fail(std::move(have.error()));
  for (const auto& s : *want) {
    if (!have->count(s)) return "source " + source_text(s) + " missing from 'pcl_sources'";
  }
  for (const auto& s : *have) {
    if (!want->count(s)) return "source " + source_text(s) + " in 'pcl_sources' is not wanted";
  }
  return std::string();
}

// Writes only the differences.
Status BpfFilter::set_sources(const filter::FilterSettings& settings) {
  auto want = wanted_sources(settings);
  if (!want) return fail(std::move(want.error()));
  const int fd = objects_->map[kSources];
  auto have = read_sources(fd);
  if (!have) return fail(std::move(have.error()));
  std::uint8_t one = 1;
  for (const auto& s : *want) {
    if (have->count(s)) continue;
    pcl_source_key k{s.first, s.second};
    ++changing_calls_;
    if (bpf_map_update_elem(fd, &k, &one, BPF_ANY) < 0) {
      return fail_errno(errno, "add source " + source_text(s) + " to BPF map 'pcl_sources'");
    }
  }
  for (const auto& s : *have) {
    if (want->count(s)) continue;
    pcl_source_key k{s.first, s.second};
    ++changing_calls_;
    if (bpf_map_delete_elem(fd, &k) < 0 && errno != ENOENT) {
      return fail_errno(errno, "remove source " + source_text(s) + " from BPF map 'pcl_sources'");
    }
  }
  return {};
}

Status BpfFilter::build(const filter::FilterSettings& settings,
                        const filter::FilterContents& contents) {
  for (const auto& a : contents.agents) {
    if (auto k = v4_key(a.address, "agent"); !k) return fail(std::move(k.error()));
  }
  for (const auto& e : contents.allowed) {
    if (auto k = v4_key(e.agent, "allowed agent"); !k) return fail(std::move(k.error()));
  }
  if (objects_ && settings.tunnel_ifname != ifname_) {
    return fail_invalid("BPF filter is built for interface " + quote(ifname_) + ", not " +
                        quote(settings.tunnel_ifname) + "; remove() it first");
  }
  auto failed = [](Error e) { return fail(std::move(e).wrap("build BPF filter")); };

  if (!objects_) {
    notices_.clear();
    auto why = adopt(settings.tunnel_ifname);
    if (!why) return failed(std::move(why.error()));
    const std::string dir = pin_dir();
    if (!why->empty() && !dir.empty() && ::access(dir.c_str(), F_OK) == 0) {
      notices_.push_back("replacing the BPF filter pinned at '" + dir + "': " + *why);
    }
  }
  auto l2_len = wanted_l2_len();
  if (!l2_len) return failed(std::move(l2_len.error()));
  if (objects_ && objects_->l2_len != *l2_len) {
    notices_.push_back("reloading the BPF programs: they were loaded for an L2 header of " +
                       std::to_string(objects_->l2_len) + " bytes, " + quote(ifname_) + " has " +
                       std::to_string(*l2_len));
    objects_.reset();
  }
  bool attach_needed = false;
  bool loaded_now = false;
  if (!objects_) {
    auto loaded = load(*l2_len);
    if (!loaded) return failed(std::move(loaded.error()));
    objects_ = std::move(*loaded);
    loaded_now = true;
    attach_needed = options_.attach;
  } else if (options_.attach) {
    auto attached = attachment_mismatch(*objects_);
    if (!attached) return failed(std::move(attached.error()));
    if (!attached->empty()) {
      notices_.push_back("re-attaching the BPF programs: " + *attached);
      attach_needed = true;
    }
  }

  // The maps get their contents before new programs are attached: fresh maps never enforce
  // an empty policy, not even for a moment.
  if (auto s = set_sources(settings); !s) return failed(std::move(s.error()));
  auto have = read_contents();
  if (!have) return failed(std::move(have.error()));
  auto delta = filter::diff_contents(contents, *have);
  // Device ids are not identity; refresh them on surviving agents too.
  std::set<filter::AgentEntry> added(delta.add_agents.begin(), delta.add_agents.end());
  for (const auto& a : contents.agents) {
    auto it = std::find(have->agents.begin(), have->agents.end(), a);
    if (it != have->agents.end() && it->device != a.device && !added.count(a)) {
      delta.add_agents.push_back(a);
      added.insert(a);
    }
  }
  if (auto s = apply(delta); !s) return failed(std::move(s.error()));

  if (attach_needed) {
    if (auto s = attach(*objects_); !s) return failed(std::move(s.error()));
  }
  if (loaded_now) {
    if (auto s = pin_programs(*objects_); !s) return failed(std::move(s.error()));
  }
  return {};
}

Result<BpfCheck> BpfFilter::check(const filter::FilterSettings& settings,
                                  const filter::FilterContents& contents) {
  BpfCheck c;
  auto rebuild = [&c](std::string why) {
    c.rebuild = true;
    c.why = std::move(why);
    return c;
  };
  auto failed = [](Error e) { return fail(std::move(e).wrap("check BPF filter")); };
  if (objects_ && settings.tunnel_ifname != ifname_) {
    return rebuild("built for interface " + quote(ifname_));
  }
  if (!objects_) {
    notices_.clear();
    auto why = adopt(settings.tunnel_ifname);
    if (!why) return failed(std::move(why.error()));
    if (!why->empty()) return rebuild(*why);
  } else {
    auto l2_len = wanted_l2_len();
    if (!l2_len) return failed(std::move(l2_len.error()));
    if (*l2_len != objects_->l2_len) {
      return rebuild("programs loaded for an L2 header of " + std::to_string(objects_->l2_len) +
                     " bytes, " + quote(ifname_) + " has " + std::to_string(*l2_len));
    }
    if (options_.attach) {
      auto attached = attachment_mismatch(*objects_);
      if (!attached) return failed(std::move(attached.error()));
      if (!attached->empty()) return rebuild(*attached);
    }
  }
  auto sources = sources_mismatch(settings);
  if (!sources) return failed(std::move(sources.error()));
  if (!sources->empty()) return rebuild(*sources);
  auto have = read_contents();
  if (!have) return failed(std::move(have.error()));
  c.elements = filter::diff_contents(contents, *have);
  return c;
}

Result<filter::FilterContents> BpfFilter::read() {
  const std::string doing = "read BPF filter";
  if (auto held = hold(doing); !held) return fail(std::move(held.error()));
  if (options_.attach) {
    auto attached = attachment_mismatch(*objects_);
    if (!attached) return fail(std::move(attached.error()).wrap(doing));
    if (!attached->empty()) {
      return fail_errno(ENOENT, doing + ": " + *attached + "; build() attaches it");
    }
  }
  return read_contents();
}

Result<filter::FilterContents> BpfFilter::read_contents() {
  filter::FilterContents out;
  auto agents =
      dump_map<std::uint32_t>(objects_->map[kAgents], sizeof(pcl_agent_value), "pcl_agents");
  if (!agents) return fail(std::move(agents.error()));
  std::map<std::uint32_t, std::string> devices;
  for (const auto& [addr, bytes] : *agents) {
    pcl_agent_value v;
    std::memcpy(&v, bytes.data(), sizeof(v));
    v.device[sizeof(v.device) - 1] = '\0';
    devices[addr] = v.device;
    out.agents.push_back({from_v4_key(addr), v.device});
  }
  auto ports =
      dump_map<pcl_port_key>(objects_->map[kAgentPorts], sizeof(pcl_port_value), "pcl_agent_ports");
  if (!ports) return fail(std::move(ports.error()));
  for (const auto& [k, bytes] : *ports) {
    filter::AllowEntry e;
    e.agent = from_v4_key(k.agent);
    e.protocol = static_cast<filter::Protocol>(k.proto);
    e.port = k.port;
    if (auto it = devices.find(k.agent); it != devices.end()) e.device = it->second;
    out.allowed.push_back(std::move(e));
  }
  std::sort(out.agents.begin(), out.agents.end());
  std::sort(out.allowed.begin(), out.allowed.end());
  return out;
}

Status BpfFilter::apply(const filter::FilterDelta& delta) {
  if (auto held = hold("apply BPF filter change"); !held) return held;
  for (const auto* list : {&delta.add_agents, &delta.remove_agents}) {
    for (const auto& a : *list) {
      if (auto k = v4_key(a.address, "agent"); !k) return fail(std::move(k.error()));
    }
  }
  for (const auto* list : {&delta.add_allowed, &delta.remove_allowed}) {
    for (const auto& e : *list) {
      if (auto k = v4_key(e.agent, "allowed agent"); !k) return fail(std::move(k.error()));
      if (e.protocol != filter::Protocol::kTcp && e.protocol != filter::Protocol::kUdp) {
        return fail_invalid("allowed entry " + describe(e) + " has an unknown protocol");
      }
    }
  }

  const int agents_fd = objects_->map[kAgents];
  const int ports_fd = objects_->map[kAgentPorts];
  // Each step's undo, run in reverse if a later step fails, so the change is all or nothing
  // (flows already cut stay cut).
  std::vector<std::function<void()>> undo;
  auto roll_back = [&](Error e) {
    for (auto it = undo.rbegin(); it != undo.rend(); ++it) (*it)();
    return fail(std::move(e));
  };
  // Puts back what the map held at `key` before.
  auto remember = [&](int fd, const void* key, std::size_t key_size, std::size_t value_size) {
    std::vector<std::uint8_t> k(static_cast<const std::uint8_t*>(key),
                                static_cast<const std::uint8_t*>(key) + key_size);
    std::vector<std::uint8_t> old(value_size);
    bool existed = bpf_map_lookup_elem(fd, k.data(), old.data()) == 0;
    undo.push_back([this, fd, k, old, existed] {
      ++changing_calls_;
      if (existed) {
        bpf_map_update_elem(fd, k.data(), old.data(), BPF_ANY);
      } else {
        bpf_map_delete_elem(fd, k.data());
      }
    });
  };

  // Order: agents before their ports on add, ports before their agents on removal.
  for (const auto& a : delta.add_agents) {
    std::uint32_t key = *v4_key(a.address, "agent");
    pcl_agent_value value = agent_value(a.device);
    remember(agents_fd, &key, sizeof(key), sizeof(value));
    ++changing_calls_;
    if (bpf_map_update_elem(agents_fd, &key, &value, BPF_ANY) < 0) {
      return roll_back(Error::from_errno(errno, "add agent " + a.address.to_string() + " (device " +
                                                    quote(a.device) + ") to BPF map 'pcl_agents'"));
    }
  }
  for (const auto& e : delta.add_allowed) {
    pcl_port_key key = port_key(*v4_key(e.agent, "agent"), e);
    pcl_port_value value{};
    remember(ports_fd, &key, sizeof(key), sizeof(value));
    ++changing_calls_;
    if (bpf_map_update_elem(ports_fd, &key, &value, BPF_ANY) < 0) {
      return roll_back(Error::from_errno(
          errno, "add " + describe(e) + " to BPF map 'pcl_agent_ports'" +
                     (errno == E2BIG ? "; the map is full (" + std::to_string(PCL_MAX_AGENT_PORTS) +
                                           " entries)"
                                     : "")));
    }
  }
  for (const auto& e : delta.remove_allowed) {
    pcl_port_key key = port_key(*v4_key(e.agent, "agent"), e);
    remember(ports_fd, &key, sizeof(key), sizeof(pcl_port_value));
    ++changing_calls_;
    if (bpf_map_delete_elem(ports_fd, &key) < 0 && errno != ENOENT) {
      return roll_back(
          Error::from_errno(errno, "remove " + describe(e) + " from BPF map 'pcl_agent_ports'"));
    }
  }
  for (const auto& a : delta.remove_agents) {
    std::uint32_t key = *v4_key(a.address, "agent");
    remember(agents_fd, &key, sizeof(key), sizeof(pcl_agent_value));
    ++changing_calls_;
    if (bpf_map_delete_elem(agents_fd, &key) < 0 && errno != ENOENT) {
      return roll_back(Error::from_errno(
          errno, "remove agent " + a.address.to_string() + " from BPF map 'pcl_agents'"));
    }
  }

  if (delta.remove_allowed.empty() && delta.remove_agents.empty()) return {};
  std::vector<filter::AllowEntry> cut = delta.remove_allowed;
  for (const auto& a : delta.remove_agents) {
    filter::AllowEntry whole_agent;  // port 0: every flow of this agent
    whole_agent.agent = a.address;
    cut.push_back(whole_agent);
  }
  return cut_flows(cut);
}

// The programs already refuse these flows (they re-check pcl_agent_ports and pcl_agents on
// every packet); deleting them keeps a re-added port from reviving an old connection.
Status BpfFilter::cut_flows(const std::vector<filter::AllowEntry>& removed) {
  std::set<std::tuple<std::uint32_t, std::uint8_t, std::uint16_t>> entries;
  std::set<std::uint32_t> agents;
  for (const auto& e : removed) {
    std::uint32_t a = *v4_key(e.agent, "agent");
    if (e.port == 0) {
      agents.insert(a);
    } else {
      entries.emplace(a, static_cast<std::uint8_t>(e.protocol), e.port);
    }
  }
  const int fd = objects_->map[kFlows];
  auto flows = dump_map<pcl_flow_key>(fd, sizeof(pcl_flow_value), "pcl_flows");
  if (!flows) return fail(std::move(flows.error()).wrap("cut flows of removed entries"));
  for (const auto& [k, value] : *flows) {
    if (!agents.count(k.agent) && !entries.count({k.agent, k.proto, k.agent_port})) continue;
    ++changing_calls_;
    if (bpf_map_delete_elem(fd, &k) < 0 && errno != ENOENT) {
      return fail_errno(errno, "cut flow of agent " + from_v4_key(k.agent).to_string() + " port " +
                                   std::to_string(k.agent_port) + " in BPF map 'pcl_flows'");
    }
  }
  return {};
}

Result<std::size_t> BpfFilter::flow_count() {
  if (auto held = hold("count BPF flows"); !held) return fail(std::move(held.error()));
  auto flows = dump_map<pcl_flow_key>(objects_->map[kFlows], sizeof(pcl_flow_value), "pcl_flows");
  if (!flows) return fail(std::move(flows.error()));
  return flows->size();
}

Result<std::vector<PortCounters>> BpfFilter::read_counters() {
  if (auto held = hold("read BPF counters"); !held) return fail(std::move(held.error()));
  int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0) return fail_errno(-cpus, "read BPF counters: count possible CPUs");

  // Per-CPU values are 8-byte aligned; pcl_counter_value already is.
  static_assert(sizeof(pcl_counter_value) % 8 == 0);
  auto rows = dump_map<pcl_counter_key>(objects_->map[kCounters], sizeof(pcl_counter_value) * cpus,
                                        "pcl_counters");
  if (!rows) return fail(std::move(rows.error()));
  std::vector<PortCounters> out;
  if (rows->empty()) return out;
  // Device names come from the agents map alone (a scrape at 10,000 devices must not read the
  // 50,000 allowed triples too).
  auto agents =
      dump_map<std::uint32_t>(objects_->map[kAgents], sizeof(pcl_agent_value), "pcl_agents");
  if (!agents) return fail(std::move(agents.error()));
  std::unordered_map<std::uint32_t, std::string> devices;
  devices.reserve(agents->size());
  for (const auto& [addr, bytes] : *agents) {
    pcl_agent_value v;
    std::memcpy(&v, bytes.data(), sizeof(v));
    v.device[sizeof(v.device) - 1] = '\0';
    devices.emplace(addr, v.device);
  }
  out.reserve(rows->size());
  for (const auto& [k, bytes] : *rows) {
    PortCounters c;
    if (k.agent != 0) c.agent = from_v4_key(k.agent);
    if (auto it = devices.find(k.agent); it != devices.end()) c.device = it->second;
    c.protocol = k.proto;
    c.port = k.port;
    c.direction = static_cast<Direction>(k.direction);
    c.reason = static_cast<VerdictReason>(k.reason);
    for (int cpu = 0; cpu < cpus; ++cpu) {
      pcl_counter_value v;
      std::memcpy(&v, bytes.data() + cpu * sizeof(v), sizeof(v));
      c.packets += v.packets;
      c.bytes += v.bytes;
    }
    out.push_back(std::move(c));
  }
  std::sort(out.begin(), out.end(), [](const PortCounters& a, const PortCounters& b) {
    return std::tie(a.agent, a.protocol, a.port, a.direction, a.reason) <
           std::tie(b.agent, b.protocol, b.port, b.direction, b.reason);
  });
  return out;
}

Status BpfFilter::remove() {
  if (!objects_ && ifname_.empty()) return {};
  LibbpfMessageCapture capture;
  Status result;
  auto keep_first_error = [&](Error e) {
    if (result) result = fail(std::move(e));
  };
  // By name, not by what this object holds: a previous process's filter goes too.
  const int index = static_cast<int>(::if_nametoindex(ifname_.c_str()));
  if (options_.attach && index != 0) {
    bpf_tc_hook hook{};
    hook.sz = sizeof(hook);
    hook.ifindex = index;
    for (auto point : {BPF_TC_EGRESS, BPF_TC_INGRESS}) {
      hook.attach_point = point;
      bpf_tc_opts opts{};
      opts.sz = sizeof(opts);
      opts.handle = kTcHandle;
      opts.priority = kTcPriority;
      ++changing_calls_;
      int err = bpf_tc_detach(&hook, &opts);
      // ENOENT/ENODEV: the filter or the whole interface is already gone; EINVAL: no clsact.
      if (err < 0 && err != -ENOENT && err != -ENODEV && err != -EINVAL) {
        keep_first_error(libbpf_error(-err, "detach BPF filter from interface " + quote(ifname_)));
      }
    }
    // A clsact qdisc we found in place may carry other tools' filters: leave it. One we made
    // after a restart is not known as ours and stays too (empty clsact is harmless).
    if (created_clsact_) {
      hook.attach_point = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS);
      ++changing_calls_;
      int err = bpf_tc_hook_destroy(&hook);
      if (err < 0 && err != -ENOENT && err != -ENODEV && err != -EINVAL) {
        keep_first_error(libbpf_error(-err, "remove clsact qdisc from " + quote(ifname_)));
      }
    }
  }
  const std::string dir = pin_dir();
  if (!dir.empty()) {
    std::vector<const char*> names(std::begin(kMapNames), std::end(kMapNames));
    names.insert(names.end(), std::begin(kProgNames), std::end(kProgNames));
    for (const char* name : names) {
      std::string path = dir + "/" + name;
      ++changing_calls_;
      if (::unlink(path.c_str()) < 0 && errno != ENOENT) {
        keep_first_error(Error::from_errno(errno, "unpin BPF object " + quote(path)));
      }
    }
    if (::rmdir(dir.c_str()) < 0 && errno != ENOENT) {
      keep_first_error(Error::from_errno(errno, "remove BPF pin directory " + quote(dir)));
    }
  }
  objects_.reset();
  ifindex_ = 0;
  created_clsact_ = false;
  return result;
}

}  // namespace portcullis::bpf
