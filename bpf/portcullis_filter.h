/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The one header shared by the eBPF filter (bpf/portcullis_filter.bpf.c) and its C++ loader
 * (dataplane/bpf/bpf_filter.cpp): map keys and values, capacities, verdict reasons.
 *
 * Byte order: addresses are in network order (as in the packet and in IpAddress::data()),
 * ports are in host order. Every key spells out its padding so both sides hash the same bytes.
 */
#ifndef PORTCULLIS_FILTER_H
#define PORTCULLIS_FILTER_H

#include <linux/types.h>

/* Capacities. */
#define PCL_MAX_AGENTS 10000
#define PCL_MAX_PORTS_PER_AGENT 64
#define PCL_MAX_AGENT_PORTS (PCL_MAX_AGENTS * PCL_MAX_PORTS_PER_AGENT)
/* Operator networks plus the gateway's own address. */
#define PCL_MAX_SOURCES 1024
/* Live allowed flows; least recently used ones are evicted first. */
#define PCL_MAX_FLOWS 131072
/* Counter keys; least recently hit ones are evicted first (memory: entries x 16 B x CPUs). */
#define PCL_MAX_COUNTERS 65536
/* Device id stored with each agent, NUL-terminated; longer ids are cut. */
#define PCL_DEVICE_ID_LEN 64

/* A flow not seen for this long no longer lets replies in (as conntrack's defaults). */
#define PCL_FLOW_TIMEOUT_TCP_NS (5ULL * 24 * 3600 * 1000000000ULL)
#define PCL_FLOW_TIMEOUT_UDP_NS (180ULL * 1000000000ULL)
/* The flow's last-seen time is rewritten at most this often, to keep the fast path read-only. */
#define PCL_FLOW_REFRESH_NS (1000000000ULL)

/*
 * Why a packet got its verdict. Numbered once, here; values are stored in pcl_counters keys
 * and pinned maps outlive the daemon, so never renumber, only append. When this changes,
 * update dataplane/bpf/bpf_filter.cpp (verdict_reason_name) and tests/bpf/bpf_prog_test.cpp.
 */
enum pcl_reason {
	PCL_REASON_ALLOWED = 0,
	PCL_REASON_PORT_NOT_ALLOWED = 1,   /* toward an agent, (agent, proto, port) not allowed */
	PCL_REASON_AGENT_INITIATED = 2,	   /* from an agent, not the reply of an allowed flow */
	PCL_REASON_AGENT_TO_AGENT = 3,	   /* from an agent to another agent */
	PCL_REASON_NO_FLOW = 4,		   /* from an allowed agent port, but no live flow */
	PCL_REASON_SOURCE_NOT_ALLOWED = 5, /* toward an agent, source not an operator network */
	PCL_REASON_NOT_IPV4 = 6,	   /* IPv6 or anything else: agents are IPv4 only */
	PCL_REASON_FRAGMENT = 7,	   /* IPv4 fragment: ports cannot be checked */
	PCL_REASON_MALFORMED = 8,	   /* truncated or invalid IPv4/TCP/UDP header */
	PCL_REASON_PROTOCOL = 9,	   /* neither TCP nor UDP (ICMP included) */
	PCL_REASON_UNKNOWN_AGENT = 10,	   /* to or from an address not in pcl_agents (revoked) */
	PCL_REASON_MAX,
};

/* Direction as seen from the agent. */
enum pcl_direction {
	PCL_DIR_TO_AGENT = 0,	/* tc egress of the tunnel interface */
	PCL_DIR_FROM_AGENT = 1, /* tc ingress of the tunnel interface */
};

/* pcl_agent_ports key: an allowed (agent, protocol, port). */
struct pcl_port_key {
	__u32 agent; /* IPv4, network order */
	__u16 port;  /* host order */
	__u8 proto;  /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
};

/* pcl_agent_ports value. */
struct pcl_port_value {
	__u32 flags; /* reserved, 0 */
};

/* pcl_agents value (key: agent IPv4, network order). */
struct pcl_agent_value {
	char device[PCL_DEVICE_ID_LEN];
};

/* pcl_sources key: an LPM trie prefix. */
struct pcl_source_key {
	__u32 prefixlen;
	__u32 addr; /* IPv4, network order */
};

/* pcl_flows key: one allowed flow, from the agent's side. */
struct pcl_flow_key {
	__u32 agent;	  /* IPv4, network order */
	__u32 peer;	  /* the operator or gateway address, network order */
	__u16 agent_port; /* host order */
	__u16 peer_port;  /* host order */
	__u8 proto;
	__u8 pad[3];
};

/* pcl_flows value. */
struct pcl_flow_value {
	__u64 last_seen_ns; /* bpf_ktime_get_ns() */
};

/*
 * pcl_counters key. port: toward an agent, the destination port; from an agent, its source port
 * when the packet answers a flow or comes from an allowed (agent, proto, port), else the
 * destination port (what the agent tried to reach). Packets that do not parse count under
 * agent 0, proto 0, port 0.
 */
struct pcl_counter_key {
	__u32 agent; /* IPv4, network order */
	__u16 port;  /* host order */
	__u8 proto;
	__u8 direction; /* enum pcl_direction */
	__u8 reason;	/* enum pcl_reason */
	__u8 pad[3];
};

/* pcl_counters value, per CPU. */
struct pcl_counter_value {
	__u64 packets;
	__u64 bytes; /* skb->len: from the IP header on the tunnel device */
};

#endif /* PORTCULLIS_FILTER_H */
