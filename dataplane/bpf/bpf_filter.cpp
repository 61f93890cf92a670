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
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <tuple>

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

struct BpfFilter::Skeleton {
  portcullis_filter_bpf* obj = nullptr;
  ~Skeleton() { portcullis_filter_bpf__destroy(obj); }
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

}  // namespace

BpfFilter::BpfFilter(BpfFilterOptions options) : options_(std::move(options)) {}

BpfFilter::~BpfFilter() = default;

int BpfFilter::egress_prog_fd() const {
  return skel_ ? bpf_program__fd(skel_->obj->progs.pcl_tc_egress) : -1;
}

int BpfFilter::ingress_prog_fd() const {
  return skel_ ? bpf_program__fd(skel_->obj->progs.pcl_tc_ingress) : -1;
}

std::string BpfFilter::pin_dir() const {
  if (options_.pin_root.empty()) return {};
  return options_.pin_root + "/" + ifname_;
}

// Open, set read-only config, check pins, load: the skeleton's fixed steps.
Status BpfFilter::load(const std::string& ifname) {
  ifname_ = ifname;
  std::uint32_t l2_len = 0;
  if (options_.l2_header_len) {
    l2_len = *options_.l2_header_len;
  } else {
    auto detected = l2_header_len(ifname);
    if (!detected) return fail(std::move(detected.error()));
    l2_len = *detected;
  }

  LibbpfMessageCapture capture;

  auto skel = std::make_unique<Skeleton>();
  skel->obj = portcullis_filter_bpf__open();
  if (!skel->obj) return fail(libbpf_error(errno, "open BPF object portcullis_filter"));
  skel->obj->rodata->pcl_l2_len = l2_len;

  const std::string dir = pin_dir();
  if (!dir.empty()) {
    if (auto made = make_dirs(dir); !made) return made;
    bpf_map* map;
    bpf_object__for_each_map(map, skel->obj->obj) {
      if (bpf_map__type(map) == BPF_MAP_TYPE_ARRAY) continue;  // .rodata: never pinned
      std::string path = dir + "/" + bpf_map__name(map);
      UniqueFd pinned(bpf_obj_get(path.c_str()));
      if (!pinned && errno != ENOENT) {
        return fail_errno(errno, "open pinned BPF object " + quote(path) +
                                     "; remove it if it is not Portcullis's");
      }
      if (pinned) {
        bpf_map_info info{};
        std::uint32_t len = sizeof(info);
        int err = bpf_obj_get_info_by_fd(pinned.get(), &info, &len);
        bool same = err == 0 && std::strcmp(info.name, bpf_map__name(map)) == 0 &&
                    info.type == bpf_map__type(map) && info.key_size == bpf_map__key_size(map) &&
                    info.value_size == bpf_map__value_size(map) &&
                    info.max_entries == bpf_map__max_entries(map) &&
                    info.map_flags == bpf_map__map_flags(map);
        if (!same) {
          if (::unlink(path.c_str()) < 0) {
            return fail_errno(errno, "remove stale BPF pin " + quote(path));
          }
          char text[256];
          std::snprintf(text, sizeof(text),
                        "replaced stale or foreign BPF pin '%s' (had type %u key %u value %u "
                        "max %u, want type %u key %u value %u max %u)",
                        path.c_str(), info.type, info.key_size, info.value_size, info.max_entries,
                        bpf_map__type(map), bpf_map__key_size(map), bpf_map__value_size(map),
                        bpf_map__max_entries(map));
          notices_.push_back(text);
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

  if (int err = portcullis_filter_bpf__load(skel->obj); err < 0) {
    return fail(libbpf_error(
        -err, "load BPF programs for interface " + quote(ifname) + " (verifier or pinned maps)"));
  }
  skel_ = std::move(skel);
  return {};
}

Status BpfFilter::attach(const std::string& ifname) {
  LibbpfMessageCapture capture;
  ifindex_ = static_cast<int>(::if_nametoindex(ifname.c_str()));
  if (ifindex_ == 0) return fail_errno(errno, "find tunnel interface " + quote(ifname));

  bpf_tc_hook hook{};
  hook.sz = sizeof(hook);
  hook.ifindex = ifindex_;
  hook.attach_point = BPF_TC_INGRESS;
  // An existing clsact qdisc (another tool's, or ours from before a restart) is accepted; we
  // remove only one we created, so other filters on it keep working.
  int err = bpf_tc_hook_create(&hook);
  if (err < 0 && err != -EEXIST) {
    return fail(libbpf_error(-err, "create clsact qdisc on interface " + quote(ifname)));
  }
  if (err == 0) created_clsact_ = true;

  struct Hook {
    bpf_tc_attach_point point;
    bpf_program* prog;
  };
  for (const Hook& h : {Hook{BPF_TC_EGRESS, skel_->obj->progs.pcl_tc_egress},
                        Hook{BPF_TC_INGRESS, skel_->obj->progs.pcl_tc_ingress}}) {
    hook.attach_point = h.point;
    bpf_tc_opts opts{};
    opts.sz = sizeof(opts);
    opts.prog_fd = bpf_program__fd(h.prog);
    opts.handle = kTcHandle;
    opts.priority = kTcPriority;
    // Replaces our previous program in one step: no moment without a filter.
    opts.flags = BPF_TC_F_REPLACE;
    if (int e = bpf_tc_attach(&hook, &opts); e < 0) {
      return fail(libbpf_error(-e, std::string("attach ") + bpf_program__name(h.prog) +
                                       " to interface " + quote(ifname)));
    }
  }
  return {};
}

// The programs' pins are for bpftool and for looking; after a restart the new programs
// replace them (what enforces is the tc filter, which holds its own reference).
Status BpfFilter::pin_programs() {
  const std::string dir = pin_dir();
  if (dir.empty()) return {};
  for (bpf_program* prog : {skel_->obj->progs.pcl_tc_egress, skel_->obj->progs.pcl_tc_ingress}) {
    std::string path = dir + "/" + bpf_program__name(prog);
    if (::unlink(path.c_str()) < 0 && errno != ENOENT) {
      return fail_errno(errno, "remove old program pin " + quote(path));
    }
    if (int e = bpf_program__pin(prog, path.c_str()); e < 0) {
      return fail(libbpf_error(-e, "pin BPF program at " + quote(path)));
    }
  }
  return {};
}

Status BpfFilter::set_sources(const filter::FilterSettings& settings) {
  std::set<std::pair<std::uint32_t, std::uint32_t>> want;  // (prefixlen, addr)
  if (settings.gateway_address.is_v4()) {
    std::uint32_t a;
    std::memcpy(&a, settings.gateway_address.data(), 4);
    want.emplace(32, a);
  }
  // IPv6 operator networks need no entry: the programs drop all IPv6.
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
  int fd = bpf_map__fd(skel_->obj->maps.pcl_sources);
  std::vector<pcl_source_key> stale;
  pcl_source_key key{}, next{};
  bool first = true;
  while (bpf_map_get_next_key(fd, first ? nullptr : &key, &next) == 0) {
    if (!want.count({next.prefixlen, next.addr})) stale.push_back(next);
    key = next;
    first = false;
  }
  std::uint8_t one = 1;
  for (auto [len, addr] : want) {
    pcl_source_key k{len, addr};
    if (bpf_map_update_elem(fd, &k, &one, BPF_ANY) < 0) {
      return fail_errno(errno, "add source " + from_v4_key(addr).to_string() + "/" +
                                   std::to_string(len) + " to BPF map 'pcl_sources'");
    }
  }
  for (const auto& k : stale) {
    if (bpf_map_delete_elem(fd, &k) < 0 && errno != ENOENT) {
      return fail_errno(errno, "remove source from BPF map 'pcl_sources'");
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
  if (skel_ && settings.tunnel_ifname != ifname_) {
    return fail_invalid("BPF filter is built for interface " + quote(ifname_) + ", not " +
                        quote(settings.tunnel_ifname) + "; remove() it first");
  }
  if (!skel_) {
    notices_.clear();
    if (auto loaded = load(settings.tunnel_ifname); !loaded) {
      return fail(std::move(loaded.error()).wrap("build BPF filter"));
    }
    if (auto pinned = pin_programs(); !pinned) {
      return fail(std::move(pinned.error()).wrap("build BPF filter"));
    }
  }
  if (options_.attach) {
    if (auto attached = attach(settings.tunnel_ifname); !attached) {
      return fail(std::move(attached.error()).wrap("build BPF filter"));
    }
  }
  if (auto s = set_sources(settings); !s)
    return fail(std::move(s.error()).wrap("build BPF filter"));

  auto have = read();
  if (!have) return fail(std::move(have.error()).wrap("build BPF filter"));
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
  if (auto s = apply(delta); !s) return fail(std::move(s.error()).wrap("build BPF filter"));
  return {};
}

Result<filter::FilterContents> BpfFilter::read() {
  if (!skel_) return fail_errno(ENOENT, "read BPF filter: not loaded; build() it first");
  filter::FilterContents out;
  auto agents = dump_map<std::uint32_t>(bpf_map__fd(skel_->obj->maps.pcl_agents),
                                        sizeof(pcl_agent_value), "pcl_agents");
  if (!agents) return fail(std::move(agents.error()));
  std::map<std::uint32_t, std::string> devices;
  for (const auto& [addr, bytes] : *agents) {
    pcl_agent_value v;
    std::memcpy(&v, bytes.data(), sizeof(v));
    v.device[sizeof(v.device) - 1] = '\0';
    devices[addr] = v.device;
    out.agents.push_back({from_v4_key(addr), v.device});
  }
  auto ports = dump_map<pcl_port_key>(bpf_map__fd(skel_->obj->maps.pcl_agent_ports),
                                      sizeof(pcl_port_value), "pcl_agent_ports");
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
  if (!skel_) return fail_errno(ENOENT, "apply BPF filter change: not loaded; build() it first");
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

  const int agents_fd = bpf_map__fd(skel_->obj->maps.pcl_agents);
  const int ports_fd = bpf_map__fd(skel_->obj->maps.pcl_agent_ports);
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
    undo.push_back([fd, k, old, existed] {
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
    if (bpf_map_update_elem(agents_fd, &key, &value, BPF_ANY) < 0) {
      return roll_back(Error::from_errno(errno, "add agent " + a.address.to_string() + " (device " +
                                                    quote(a.device) + ") to BPF map 'pcl_agents'"));
    }
  }
  for (const auto& e : delta.add_allowed) {
    pcl_port_key key = port_key(*v4_key(e.agent, "agent"), e);
    pcl_port_value value{};
    remember(ports_fd, &key, sizeof(key), sizeof(value));
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
    if (bpf_map_delete_elem(ports_fd, &key) < 0 && errno != ENOENT) {
      return roll_back(
          Error::from_errno(errno, "remove " + describe(e) + " from BPF map 'pcl_agent_ports'"));
    }
  }
  for (const auto& a : delta.remove_agents) {
    std::uint32_t key = *v4_key(a.address, "agent");
    remember(agents_fd, &key, sizeof(key), sizeof(pcl_agent_value));
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
  const int fd = bpf_map__fd(skel_->obj->maps.pcl_flows);
  auto flows = dump_map<pcl_flow_key>(fd, sizeof(pcl_flow_value), "pcl_flows");
  if (!flows) return fail(std::move(flows.error()).wrap("cut flows of removed entries"));
  for (const auto& [k, value] : *flows) {
    if (!agents.count(k.agent) && !entries.count({k.agent, k.proto, k.agent_port})) continue;
    if (bpf_map_delete_elem(fd, &k) < 0 && errno != ENOENT) {
      return fail_errno(errno, "cut flow of agent " + from_v4_key(k.agent).to_string() + " port " +
                                   std::to_string(k.agent_port) + " in BPF map 'pcl_flows'");
    }
  }
  return {};
}

Result<std::size_t> BpfFilter::flow_count() {
  if (!skel_) return fail_errno(ENOENT, "count BPF flows: not loaded");
  auto flows = dump_map<pcl_flow_key>(bpf_map__fd(skel_->obj->maps.pcl_flows),
                                      sizeof(pcl_flow_value), "pcl_flows");
  if (!flows) return fail(std::move(flows.error()));
  return flows->size();
}

Result<std::vector<PortCounters>> BpfFilter::read_counters() {
  if (!skel_) return fail_errno(ENOENT, "read BPF counters: not loaded; build() it first");
  int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0) return fail_errno(-cpus, "read BPF counters: count possible CPUs");
  auto contents = read();
  if (!contents) return fail(std::move(contents.error()));
  std::map<IpAddress, std::string> devices;
  for (const auto& a : contents->agents) devices[a.address] = a.device;

  // Per-CPU values are 8-byte aligned; pcl_counter_value already is.
  static_assert(sizeof(pcl_counter_value) % 8 == 0);
  auto rows = dump_map<pcl_counter_key>(bpf_map__fd(skel_->obj->maps.pcl_counters),
                                        sizeof(pcl_counter_value) * cpus, "pcl_counters");
  if (!rows) return fail(std::move(rows.error()));
  std::vector<PortCounters> out;
  for (const auto& [k, bytes] : *rows) {
    PortCounters c;
    if (k.agent != 0) c.agent = from_v4_key(k.agent);
    if (auto it = devices.find(c.agent); it != devices.end()) c.device = it->second;
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
  if (!skel_) return {};
  LibbpfMessageCapture capture;
  Status result;
  auto keep_first_error = [&](Error e) {
    if (result) result = fail(std::move(e));
  };
  if (options_.attach && ifindex_ != 0) {
    bpf_tc_hook hook{};
    hook.sz = sizeof(hook);
    hook.ifindex = ifindex_;
    for (auto point : {BPF_TC_EGRESS, BPF_TC_INGRESS}) {
      hook.attach_point = point;
      bpf_tc_opts opts{};
      opts.sz = sizeof(opts);
      opts.handle = kTcHandle;
      opts.priority = kTcPriority;
      int err = bpf_tc_detach(&hook, &opts);
      // ENOENT/ENODEV: the filter or the whole interface is already gone.
      if (err < 0 && err != -ENOENT && err != -ENODEV && err != -EINVAL) {
        keep_first_error(libbpf_error(-err, "detach BPF filter from interface " + quote(ifname_)));
      }
    }
    // A clsact qdisc we found in place may carry other tools' filters: leave it. One we made
    // after a restart is not known as ours and stays too (empty clsact is harmless).
    if (created_clsact_) {
      hook.attach_point = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS);
      int err = bpf_tc_hook_destroy(&hook);
      if (err < 0 && err != -ENOENT && err != -ENODEV && err != -EINVAL) {
        keep_first_error(libbpf_error(-err, "remove clsact qdisc from " + quote(ifname_)));
      }
    }
  }
  const std::string dir = pin_dir();
  if (!dir.empty()) {
    bpf_map* map;
    bpf_object__for_each_map(map, skel_->obj->obj) {
      if (!bpf_map__pin_path(map)) continue;
      if (int err = bpf_map__unpin(map, nullptr); err < 0 && err != -ENOENT) {
        keep_first_error(libbpf_error(-err, std::string("unpin BPF map ") + bpf_map__name(map)));
      }
    }
    for (bpf_program* prog : {skel_->obj->progs.pcl_tc_egress, skel_->obj->progs.pcl_tc_ingress}) {
      std::string path = dir + "/" + bpf_program__name(prog);
      if (::unlink(path.c_str()) < 0 && errno != ENOENT) {
        keep_first_error(Error::from_errno(errno, "unpin BPF program " + quote(path)));
      }
    }
    if (::rmdir(dir.c_str()) < 0 && errno != ENOENT) {
      keep_first_error(Error::from_errno(errno, "remove BPF pin directory " + quote(dir)));
    }
  }
  skel_.reset();
  ifindex_ = 0;
  created_clsact_ = false;
  return result;
}

}  // namespace portcullis::bpf
