// Aligned host allocations and strided-to-contiguous copies. No Python headers here.
#pragma once
#include <cstddef>
#include <cstdint>

namespace unirt {

// Owns one aligned block of host memory. Movable, not copyable.
class AlignedBuffer {
 public:
  AlignedBuffer(std::size_t nbytes, std::size_t alignment);
  ~AlignedBuffer();
  AlignedBuffer(AlignedBuffer&& other) noexcept;
  AlignedBuffer& operator=(AlignedBuffer&& other) noexcept;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;

  void* data() const { return data_; }
  std::size_t size() const { return size_; }
  std::size_t alignment() const { return alignment_; }

 private:
  void* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t alignment_ = 0;
};

// Copies an N-d strided array into contiguous C-order memory at dst.
// shape/strides are in elements' units of bytes (strides) as numpy reports them; strides may be negative.
void strided_copy(const char* src, char* dst, const std::int64_t* shape, const std::int64_t* strides,
                  int ndim, std::size_t itemsize);

}  // namespace unirt
