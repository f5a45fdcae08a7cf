// One region of host memory shared by sessions that run one after another: leases are carved out of it by
// offset (first fit, neighbours coalesce on release), so it is sized for the largest set of buffers alive at
// once, not the sum of every session's needs. No Python headers here.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "lease.hpp"

namespace unirt {

struct ArenaStats {
  std::size_t bytes_reserved = 0;  // what the arena holds from the allocator (all its chunks)
  std::size_t peak_bytes_reserved = 0;
  std::size_t bytes_live = 0;  // bytes lent out now
  std::size_t peak_bytes_live = 0;
  std::size_t chunks = 0;
  std::uint64_t leases = 0;           // leases handed out
  std::uint64_t chunk_allocations = 0;  // times the arena took memory from the allocator
  std::uint64_t chunk_frees = 0;
};

// Leases hold a shared_ptr to the arena, so its memory outlives every array that views it.
// When a lease does not fit, empty chunks are freed and a new chunk sized for everything lent out plus the request
// is added; a chunk that empties while a larger one exists is freed, so the arena settles on one chunk that fits
// the peak.
class Arena : public std::enable_shared_from_this<Arena> {
 public:
  static std::shared_ptr<Arena> create(std::shared_ptr<HostAllocator> allocator, std::size_t alignment,
                                       std::size_t initial_bytes);
  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  std::unique_ptr<Lease> allocate(std::size_t nbytes);
  // Makes sure `nbytes` can be carved in one piece (growing if not), so a run that takes several buffers
  // grows the arena once, to the run's whole need, rather than once per buffer.
  void reserve(std::size_t nbytes);
  ArenaStats stats() const;
  std::size_t alignment() const { return alignment_; }
  const char* kind() const { return allocator_->kind(); }

  // Chunks are allocated in multiples of this (64 KiB) so small growth steps do not add a chunk each.
  static constexpr std::size_t kGranularity = 64 * 1024;

 private:
  struct Chunk {
    char* base = nullptr;
    std::size_t size = 0;
    std::size_t live = 0;                 // bytes lent out of this chunk
    std::map<std::size_t, std::size_t> free;  // offset -> length, disjoint and never adjacent
  };
  class Piece;
  Arena(std::shared_ptr<HostAllocator> allocator, std::size_t alignment);
  bool carve(Chunk& chunk, std::size_t length, std::size_t& offset);  // caller holds mu_
  void add_chunk(std::size_t size);                                    // caller holds mu_
  void grow(std::size_t length);                                       // caller holds mu_
  void give_back(Chunk* chunk, std::size_t offset, std::size_t length) noexcept;

  std::shared_ptr<HostAllocator> allocator_;
  const std::size_t alignment_;
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Chunk>> chunks_;  // largest first
  ArenaStats stats_;
};

}  // namespace unirt
