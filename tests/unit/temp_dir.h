#pragma once
// A temporary directory for unit tests that read and write files (configurations, key
// files, SQLite stores), removed with everything in it when the test ends.
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

namespace coap2mqtt::unit {

class TempDir {
 public:
  // mkdtemp under the system's temporary directory: <prefix>-XXXXXX.
  explicit TempDir(const std::string& prefix = "c2m-unit") {
    std::string tmpl = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  // The path of `rel` in the directory (the directory itself, with a trailing '/', for "").
  std::string path(const std::string& rel = "") const { return (path_ / rel).string(); }

  // Writes `content` to `rel` (making its folders) with `mode` (only its owner may read it
  // by default, as secret files should be); returns its path.
  std::string write(const std::string& rel, const std::string& content, mode_t mode = 0600) const {
    const std::filesystem::path p = path_ / rel;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << content;
    ::chmod(p.c_str(), mode);
    return p.string();
  }

 private:
  std::filesystem::path path_;
};

}  // namespace coap2mqtt::unit
