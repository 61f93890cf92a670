// SPDX-License-Identifier: GPL-2.0
/*
 * Portcullis packet filter: tc programs on the tunnel interface (clsact egress and ingress).
 *
 *   pcl_tc_egress:  packets going INTO the tunnel, toward an agent (operator -> agent requests).
 *                   Allowed only from an operator source to an allowed (agent, proto, port)
 *                   of a known agent;
 *                   each allowed packet records or refreshes its flow in pcl_flows.
 *   pcl_tc_ingress: packets coming OUT of the tunnel, from an agent. Allowed only as the reply of
 *                   a live flow whose (agent, proto, port) is still allowed. Agent to agent and
 *                   agent-initiated traffic is dropped.
 *
 * WireGuard and wireguard-go's TUN are L3 devices: no Ethernet header, data starts at the IP
 * header and skb->protocol tells the family. pcl_l2_len is 0 there; the loader sets 14 for
 * Ethernet devices (veth, and BPF_PROG_TEST_RUN, which always feeds an Ethernet frame).
 *
 * Dropped without a look at ports, and counted: IPv6 and other non-IPv4 (agents are IPv4
 * only), IPv4 fragments (ports unknown), truncated or invalid headers, protocols other than
 * TCP and UDP (ICMP included).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "portcullis_filter.h"

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

/* Set by the loader before load: bytes before the IP header (0 on L3 devices). */
const volatile __u32 pcl_l2_len = 0;
/*
 * Set by the loader before load: a hash of this object as embedded in portcullisd. Unused here;
 * it sits in the programs' .rodata so that a restarted daemon can tell whether the programs
 * attached to the interface are the ones it would load itself (dataplane/bpf/bpf_filter.cpp).
 */
const volatile __u64 pcl_build_id = 0;

/* Allowed triples: key (agent, proto, port) -> value flags. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PCL_MAX_AGENT_PORTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pcl_port_key);
	__type(value, struct pcl_port_value);
} pcl_agent_ports SEC(".maps");

/* Known agents: key agent IPv4 -> value device id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PCL_MAX_AGENTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct pcl_agent_value);
} pcl_agents SEC(".maps");

/* Sources that may reach agents: key IPv4 prefix (operator networks, gateway /32) -> value 1. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PCL_MAX_SOURCES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pcl_source_key);
	__type(value, __u8);
} pcl_sources SEC(".maps");

/* Allowed flows: key (agent, agent port, peer, peer port, proto) -> value last-seen time. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PCL_MAX_FLOWS);
	__type(key, struct pcl_flow_key);
	__type(value, struct pcl_flow_value);
} pcl_flows SEC(".maps");

/* Counters: key (agent, proto, port, direction, reason) -> value packets and bytes, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, PCL_MAX_COUNTERS);
	__type(key, struct pcl_counter_key);
	__type(value, struct pcl_counter_value);
} pcl_counters SEC(".maps");

struct packet {
	__u32 saddr;
	__u32 daddr;
	__u16 sport; /* host order */
	__u16 dport;
	__u8 proto;
};

static __always_inline int count(struct __sk_buff *skb, __u32 agent, __u8 proto, __u16 port,
				 __u8 direction, __u8 reason)
{
	struct pcl_counter_key key = {
	    .agent = agent,
	    .port = port,
	    .proto = proto,
	    .direction = direction,
	    .reason = reason,
	};
	struct pcl_counter_value *value;

	value = bpf_map_lookup_elem(&pcl_counters, &key);
	if (!value) {
		struct pcl_counter_value zero = {};

		bpf_map_update_elem(&pcl_counters, &key, &zero, BPF_NOEXIST);
		value = bpf_map_lookup_elem(&pcl_counters, &key);
	}
	/* Per-CPU value: plain adds are safe. A full map only loses the count, not the verdict. */
	if (value) {
		value->packets += 1;
		value->bytes += skb->len;
	}
	return reason == PCL_REASON_ALLOWED ? TC_ACT_OK : TC_ACT_SHOT;
}

