#include "buffer_pool.hpp"

#include <algorithm>
#include <stdexcept>
#include <utility>

namespace unirt {

class BufferPool::Block final : public Lease {
 public:
  Block(std::shared_ptr<BufferPool> pool, void* data, std::size_t size, std::size_t capacity)
      : pool_(std::move(pool)), data_(data), size_(size), capacity_(capacity) {}
  ~Block() override { pool_->give_back(data_, capacity_); }
  void* data() const noexcept override { return data_; }
  std::size_t size() const noexcept override { return size_; }

 private:
  std::shared_ptr<BufferPool> pool_;
  void* data_;
  std::size_t size_;
  std::size_t capacity_;
};

BufferPool::BufferPool(std::shared_ptr<HostAllocator> allocator, std::size_t alignment, std::size_t max_cached_bytes)
    : allocator_(std::move(allocator)), alignment_(alignment), max_cached_(max_cached_bytes) {
  if (alignment < sizeof(void*) || (alignment & (alignment - 1)) != 0) {
    throw std::invalid_argument("alignment must be a power of two and at least the pointer size");
  }
}

std::shared_ptr<BufferPool> BufferPool::create(std::shared_ptr<HostAllocator> allocator, std::size_t alignment,
                                               std::size_t max_cached_bytes) {
  if (!allocator) throw std::invalid_argument("a pool needs an allocator");
  return std::shared_ptr<BufferPool>(new BufferPool(std::move(allocator), alignment, max_cached_bytes));
}

BufferPool::~BufferPool() { trim(); }

std::size_t BufferPool::size_class(std::size_t nbytes, std::size_t alignment) {
  std::size_t n = std::max<std::size_t>(nbytes, 1);
  std::size_t cls;
  if (n <= 256) {
    cls = round_up(n, 64);
  } else {
    int k = 0;  // n in (2^k, 2^(k+1)]
    for (std::size_t v = n - 1; v > 1; v >>= 1) ++k;
    const std::size_t step = (std::size_t{1} << k) / 4;
    cls = round_up(n, step);
  }
  return round_up(cls, alignment);
}

std::unique_ptr<Lease> BufferPool::acquire(std::size_t nbytes) {
  const std::size_t capacity = size_class(nbytes, alignment_);
  void* p = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = cache_.find(capacity);
    if (it != cache_.end() && !it->second.empty()) {
      p = it->second.back();
      it->second.pop_back();
      stats_.reuses++;
      stats_.blocks_cached--;
      stats_.bytes_cached -= capacity;
      stats_.blocks_live++;
      stats_.bytes_live += capacity;
      stats_.peak_bytes_live = std::max(stats_.peak_bytes_live, stats_.bytes_live);
    }
  }
  if (p == nullptr) {
    p = allocator_->allocate(capacity, alignment_);  // outside the lock: may be slow for large blocks
    std::lock_guard<std::mutex> lock(mu_);
    stats_.allocations++;
    stats_.blocks_live++;
    stats_.bytes_live += capacity;
    stats_.bytes_reserved += capacity;
    stats_.peak_bytes_live = std::max(stats_.peak_bytes_live, stats_.bytes_live);
    stats_.peak_bytes_reserved = std::max(stats_.peak_bytes_reserved, stats_.bytes_reserved);
  }
  try {
    return std::make_unique<Block>(shared_from_this(), p, nbytes, capacity);
  } catch (...) {
    give_back(p, capacity);
    throw;
  }
}

void BufferPool::give_back(void* p, std::size_t capacity) noexcept {
  bool keep = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.releases++;
    stats_.blocks_live--;
    stats_.bytes_live -= capacity;
    if (!closed_ && stats_.bytes_cached + capacity <= max_cached_) {
      try {
        cache_[capacity].push_back(p);
        keep = true;
        stats_.blocks_cached++;
        stats_.bytes_cached += capacity;
      } catch (...) {  // out of memory for the free list itself: free the block instead
      }
    }
    if (!keep) {
      stats_.frees++;
      stats_.bytes_reserved -= capacity;
    }
  }
  if (!keep) allocator_->deallocate(p, capacity);
}

PoolStats BufferPool::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

std::size_t BufferPool::trim() {
  std::unordered_map<std::size_t, std::vector<void*>> cached;
  std::size_t freed = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    cached.swap(cache_);
    freed = stats_.bytes_cached;
    for (const auto& entry : cached) stats_.frees += entry.second.size();
    stats_.bytes_reserved -= stats_.bytes_cached;
    stats_.bytes_cached = 0;
    stats_.blocks_cached = 0;
  }
  for (auto& entry : cached) {
    for (void* p : entry.second) allocator_->deallocate(p, entry.first);
  }
  return freed;
}

void BufferPool::close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
  }
  trim();
}

bool BufferPool::closed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return closed_;
}

}  // namespace unirt
