// A thread-safe pool of aligned host buffers in size classes, reused across runs. No Python headers here.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "lease.hpp"

namespace unirt {

struct PoolStats {
  std::uint64_t allocations = 0;  // blocks taken from the allocator
  std::uint64_t reuses = 0;       // acquisitions served from the cache
  std::uint64_t releases = 0;     // blocks given back by their last user
  std::uint64_t frees = 0;        // blocks handed back to the allocator
  std::size_t blocks_live = 0;
  std::size_t blocks_cached = 0;
  std::size_t bytes_live = 0;  // capacity of the blocks in use
  std::size_t peak_bytes_live = 0;
  std::size_t bytes_cached = 0;
  std::size_t bytes_reserved = 0;  // live + cached: what the pool holds from the allocator
  std::size_t peak_bytes_reserved = 0;
};

// Blocks hold a shared_ptr to their pool, so the pool's bookkeeping outlives every block it lent.
class BufferPool : public std::enable_shared_from_this<BufferPool> {
 public:
  static std::shared_ptr<BufferPool> create(std::shared_ptr<HostAllocator> allocator, std::size_t alignment,
                                            std::size_t max_cached_bytes);
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // A block of at least `nbytes` (its size class), aligned to the pool's alignment.
  std::unique_ptr<Lease> acquire(std::size_t nbytes);
  PoolStats stats() const;
  // Frees every cached block; returns the bytes freed.
  std::size_t trim();
  // Trims and stops caching: blocks given back afterwards go straight to the allocator.
  void close();
  bool closed() const;
  std::size_t alignment() const { return alignment_; }
  std::size_t max_cached_bytes() const { return max_cached_; }
  const char* kind() const { return allocator_->kind(); }

  // The capacity a request of `nbytes` gets: multiples of `alignment` up to 256 B, then four classes per
  // power of two (at most 25% slack).
  static std::size_t size_class(std::size_t nbytes, std::size_t alignment);

 private:
  class Block;
  BufferPool(std::shared_ptr<HostAllocator> allocator, std::size_t alignment, std::size_t max_cached_bytes);
  void give_back(void* p, std::size_t capacity) noexcept;

  std::shared_ptr<HostAllocator> allocator_;
  const std::size_t alignment_;
  const std::size_t max_cached_;
  mutable std::mutex mu_;
  std::unordered_map<std::size_t, std::vector<void*>> cache_;  // size class -> free blocks
  PoolStats stats_;
  bool closed_ = false;
};

}  // namespace unirt