/* Makes the first len bytes direct-readable; false if the packet is shorter. */
static __always_inline int pull(struct __sk_buff *skb, __u32 len)
{
	if ((long)skb->data + len <= (long)skb->data_end)
		return 1;
	return bpf_skb_pull_data(skb, len) == 0;
}

/* Fills p; returns PCL_REASON_ALLOWED when p holds a TCP or UDP IPv4 packet's 5-tuple. */
static __always_inline int parse(struct __sk_buff *skb, struct packet *p)
{
	__u32 l2 = pcl_l2_len;
	struct iphdr *ip;
	__be16 *ports;
	__u32 ihl, l4_len;
	void *data, *end;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return PCL_REASON_NOT_IPV4;
	if (l2 > ETH_HLEN || !pull(skb, l2 + sizeof(*ip)))
		return PCL_REASON_MALFORMED;

	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	ip = data + l2;
	if ((void *)(ip + 1) > end)
		return PCL_REASON_MALFORMED;
	if (ip->version != 4 || ip->ihl < 5)
		return PCL_REASON_MALFORMED;
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return PCL_REASON_FRAGMENT;
	p->saddr = ip->saddr;
	p->daddr = ip->daddr;
	p->proto = ip->protocol;
	if (p->proto == IPPROTO_TCP)
		l4_len = 20;
	else if (p->proto == IPPROTO_UDP)
		l4_len = 8;
	else
		return PCL_REASON_PROTOCOL;
	ihl = ip->ihl * 4;
	if (bpf_ntohs(ip->tot_len) < ihl + l4_len)
		return PCL_REASON_MALFORMED;

	if (!pull(skb, l2 + ihl + l4_len))
		return PCL_REASON_MALFORMED;
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	ports = data + l2 + ihl;
	if ((void *)ports + l4_len > end || (void *)(ports + 2) > end)
		return PCL_REASON_MALFORMED;
	p->sport = bpf_ntohs(ports[0]);
	p->dport = bpf_ntohs(ports[1]);
	return PCL_REASON_ALLOWED;
}

static __always_inline __u64 flow_timeout(__u8 proto)
{
	return proto == IPPROTO_TCP ? PCL_FLOW_TIMEOUT_TCP_NS : PCL_FLOW_TIMEOUT_UDP_NS;
}

/*
 * Nanoseconds since the flow was last seen, 0 if it was stamped "after" now: another CPU may
 * have stamped it, and bpf_ktime_get_ns() of two CPUs can disagree by a little. An unsigned
 * difference would then be huge and expire a live flow.
 */
static __always_inline __u64 flow_age(__u64 now, const struct pcl_flow_value *flow)
{
	__u64 last = flow->last_seen_ns;

	return now > last ? now - last : 0;
}

