#include "batch_copy.hpp"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

#ifdef _WIN32
#include <process.h>
#else
#include <unistd.h>
#endif

namespace unirt {
namespace {

long current_pid() {
#ifdef _WIN32
  return static_cast<long>(_getpid());
#else
  return static_cast<long>(getpid());
#endif
}

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

// Whether [a, a + n) and [b, b + m) share a byte (empty ranges share none).
bool overlaps(const char* a, std::size_t n, const char* b, std::size_t m) {
  const auto x = reinterpret_cast<std::uintptr_t>(a), y = reinterpret_cast<std::uintptr_t>(b);
  return n > 0 && m > 0 && x < y + m && y < x + n;
}

}  // namespace

CopyWorkers::CopyWorkers() : pid_(current_pid()) {}

CopyWorkers& CopyWorkers::shared() {
  // One set per process; a forked child (whose copy has no threads) starts its own. Never destroyed: detached
  // workers may still be waiting when the process exits.
  static std::atomic<CopyWorkers*> current{nullptr};
  CopyWorkers* pool = current.load(std::memory_order_acquire);
  if (pool == nullptr || pool->pid_ != current_pid()) {
    auto* fresh = new CopyWorkers();
    if (current.compare_exchange_strong(pool, fresh, std::memory_order_acq_rel)) {
      pool = fresh;
    } else {
      delete fresh;  // another thread made one first: `pool` is it
    }
  }
  return *pool;
}

bool CopyWorkers::run(std::size_t n, const std::function<void(std::size_t)>& part) {
  std::unique_lock<std::mutex> call(call_, std::try_to_lock);
  if (!call.owns_lock()) return false;  // another call has the workers: the caller copies alone
  std::size_t helpers = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    while (started_ < n - 1) {
      try {
        std::thread(&CopyWorkers::loop, this).detach();
      } catch (...) {  // could not start a thread: fewer helpers
        break;
      }
      ++started_;
    }
    helpers = std::min(n - 1, started_);
    job_ = &part;
    next_ = 1;
    last_ = helpers;
    pending_ = helpers;
  }
  wake_.notify_all();
  part(0);
  for (std::size_t k = helpers + 1; k < n; ++k) part(k);  // parts no helper could take
  std::unique_lock<std::mutex> lock(mutex_);
  done_.wait(lock, [this] { return pending_ == 0; });
  job_ = nullptr;
  last_ = 0;
  return true;
}

void CopyWorkers::loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    wake_.wait(lock, [this] { return next_ <= last_; });
    const std::size_t k = next_++;
    const auto* part = job_;
    lock.unlock();
    (*part)(k);
    lock.lock();
    if (--pending_ == 0) done_.notify_one();
  }
}

void run_copies(const std::vector<CopySpan>& spans, int threads, std::size_t min_bytes_per_thread) {
  std::size_t total = 0;
  for (const CopySpan& s : spans) total += s.nbytes;
  if (total == 0) return;
  std::size_t n = static_cast<std::size_t>(std::max(threads, 1));
  n = std::min<std::size_t>(n, std::max(1u, std::thread::hardware_concurrency()));  // more threads than CPUs: no gain
  if (min_bytes_per_thread > 0) n = std::min(n, std::max<std::size_t>(1, total / min_bytes_per_thread));
  // Split on 4 KiB boundaries so threads do not share pages.
  const std::size_t share = (total / n + 4095) / 4096 * 4096;
  auto part = [&](std::size_t k) {
    const std::size_t begin = std::min(total, k * share);
    copy_range(spans, begin, std::min(total, begin + share));
  };
  if (n == 1 || !CopyWorkers::shared().run(n, part)) {
    for (std::size_t k = 0; k < n; ++k) part(k);  // one thread, or the workers are busy with another call
  }
}

std::vector<CopySpan> gather_spans(const std::vector<Piece>& sources, char* dst, std::size_t dst_bytes) {
  std::vector<CopySpan> spans;
  spans.reserve(sources.size() + 1);
  std::size_t offset = 0;
  for (std::size_t i = 0; i < sources.size(); ++i) {
    const Piece& p = sources[i];
    if (overlaps(p.data, p.nbytes, dst, dst_bytes)) {  // memcpy over its own source, on several threads: undefined
      throw std::invalid_argument("gather: parts[" + std::to_string(i) +
                                  "] shares memory with the destination; pass a copy of it");
    }
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
  std::vector<std::pair<std::uintptr_t, std::size_t>> ranges;  // (start, index): destinations must not overlap
  ranges.reserve(dsts.size());
  for (std::size_t i = 0; i < dsts.size(); ++i) {
    if (overlaps(dsts[i].first, dsts[i].second, src, src_bytes)) {
      throw std::invalid_argument("scatter: outs[" + std::to_string(i) +
                                  "] shares memory with the batch; pass a separate array");
    }
    if (dsts[i].second > 0) ranges.emplace_back(reinterpret_cast<std::uintptr_t>(dsts[i].first), i);
  }
  std::sort(ranges.begin(), ranges.end());
  for (std::size_t k = 1; k < ranges.size(); ++k) {
    const auto& prev = ranges[k - 1];
    if (prev.first + dsts[prev.second].second > ranges[k].first) {
      throw std::invalid_argument("scatter: outs[" + std::to_string(std::min(prev.second, ranges[k].second)) +
                                  "] and outs[" + std::to_string(std::max(prev.second, ranges[k].second)) +
                                  "] share memory; each needs its own array");
    }
  }
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
