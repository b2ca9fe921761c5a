// output_file.hpp: a file written under a temporary name and renamed into place only when complete.
#pragma once

#include <lowbit/core/error.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace lowbit::io {

/// Whether `a` and `b` name the same existing file (same device and inode, so hard links and
/// symbolic links to one file count as the same). False when either does not exist.
inline bool same_file(const std::string& a, const std::string& b) {
  struct stat sa {}, sb {};
  if (::stat(a.c_str(), &sa) != 0 || ::stat(b.c_str(), &sb) != 0) return false;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/// The folder part of `path` ("." for a bare file name, "/" for a file in the root).
inline std::string parent_folder(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

/// A file written under a temporary name beside `path` (`<path>.tmp-<pid>-<n>`) and renamed onto
/// `path` only by commit(). Until then an existing file at `path` is untouched; destruction without
/// commit(), and any failed write, remove the temporary, so `path` never holds a partial file.
class OutputFile {
 public:
  /// Checks `path` (not empty, not a folder, not the same file as any of `inputs`, its folder
  /// exists and is writable) and creates the temporary; throws lowbit::Error naming the problem.
  explicit OutputFile(std::string path, const std::vector<std::string>& inputs = {})
      : path_(std::move(path)) {
    using lowbit::detail::fail;
    using lowbit::detail::require;
    require(!path_.empty(), "path: expected a file name, got an empty path");
    struct stat st {};
    if (::stat(path_.c_str(), &st) == 0)
      require(!S_ISDIR(st.st_mode), "path: '{}' is a folder, expected a file name", path_);
    for (const auto& in : inputs)
      require(!same_file(path_, in), "path: '{}' is the same file as the input '{}'", path_, in);
    const std::string folder = parent_folder(path_);
    if (::stat(folder.c_str(), &st) != 0) fail("path: folder '{}' does not exist", folder);
    require(S_ISDIR(st.st_mode), "path: '{}' is not a folder", folder);
    require(::access(folder.c_str(), W_OK | X_OK) == 0, "path: folder '{}' is not writable: {}",
            folder, std::strerror(errno));
    static std::atomic<unsigned> counter{0};
    for (int attempt = 0; attempt < 100 && fd_ < 0; ++attempt) {
      temp_ = path_ + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
      fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
      if (fd_ < 0 && errno != EEXIST)
        fail("path: cannot create '{}' in folder '{}': {}", temp_, folder, std::strerror(errno));
    }
    require(fd_ >= 0, "path: cannot find a free temporary name beside '{}'", path_);
  }
  ~OutputFile() { abort(); }
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  const std::string& path() const { return path_; }
  /// The temporary's name (empty once committed or aborted).
  const std::string& temp_path() const { return temp_; }
  /// Bytes written so far.
  uint64_t size() const { return size_; }
  bool is_open() const { return fd_ >= 0; }

  /// Appends `n` bytes; on failure removes the temporary and throws.
  void write(const void* data, size_t n) {
    lowbit::detail::require(fd_ >= 0, "path: '{}' is no longer open for writing", path_);
    const auto* p = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        const int err = w < 0 ? errno : EIO;
        abort();
        lowbit::detail::fail("path: writing '{}' failed after {} bytes: {}", path_, size_,
                             std::strerror(err));
      }
      p += w;
      n -= size_t(w);
      size_ += uint64_t(w);
    }
  }
  /// Appends `n` zero bytes.
  void write_zeros(size_t n) {
    static constexpr char zeros[4096] = {};
    while (n > 0) {
      const size_t k = n < sizeof(zeros) ? n : sizeof(zeros);
      write(zeros, k);
      n -= k;
    }
  }

  /// Flushes the data to disk and renames the temporary onto `path`; on failure removes the
  /// temporary and throws.
  void commit() {
    lowbit::detail::require(fd_ >= 0, "path: '{}' is no longer open for writing", path_);
    if (::fsync(fd_) != 0) fail_and_abort("flushing");
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) fail_and_abort("closing");
    if (::rename(temp_.c_str(), path_.c_str()) != 0) fail_and_abort("renaming the temporary onto");
    temp_.clear();
  }

  /// Closes and removes the temporary (nothing happens once committed).
  void abort() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    if (!temp_.empty()) ::unlink(temp_.c_str());
    temp_.clear();
  }

 private:
  [[noreturn]] void fail_and_abort(const char* what) {
    const int err = errno;
    abort();
    lowbit::detail::fail("path: {} '{}' failed: {}", what, path_, std::strerror(err));
  }

  std::string path_, temp_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

}  // namespace lowbit::io
