#include "dataplane/nftables/nft_batch.h"

// glibc's netinet/in.h must come before linux/netfilter.h (which pulls linux/in.h).
#include <netinet/in.h>

#include <linux/netfilter.h>

#include <gtest/gtest.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>

#include <vector>

namespace portcullis::nftables {
namespace {

std::vector<const nlmsghdr*> all_messages(const NftBatch& b) {
  std::vector<const nlmsghdr*> out;
  int len = static_cast<int>(b.bytes().size());
  for (auto* nlh = reinterpret_cast<const nlmsghdr*>(b.bytes().data()); mnl_nlmsg_ok(nlh, len);
       nlh = mnl_nlmsg_next(nlh, &len)) {
    out.push_back(nlh);
  }
  EXPECT_EQ(len, 0) << "trailing bytes after the last message";
  return out;
}

TEST(NftBatch, BeginCommandsEndWithConsecutiveSeqsAndAcks) {
  NftBatch b(100);
  b.add(NFT_MSG_NEWTABLE, NFPROTO_INET, NLM_F_CREATE, "add table", [](nlmsghdr*) {});
  b.add(NFT_MSG_DELTABLE, NFPROTO_INET, 0, "delete table", [](nlmsghdr*) {});
  b.finish();

  auto msgs = all_messages(b);
  ASSERT_EQ(msgs.size(), 4u);
  EXPECT_EQ(msgs[0]->nlmsg_type, NFNL_MSG_BATCH_BEGIN);
  EXPECT_EQ(msgs[3]->nlmsg_type, NFNL_MSG_BATCH_END);
  EXPECT_EQ(msgs[1]->nlmsg_type, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE);
  EXPECT_EQ(msgs[2]->nlmsg_type, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELTABLE);
  for (std::size_t i = 0; i < msgs.size(); ++i) EXPECT_EQ(msgs[i]->nlmsg_seq, 100 + i);
  EXPECT_TRUE(msgs[1]->nlmsg_flags & NLM_F_ACK);
  EXPECT_TRUE(msgs[1]->nlmsg_flags & NLM_F_CREATE);
  EXPECT_TRUE(msgs[2]->nlmsg_flags & NLM_F_ACK);
  EXPECT_EQ(b.command_count(), 2u);
  ASSERT_EQ(b.commands().size(), 2u);
  EXPECT_EQ(b.commands()[1], msgs[2]);
}

TEST(NftBatch, DescribeNamesCommandAndPartByOffset) {
  NftBatch b(7);
  b.add(NFT_MSG_NEWSETELEM, NFPROTO_INET, 0, "add 2 element(s) to set 'agents'", [](nlmsghdr*) {});
  b.name_parts({{40, "add element 10.0.0.1"}, {60, "add element 10.0.0.2"}});
  b.finish();
  EXPECT_EQ(b.describe(8), "add 2 element(s) to set 'agents'");
  EXPECT_EQ(b.describe(8, 44), "add 2 element(s) to set 'agents': add element 10.0.0.1");
  EXPECT_EQ(b.describe(8, 60), "add 2 element(s) to set 'agents': add element 10.0.0.2");
  EXPECT_EQ(b.describe(8, 20), "add 2 element(s) to set 'agents'");
  EXPECT_EQ(b.describe(7), "");  // the batch begin is not a command
  EXPECT_EQ(b.describe(99), "");
}

}  // namespace
}  // namespace portcullis::nftables
