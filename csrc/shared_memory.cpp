#include "shared_memory.hpp"

#include <cerrno>
#include <cstring>
#include <utility>

#if defined(_WIN32)
#define UNIRT_NO_POSIX_SHM 1
#else
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

namespace unirt {
namespace {

[[noreturn]] void fail(int code, const std::string& what) {
  throw SystemError(code, what + ": " + std::strerror(code));
}

void check_name(const std::string& name) {
  if (name.size() < 2 || name[0] != '/' || name.find('/', 1) != std::string::npos || name.size() > 255 ||
      name.find('\0') != std::string::npos) {
    throw std::invalid_argument("shared-memory name must be '/' followed by 1 to 254 characters without '/', got '" +
                                name + "'");
  }
}

}  // namespace

#ifdef UNIRT_NO_POSIX_SHM
std::unique_ptr<SharedMemory> SharedMemory::create(const std::string&, std::size_t) {
  throw std::runtime_error("named shared memory needs POSIX shm (Linux, macOS)");
}
std::unique_ptr<SharedMemory> SharedMemory::attach(const std::string&, bool) {
  throw std::runtime_error("named shared memory needs POSIX shm (Linux, macOS)");
}
bool SharedMemory::unlink_name(const std::string&) { return false; }
SharedMemory::~SharedMemory() = default;
void SharedMemory::unlink() {}
#else

std::unique_ptr<SharedMemory> SharedMemory::create(const std::string& name, std::size_t nbytes) {
  check_name(name);
  if (nbytes == 0) throw std::invalid_argument("a shared-memory segment needs at least one byte");
  const int fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0) fail(errno, "shm_open(" + name + ")");
  auto cleanup = [&](int code, const std::string& what) {
    close(fd);
    shm_unlink(name.c_str());
    fail(code, what);
  };
  if (ftruncate(fd, static_cast<off_t>(nbytes)) != 0) cleanup(errno, "ftruncate(" + name + ")");
#if defined(__linux__)
  // Reserve the pages now: tmpfs would otherwise SIGBUS on the first write that finds /dev/shm full.
  const int err = posix_fallocate(fd, 0, static_cast<off_t>(nbytes));
  if (err != 0 && err != EOPNOTSUPP && err != EINVAL) {
    cleanup(err, "reserving " + std::to_string(nbytes) + " bytes for " + name +
                     " in /dev/shm (a container's default /dev/shm is 64 MiB; docker run --shm-size raises it)");
  }
#endif
  void* p = mmap(nullptr, nbytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) cleanup(errno, "mmap(" + name + ")");
  close(fd);
  return std::unique_ptr<SharedMemory>(new SharedMemory(name, static_cast<char*>(p), nbytes, true, true, static_cast<long>(getpid())));
}

std::unique_ptr<SharedMemory> SharedMemory::attach(const std::string& name, bool writable) {
  check_name(name);
  const int fd = shm_open(name.c_str(), writable ? O_RDWR : O_RDONLY, 0);
  if (fd < 0) fail(errno, "shm_open(" + name + ")");
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int code = errno;
    close(fd);
    fail(code, "fstat(" + name + ")");
  }
  const std::size_t nbytes = static_cast<std::size_t>(st.st_size);
  if (nbytes == 0) {
    close(fd);
    throw SystemError(EINVAL, "shared-memory segment " + name + " is empty");
  }
  void* p = mmap(nullptr, nbytes, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
  const int code = errno;
  close(fd);
  if (p == MAP_FAILED) fail(code, "mmap(" + name + ")");
  return std::unique_ptr<SharedMemory>(new SharedMemory(name, static_cast<char*>(p), nbytes, false, writable, static_cast<long>(getpid())));
}

bool SharedMemory::unlink_name(const std::string& name) {
  check_name(name);
  if (shm_unlink(name.c_str()) == 0) return true;
  if (errno == ENOENT) return false;
  fail(errno, "shm_unlink(" + name + ")");
}

SharedMemory::~SharedMemory() {
  if (owner_ && !unlinked_ && creator_ == static_cast<long>(getpid())) shm_unlink(name_.c_str());
  munmap(data_, size_);
}

void SharedMemory::unlink() {
  if (!owner_ || unlinked_ || creator_ != static_cast<long>(getpid())) return;
  unlinked_ = true;
  if (shm_unlink(name_.c_str()) != 0 && errno != ENOENT) fail(errno, "shm_unlink(" + name_ + ")");
}

#endif

}  // namespace unirt
