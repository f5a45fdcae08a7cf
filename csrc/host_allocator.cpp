#include <cstdlib>
#include <new>

#include "lease.hpp"

#if defined(_WIN32)
#include <malloc.h>
#endif

namespace unirt {
namespace {

class AlignedHostAllocator final : public HostAllocator {
 public:
  void* allocate(std::size_t nbytes, std::size_t alignment) override {
    const std::size_t request = round_up(nbytes == 0 ? alignment : nbytes, alignment);
    void* p = nullptr;
#if defined(_WIN32)
    p = _aligned_malloc(request, alignment);
#else
    if (posix_memalign(&p, alignment, request) != 0) p = nullptr;
#endif
    if (p == nullptr) throw std::bad_alloc();
    return p;
  }
  void deallocate(void* p, std::size_t) noexcept override {
#if defined(_WIN32)
    _aligned_free(p);
#else
    std::free(p);
#endif
  }
  const char* kind() const noexcept override { return "host"; }
};

}  // namespace

std::shared_ptr<HostAllocator> aligned_host_allocator() {
  static const std::shared_ptr<HostAllocator> instance = std::make_shared<AlignedHostAllocator>();
  return instance;
}

}  // namespace unirt
