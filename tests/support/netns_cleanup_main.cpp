// pcl_netns_cleanup: removes what crashed netns tests left behind (see netns.h). Run by ctest as
// the setup and cleanup fixture of the `netns` tests; safe to run by hand at any time.
#include <cstdio>

#include "tests/support/netns.h"

int main() {
  int n = portcullis::testing::remove_stale_netns();
  std::printf("removed %d stale namespace(s)/socket(s)\n", n);
  return 0;
}
