#include "host_memory.hpp"

#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <utility>
#include <vector>

#if defined(_WIN32)
#include <malloc.h>
#endif

namespace unirt {

AlignedBuffer::AlignedBuffer(std::size_t nbytes, std::size_t alignment) : size_(nbytes), alignment_(alignment) {
  if (alignment < sizeof(void*) || (alignment & (alignment - 1)) != 0) {
    throw std::invalid_argument("alignment must be a power of two and at least the pointer size");
  }
  // Never hand out a null pointer, even for empty tensors: engines treat null as "unbound".
  const std::size_t request = nbytes == 0 ? alignment : (nbytes + alignment - 1) / alignment * alignment;
#if defined(_WIN32)
  data_ = _aligned_malloc(request, alignment);
#else
  if (posix_memalign(&data_, alignment, request) != 0) data_ = nullptr;
#endif
  if (data_ == nullptr) throw std::bad_alloc();
}

AlignedBuffer::~AlignedBuffer() {
#if defined(_WIN32)
  _aligned_free(data_);
#else
  std::free(data_);
#endif
}

AlignedBuffer::AlignedBuffer(AlignedBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(other.size_), alignment_(other.alignment_) {}

AlignedBuffer& AlignedBuffer::operator=(AlignedBuffer&& other) noexcept {
  if (this != &other) {
    this->~AlignedBuffer();
    data_ = std::exchange(other.data_, nullptr);
    size_ = other.size_;
    alignment_ = other.alignment_;
  }
  return *this;
}

void strided_copy(const char* src, char* dst, const std::int64_t* shape, const std::int64_t* strides, int ndim,
                  std::size_t itemsize) {
  std::int64_t total = 1;
  for (int d = 0; d < ndim; ++d) total *= shape[d];
  if (total == 0) return;
  if (ndim == 0) {
    std::memcpy(dst, src, itemsize);
    return;
  }
  // Walk every index but the last with an odometer; copy the innermost run in one go when it is dense.
  const int last = ndim - 1;
  const std::int64_t inner = shape[last];
  const std::int64_t inner_stride = strides[last];
  const bool dense_inner = inner_stride == static_cast<std::int64_t>(itemsize);
  const std::size_t run_bytes = static_cast<std::size_t>(inner) * itemsize;
  std::vector<std::int64_t> index(static_cast<std::size_t>(ndim), 0);
  const std::int64_t outer = total / inner;
  const char* row = src;
  for (std::int64_t o = 0; o < outer; ++o) {
    if (dense_inner) {
      std::memcpy(dst, row, run_bytes);
      dst += run_bytes;
    } else {
      const char* p = row;
      for (std::int64_t i = 0; i < inner; ++i, p += inner_stride, dst += itemsize) std::memcpy(dst, p, itemsize);
    }
    for (int d = last - 1; d >= 0; --d) {
      row += strides[d];
      if (++index[d] < shape[d]) break;
      row -= strides[d] * shape[d];
      index[d] = 0;
    }
  }
}

}  // namespace unirt
