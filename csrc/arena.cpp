#include "arena.hpp"

#include <algorithm>
#include <iterator>
#include <stdexcept>
#include <utility>

namespace unirt {

class Arena::Piece final : public Lease {
 public:
  Piece(std::shared_ptr<Arena> arena, Chunk* chunk, std::size_t offset, std::size_t length, std::size_t size)
      : arena_(std::move(arena)), chunk_(chunk), offset_(offset), length_(length), size_(size) {}
  ~Piece() override { arena_->give_back(chunk_, offset_, length_); }
  void* data() const noexcept override { return chunk_->base + offset_; }
  std::size_t size() const noexcept override { return size_; }

 private:
  std::shared_ptr<Arena> arena_;
  Chunk* chunk_;
  std::size_t offset_;
  std::size_t length_;
  std::size_t size_;
};

Arena::Arena(std::shared_ptr<HostAllocator> allocator, std::size_t alignment)
    : allocator_(std::move(allocator)), alignment_(alignment) {
  if (alignment < sizeof(void*) || (alignment & (alignment - 1)) != 0) {
    throw std::invalid_argument("alignment must be a power of two and at least the pointer size");
  }
}

std::shared_ptr<Arena> Arena::create(std::shared_ptr<HostAllocator> allocator, std::size_t alignment,
                                     std::size_t initial_bytes) {
  if (!allocator) throw std::invalid_argument("an arena needs an allocator");
  std::shared_ptr<Arena> arena(new Arena(std::move(allocator), alignment));
  if (initial_bytes > 0) {
    std::lock_guard<std::mutex> lock(arena->mu_);
    arena->add_chunk(initial_bytes);
  }
  return arena;
}

Arena::~Arena() {
  for (auto& chunk : chunks_) allocator_->deallocate(chunk->base, chunk->size);
}

void Arena::add_chunk(std::size_t size) {
  auto chunk = std::make_unique<Chunk>();
  chunk->size = round_up(std::max(size, alignment_), kGranularity);
  chunk->base = static_cast<char*>(allocator_->allocate(chunk->size, alignment_));
  chunk->free.emplace(0, chunk->size);
  stats_.chunk_allocations++;
  stats_.bytes_reserved += chunk->size;
  stats_.peak_bytes_reserved = std::max(stats_.peak_bytes_reserved, stats_.bytes_reserved);
  chunks_.push_back(std::move(chunk));
  std::stable_sort(chunks_.begin(), chunks_.end(), [](const auto& a, const auto& b) { return a->size > b->size; });
  stats_.chunks = chunks_.size();
}

void Arena::grow(std::size_t length) {
  // Empty chunks are too small for this request: let them go before taking a bigger one.
  for (auto it = chunks_.begin(); it != chunks_.end();) {
    if ((*it)->live == 0) {
      allocator_->deallocate((*it)->base, (*it)->size);
      stats_.bytes_reserved -= (*it)->size;
      stats_.chunk_frees++;
      it = chunks_.erase(it);
    } else {
      ++it;
    }
  }
  stats_.chunks = chunks_.size();
  add_chunk(stats_.bytes_live + length);  // room for everything lent out now, plus this
}

void Arena::reserve(std::size_t nbytes) {
  const std::size_t length = round_up(std::max<std::size_t>(nbytes, 1), alignment_);
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& chunk : chunks_) {
    for (const auto& range : chunk->free) {
      if (range.second >= length) return;
    }
  }
  grow(length);
}

bool Arena::carve(Chunk& chunk, std::size_t length, std::size_t& offset) {
  for (auto it = chunk.free.begin(); it != chunk.free.end(); ++it) {
    if (it->second < length) continue;
    offset = it->first;
    const std::size_t rest = it->second - length;
    chunk.free.erase(it);
    if (rest > 0) chunk.free.emplace(offset + length, rest);
    chunk.live += length;
    return true;
  }
  return false;
}

std::unique_ptr<Lease> Arena::allocate(std::size_t nbytes) {
  const std::size_t length = round_up(std::max<std::size_t>(nbytes, 1), alignment_);
  std::lock_guard<std::mutex> lock(mu_);
  Chunk* found = nullptr;
  std::size_t offset = 0;
  for (auto& chunk : chunks_) {
    if (carve(*chunk, length, offset)) {
      found = chunk.get();
      break;
    }
  }
  if (found == nullptr) {
    grow(length);
    for (auto& chunk : chunks_) {
      if (carve(*chunk, length, offset)) {
        found = chunk.get();
        break;
      }
    }
    if (found == nullptr) throw std::bad_alloc();  // cannot happen: the new chunk fits `length`
  }
  stats_.leases++;
  stats_.bytes_live += length;
  stats_.peak_bytes_live = std::max(stats_.peak_bytes_live, stats_.bytes_live);
  try {
    return std::make_unique<Piece>(shared_from_this(), found, offset, length, nbytes);
  } catch (...) {
    found->live -= length;  // undo by hand: give_back would lock mu_ again
    stats_.bytes_live -= length;
    auto next = found->free.lower_bound(offset);
    found->free.emplace_hint(next, offset, length);
    throw;
  }
}

void Arena::give_back(Chunk* chunk, std::size_t offset, std::size_t length) noexcept {
  void* to_free = nullptr;
  std::size_t to_free_size = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.bytes_live -= length;
    chunk->live -= length;
    // Insert the range and merge it with free neighbours on either side.
    auto next = chunk->free.lower_bound(offset);
    std::size_t start = offset, len = length;
    if (next != chunk->free.begin()) {
      auto prev = std::prev(next);
      if (prev->first + prev->second == start) {
        start = prev->first;
        len += prev->second;
        chunk->free.erase(prev);
      }
    }
    if (next != chunk->free.end() && start + len == next->first) {
      len += next->second;
      next = chunk->free.erase(next);
    }
    chunk->free.emplace_hint(next, start, len);
    // An empty chunk that is not the largest goes back: the arena converges on one chunk.
    if (chunk->live == 0 && chunks_.size() > 1 && chunks_.front().get() != chunk) {
      auto it = std::find_if(chunks_.begin(), chunks_.end(), [chunk](const auto& c) { return c.get() == chunk; });
      to_free = chunk->base;
      to_free_size = chunk->size;
      stats_.bytes_reserved -= chunk->size;
      stats_.chunk_frees++;
      chunks_.erase(it);  // destroys the Chunk record
      stats_.chunks = chunks_.size();
    }
  }
  if (to_free != nullptr) allocator_->deallocate(to_free, to_free_size);
}

ArenaStats Arena::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace unirt
