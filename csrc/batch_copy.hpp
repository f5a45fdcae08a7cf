// Gather (many requests into one batch buffer) and scatter (a batch back out to requests): plain memory copies,
// split over threads when large. Callers release the GIL around them. No Python headers here.
#pragma once
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <vector>

namespace unirt {

struct CopySpan {
  const char* src;  // nullptr: fill `nbytes` zero bytes at dst
  char* dst;
  std::size_t nbytes;
};

// Threads kept for large copies: starting a thread and joining it costs about as much as copying the 1 MiB
// share a thread takes (~30 us each), so the workers are started once and reused. One call uses them at a time;
// a concurrent call copies on its own thread (its caller's, with the GIL released).
class CopyWorkers {
 public:
  static CopyWorkers& shared();
  // Runs part(k) for k in [0, n): part(0) on the calling thread, the rest on workers. False when another call is
  // using the workers (nothing was run).
  bool run(std::size_t n, const std::function<void(std::size_t)>& part);

 private:
  CopyWorkers();
  void loop();
  const long pid_;  // the process that started the workers (a forked child has none)
  std::mutex call_;  // held for a whole call
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::size_t started_ = 0;
  const std::function<void(std::size_t)>* job_ = nullptr;
  std::size_t next_ = 1, last_ = 0, pending_ = 0;  // parts next_..last_ are still to take; pending_ unfinished
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
