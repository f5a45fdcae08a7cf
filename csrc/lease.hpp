// Leased host memory and where it comes from. No Python headers here.
#pragma once
#include <cstddef>
#include <memory>

namespace unirt {

// A span of host memory lent by a pool or an arena; destroying the lease gives the memory back.
class Lease {
 public:
  virtual ~Lease() = default;
  virtual void* data() const noexcept = 0;
  virtual std::size_t size() const noexcept = 0;  // bytes requested (the span may be larger)
};

// Where pools and arenas get their memory: plain aligned host memory, or page-locked (pinned) memory.
class HostAllocator {
 public:
  virtual ~HostAllocator() = default;
  // Returns memory aligned to `alignment` (a power of two); throws std::bad_alloc or std::runtime_error.
  virtual void* allocate(std::size_t nbytes, std::size_t alignment) = 0;
  virtual void deallocate(void* p, std::size_t nbytes) noexcept = 0;
  virtual const char* kind() const noexcept = 0;  // "host" or "pinned"
};

// Aligned memory from the C library (posix_memalign / _aligned_malloc).
std::shared_ptr<HostAllocator> aligned_host_allocator();

inline std::size_t round_up(std::size_t n, std::size_t multiple) { return (n + multiple - 1) / multiple * multiple; }

}  // namespace unirt
