#pragma once
// Key files: one base64 key and a newline, mode 0600, as `wg genkey > file` with umask 077.

#include <string>

#include "dataplane/base/key.h"
#include "dataplane/base/result.h"

namespace portcullis {

// Reads the private key file, or creates it (mode 0600, O_EXCL) with a new key if it does not
// exist. A key file that group or others can read is refused (EPERM, "chmod 600 it").
Result<SecretKey> load_or_create_private_key(const std::string& path);

}  // namespace portcullis
