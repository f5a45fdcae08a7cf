#include "batch_copy.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

namespace unirt {
namespace {

// Copies bytes [begin, end) of the concatenation of `spans`.
void copy_range(const std::vector<CopySpan>& spans, std::size_t begin, std::size_t end) {
  std::size_t pos = 0;
  for (const CopySpan& s : spans) {
    const std::size_t s_begin = pos, s_end = pos + s.nbytes;
    pos = s_end;
    if (s_end <= begin) continue;
    if (s_begin >= end) break;
    const std::size_t from = std::max(begin, s_begin) - s_begin;
    const std::size_t to = std::min(end, s_end) - s_begin;
    if (s.src == nullptr) {
      std::memset(s.dst + from, 0, to - from);
    } else {
      std::memcpy(s.dst + from, s.src + from, to - from);
    }
  }
}

}  // namespace

void run_copies(const std::vector<CopySpan>& spans, int threads, std::size_t min_bytes_per_thread) {
  std::size_t total = 0;
  for (const CopySpan& s : spans) total += s.nbytes;
  if (total == 0) return;
  std::size_t n = static_cast<std::size_t>(std::max(threads, 1));
  n = std::min<std::size_t>(n, std::max(1u, std::thread::hardware_concurrency()));  // more threads than CPUs: no gain
  if (min_bytes_per_thread > 0) n = std::min(n, std::max<std::size_t>(1, total / min_bytes_per_thread));
  if (n == 1) {
    copy_range(spans, 0, total);
    return;
  }
  // Split on 4 KiB boundaries so threads do not share pages.
  const std::size_t share = (total / n + 4095) / 4096 * 4096;
  std::vector<std::thread> workers;
  workers.reserve(n - 1);
  std::size_t begin = share;
  try {
    for (std::size_t i = 1; i < n && begin < total; ++i, begin += share) {
      workers.emplace_back(copy_range, std::cref(spans), begin, std::min(total, begin + share));
    }
  } catch (...) {  // could not start a thread: do the rest here
    for (auto& w : workers) w.join();
    copy_range(spans, std::min(total, share * (workers.size() + 1)), total);
    copy_range(spans, 0, std::min(total, share));
    return;
  }
  copy_range(spans, 0, std::min(total, share));
  for (auto& w : workers) w.join();
}

std::vector<CopySpan> gather_spans(const std::vector<Piece>& sources, char* dst, std::size_t dst_bytes) {
  std::vector<CopySpan> spans;
  spans.reserve(sources.size() + 1);
  std::size_t offset = 0;
  for (const Piece& p : sources) {
    if (p.nbytes > dst_bytes - offset) {
      throw std::invalid_argument("gather: the sources need more than the " + std::to_string(dst_bytes) +
                                  " bytes of the destination");
    }
    if (p.nbytes > 0) spans.push_back({p.data, dst + offset, p.nbytes});
    offset += p.nbytes;
  }
  if (offset < dst_bytes) spans.push_back({nullptr, dst + offset, dst_bytes - offset});
  return spans;
}

std::vector<CopySpan> scatter_spans(const char* src, std::size_t src_bytes,
                                    const std::vector<std::pair<char*, std::size_t>>& dsts) {
  std::vector<CopySpan> spans;
  spans.reserve(dsts.size());
  std::size_t offset = 0;
  for (const auto& d : dsts) {
    if (d.second > src_bytes - offset) {
      throw std::invalid_argument("scatter: the destinations ask for more than the " + std::to_string(src_bytes) +
                                  " bytes of the source");
    }
    if (d.second > 0) spans.push_back({src + offset, d.first, d.second});
    offset += d.second;
  }
  return spans;
}

}  // namespace unirt