SEC("tc")
int pcl_tc_egress(struct __sk_buff *skb)
{
	struct packet p = {};
	struct pcl_port_key port_key = {};
	struct pcl_source_key source = {};
	struct pcl_flow_key flow_key = {};
	struct pcl_flow_value *flow;
	__u64 now;
	int reason;

	reason = parse(skb, &p);
	if (reason != PCL_REASON_ALLOWED)
		return count(skb, 0, 0, 0, PCL_DIR_TO_AGENT, reason);

	if (bpf_map_lookup_elem(&pcl_agents, &p.saddr))
		return count(skb, p.daddr, p.proto, p.dport, PCL_DIR_TO_AGENT,
			     PCL_REASON_AGENT_TO_AGENT);

	if (!bpf_map_lookup_elem(&pcl_agents, &p.daddr))
		return count(skb, p.daddr, p.proto, p.dport, PCL_DIR_TO_AGENT,
			     PCL_REASON_UNKNOWN_AGENT);

	source.prefixlen = 32;
	source.addr = p.saddr;
	if (!bpf_map_lookup_elem(&pcl_sources, &source))
		return count(skb, p.daddr, p.proto, p.dport, PCL_DIR_TO_AGENT,
			     PCL_REASON_SOURCE_NOT_ALLOWED);

	port_key.agent = p.daddr;
	port_key.port = p.dport;
	port_key.proto = p.proto;
	if (!bpf_map_lookup_elem(&pcl_agent_ports, &port_key))
		return count(skb, p.daddr, p.proto, p.dport, PCL_DIR_TO_AGENT,
			     PCL_REASON_PORT_NOT_ALLOWED);

	flow_key.agent = p.daddr;
	flow_key.peer = p.saddr;
	flow_key.agent_port = p.dport;
	flow_key.peer_port = p.sport;
	flow_key.proto = p.proto;
	now = bpf_ktime_get_ns();
	flow = bpf_map_lookup_elem(&pcl_flows, &flow_key);
	if (!flow) {
		struct pcl_flow_value fresh = {.last_seen_ns = now};

		bpf_map_update_elem(&pcl_flows, &flow_key, &fresh, BPF_ANY);
	} else if (flow_age(now, flow) > PCL_FLOW_REFRESH_NS) {
		flow->last_seen_ns = now;
	}
	return count(skb, p.daddr, p.proto, p.dport, PCL_DIR_TO_AGENT, PCL_REASON_ALLOWED);
}

SEC("tc")
int pcl_tc_ingress(struct __sk_buff *skb)
{
	struct packet p = {};
	struct pcl_port_key port_key = {};
	struct pcl_flow_key flow_key = {};
	struct pcl_flow_value *flow;
	__u64 now;
	int reason;

	reason = parse(skb, &p);
	if (reason != PCL_REASON_ALLOWED)
		return count(skb, 0, 0, 0, PCL_DIR_FROM_AGENT, reason);

	if (bpf_map_lookup_elem(&pcl_agents, &p.daddr))
		return count(skb, p.saddr, p.proto, p.dport, PCL_DIR_FROM_AGENT,
			     PCL_REASON_AGENT_TO_AGENT);

	if (!bpf_map_lookup_elem(&pcl_agents, &p.saddr))
		return count(skb, p.saddr, p.proto, p.dport, PCL_DIR_FROM_AGENT,
			     PCL_REASON_UNKNOWN_AGENT);

	port_key.agent = p.saddr;
	port_key.port = p.sport;
	port_key.proto = p.proto;
	flow_key.agent = p.saddr;
	flow_key.peer = p.daddr;
	flow_key.agent_port = p.sport;
	flow_key.peer_port = p.dport;
	flow_key.proto = p.proto;
	flow = bpf_map_lookup_elem(&pcl_flows, &flow_key);
	if (!flow) {
		/* Not a reply: count it under the port the agent tried to reach. */
		if (!bpf_map_lookup_elem(&pcl_agent_ports, &port_key))
			return count(skb, p.saddr, p.proto, p.dport, PCL_DIR_FROM_AGENT,
				     PCL_REASON_AGENT_INITIATED);
		return count(skb, p.saddr, p.proto, p.sport, PCL_DIR_FROM_AGENT,
			     PCL_REASON_NO_FLOW);
	}
	/* The port was removed while its flow lived: cut it here too. */
	if (!bpf_map_lookup_elem(&pcl_agent_ports, &port_key))
		return count(skb, p.saddr, p.proto, p.sport, PCL_DIR_FROM_AGENT,
			     PCL_REASON_PORT_NOT_ALLOWED);
	now = bpf_ktime_get_ns();
	if (flow_age(now, flow) > flow_timeout(p.proto))
		return count(skb, p.saddr, p.proto, p.sport, PCL_DIR_FROM_AGENT,
			     PCL_REASON_NO_FLOW);
	if (flow_age(now, flow) > PCL_FLOW_REFRESH_NS)
		flow->last_seen_ns = now;
	return count(skb, p.saddr, p.proto, p.sport, PCL_DIR_FROM_AGENT, PCL_REASON_ALLOWED);
}

char _license[] SEC("license") = "GPL";
