#pragma once
// A fresh directory for one test, removed with everything in it when the object goes away (also
// when the test failed: gtest ends a failed test by returning, so destructors run).
//
//   TempDir dir("pcl-api");               // $TMPDIR/pcl-api-XXXXXX, usually /tmp
//   auto key = dir.path() / "signing.key";
//   auto db = dir.file("portcullis.db");   // the same as a std::string

#include <stdlib.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>

namespace portcullis::testing {

class TempDir {
 public:
  explicit TempDir(std::string_view prefix) {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / (std::string(prefix) + "-XXXXXX")).string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      std::perror(("mkdtemp " + tmpl).c_str());
      std::abort();  // every test behind it would write into a directory that is not there
    }
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // The path of `name` inside, as a string: dir.file("portcullis.db").
  std::string file(std::string_view name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace portcullis::testing
