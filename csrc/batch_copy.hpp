// Gather (many requests into one batch buffer) and scatter (a batch back out to requests): plain memory copies,
// split over threads when large. Callers release the GIL around them. No Python headers here.
#pragma once
#include <cstddef>
#include <vector>

namespace unirt {

struct CopySpan {
  const char* src;  // nullptr: fill `nbytes` zero bytes at dst
  char* dst;
  std::size_t nbytes;
};

// Performs every span, on up to `threads` threads (the calling thread included; never more than the CPUs). Work
// is split by bytes, so a single large span is shared out too; below `min_bytes_per_thread` per thread fewer
// threads are used.
void run_copies(const std::vector<CopySpan>& spans, int threads, std::size_t min_bytes_per_thread = 1 << 20);

struct Piece {
  const char* data;
  std::size_t nbytes;
};

// Spans that place `sources` one after another at `dst` and zero the rest of `dst_bytes`.
// Throws std::invalid_argument when the sources do not fit, or when a source's memory overlaps `dst`'s.
std::vector<CopySpan> gather_spans(const std::vector<Piece>& sources, char* dst, std::size_t dst_bytes);

// Spans that copy consecutive pieces of `src` (of `src_bytes`) into each destination in turn.
// Throws std::invalid_argument when the destinations ask for more than `src_bytes`, or when a destination's memory
// overlaps the source's or another destination's.
std::vector<CopySpan> scatter_spans(const char* src, std::size_t src_bytes, const std::vector<std::pair<char*, std::size_t>>& dsts);

}  // namespace unirt
