// A file name in the system's temporary directory, removed when the test is done with it.
#pragma once

#include <filesystem>    // std::filesystem::path, temp_directory_path, remove
#include <random>        // std::mt19937_64, std::random_device
#include <string>        // std::string, std::to_string
#include <system_error>  // std::error_code

namespace cospec::testing {

/// A unique path (the file itself is not created); the destructor removes whatever is there.
class temporary_file {
 public:
  explicit temporary_file(const std::string& stem) {
    static std::mt19937_64 names{std::random_device{}()};
    path_ = std::filesystem::temp_directory_path() / ("cospec_" + stem + "_" + std::to_string(names()) + ".bin");
  }
  temporary_file(const temporary_file&) = delete;
  temporary_file& operator=(const temporary_file&) = delete;
  ~temporary_file() {
    std::error_code ignored;  // a test that never wrote the file leaves nothing to remove
    std::filesystem::remove(path_, ignored);
  }
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace cospec::testing
