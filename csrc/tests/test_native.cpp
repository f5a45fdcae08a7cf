// Unit tests of the pure C++ library (unirt_native), no Python and no test framework: each CHECK that fails
// prints where and what, and the process exits non-zero. Built and run by ctest (csrc/tests/CMakeLists.txt).
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "arena.hpp"
#include "batch_copy.hpp"
#include "buffer_pool.hpp"
#include "json_numbers.hpp"
#include "shared_memory.hpp"

namespace {

int failures = 0;

#define CHECK(cond)                                                             \
  do {                                                                          \
    if (!(cond)) {                                                              \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                               \
    }                                                                           \
  } while (0)

template <class E>
bool throws(const std::function<void()>& f) {
  try {
    f();
  } catch (const E&) {
    return true;
  } catch (...) {
    return false;
  }
  return false;
}

bool aligned(const void* p, std::size_t alignment) { return reinterpret_cast<std::uintptr_t>(p) % alignment == 0; }

void test_pool_reuses_blocks_by_size_class() {
  auto pool = unirt::BufferPool::create(unirt::aligned_host_allocator(), 64, 1 << 20);
  void* first = nullptr;
  {
    auto a = pool->acquire(1000);
    CHECK(a->size() == 1000);
    CHECK(aligned(a->data(), 64));
    std::memset(a->data(), 1, 1000);
    first = a->data();
  }
  auto s = pool->stats();
  CHECK(s.allocations == 1 && s.releases == 1 && s.blocks_cached == 1 && s.blocks_live == 0);
  {
    auto b = pool->acquire(900);  // same size class as 1000: the cached block comes back
    CHECK(b->data() == first);
    auto c = pool->acquire(900);  // the class's only block is in use: a new one
    CHECK(c->data() != first);
  }
  s = pool->stats();
  CHECK(s.allocations == 2 && s.reuses == 1 && s.blocks_live == 0 && s.bytes_live == 0);
  CHECK(s.bytes_reserved == s.bytes_cached);
  CHECK(pool->trim() == s.bytes_cached);
  CHECK(pool->stats().bytes_reserved == 0 && pool->stats().frees == 2);
}

void test_pool_size_classes() {
  using unirt::BufferPool;
  CHECK(BufferPool::size_class(0, 64) == 64);
  CHECK(BufferPool::size_class(1, 64) == 64);
  CHECK(BufferPool::size_class(256, 64) == 256);
  for (std::size_t n : {257u, 1000u, 4097u, 1u << 20, (1u << 20) + 1}) {
    const std::size_t c = BufferPool::size_class(n, 64);
    CHECK(c >= n && c % 64 == 0);
    CHECK(c <= n + n / 4 + 64);  // at most a quarter wasted above 256 bytes
  }
  CHECK(throws<std::invalid_argument>([] { unirt::BufferPool::create(unirt::aligned_host_allocator(), 3, 0); }));
}

void test_pool_respects_its_cache_limit_and_close() {
  auto pool = unirt::BufferPool::create(unirt::aligned_host_allocator(), 64, 4096);
  { auto big = pool->acquire(8192); }  // larger than the cache limit: freed at once
  CHECK(pool->stats().blocks_cached == 0 && pool->stats().frees == 1);
  auto held = pool->acquire(100);
  pool->close();
  CHECK(pool->closed());
  held.reset();  // released after close: freed, not cached
  CHECK(pool->stats().blocks_cached == 0 && pool->stats().bytes_reserved == 0);
}

void test_pool_from_many_threads() {
  auto pool = unirt::BufferPool::create(unirt::aligned_host_allocator(), 64, 1 << 22);
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        const std::size_t n = 64 + static_cast<std::size_t>((t * 131 + i * 17) % 5000);
        auto lease = pool->acquire(n);
        auto* p = static_cast<unsigned char*>(lease->data());
        std::memset(p, t, n);
        if (p[0] != t || p[n - 1] != t) bad++;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(bad == 0);
  const auto s = pool->stats();
  CHECK(s.blocks_live == 0 && s.bytes_live == 0);
  CHECK(s.allocations + s.reuses == 8 * 2000 && s.releases == 8 * 2000);
}

void test_arena_carves_and_coalesces() {
  auto arena = unirt::Arena::create(unirt::aligned_host_allocator(), 64, 1 << 20);
  CHECK(arena->stats().chunks == 1 && arena->stats().bytes_reserved >= (1u << 20));
  std::vector<std::unique_ptr<unirt::Lease>> leases;
  for (int i = 0; i < 16; ++i) leases.push_back(arena->allocate(1000 + i));
  for (std::size_t i = 0; i < leases.size(); ++i) {
    CHECK(aligned(leases[i]->data(), 64));
    std::memset(leases[i]->data(), static_cast<int>(i), leases[i]->size());
  }
  for (std::size_t i = 0; i < leases.size(); ++i) {  // no lease overlaps another: each kept its own bytes
    const auto* p = static_cast<const unsigned char*>(leases[i]->data());
    CHECK(p[0] == i && p[leases[i]->size() - 1] == i);
  }
  CHECK(arena->stats().leases == 16 && arena->stats().chunk_allocations == 1);
  for (std::size_t i = 0; i < leases.size(); i += 2) leases[i].reset();  // free every other one ...
  for (std::size_t i = 1; i < leases.size(); i += 2) leases[i].reset();  // ... then the rest: all coalesced
  CHECK(arena->stats().bytes_live == 0);
  auto whole = arena->allocate(arena->stats().bytes_reserved);  // the whole chunk again, in one piece
  CHECK(arena->stats().chunk_allocations == 1);
}

void test_arena_grows_when_full() {
  auto arena = unirt::Arena::create(unirt::aligned_host_allocator(), 64, 0);
  auto a = arena->allocate(100 * 1024);
  auto b = arena->allocate(300 * 1024);
  CHECK(arena->stats().bytes_live >= 400 * 1024);
  CHECK(arena->stats().bytes_reserved >= arena->stats().bytes_live);
  CHECK(static_cast<char*>(a->data()) + a->size() <= static_cast<char*>(b->data()) ||
        static_cast<char*>(b->data()) + b->size() <= static_cast<char*>(a->data()));
  a.reset();
  b.reset();
  CHECK(arena->stats().bytes_live == 0);
}

void test_gather_and_scatter() {
  std::vector<char> x(10, 'x'), y(7, 'y'), dst(20, '?');
  auto spans = unirt::gather_spans({{x.data(), x.size()}, {y.data(), y.size()}}, dst.data(), dst.size());
  unirt::run_copies(spans, 2);
  CHECK(std::string(dst.data(), 10) == std::string(10, 'x'));
  CHECK(std::string(dst.data() + 10, 7) == std::string(7, 'y'));
  CHECK(dst[17] == 0 && dst[19] == 0);  // the rest of the destination is zero-filled (a padded batch)
  CHECK(throws<std::invalid_argument>([&] { unirt::gather_spans({{x.data(), 30}}, dst.data(), dst.size()); }));

  std::vector<char> a(5), b(12);
  spans = unirt::scatter_spans(dst.data(), 17, {{a.data(), a.size()}, {b.data(), b.size()}});
  unirt::run_copies(spans, 1);
  CHECK(std::string(a.data(), 5) == std::string(5, 'x'));
  CHECK(std::string(b.data(), 5) == std::string(5, 'x') && std::string(b.data() + 5, 7) == std::string(7, 'y'));
  CHECK(throws<std::invalid_argument>([&] { unirt::scatter_spans(dst.data(), 4, {{a.data(), a.size()}}); }));
}

void test_run_copies_splits_large_copies_across_threads() {
  const std::size_t n = 8u << 20;
  std::vector<std::uint8_t> src(n), dst(n + 100, 0xAB);
  std::iota(src.begin(), src.end(), 0);
  const std::vector<unirt::CopySpan> spans = {{reinterpret_cast<const char*>(src.data()),
                                               reinterpret_cast<char*>(dst.data()), n / 2},
                                              {nullptr, reinterpret_cast<char*>(dst.data()) + n / 2, 100},
                                              {reinterpret_cast<const char*>(src.data()) + n / 2,
                                               reinterpret_cast<char*>(dst.data()) + n / 2 + 100, n / 2}};
  unirt::run_copies(spans, 4, 1 << 20);
  CHECK(std::memcmp(dst.data(), src.data(), n / 2) == 0);
  bool zeros = true;
  for (std::size_t i = n / 2; i < n / 2 + 100; ++i) zeros = zeros && dst[i] == 0;
  CHECK(zeros);
  CHECK(std::memcmp(dst.data() + n / 2 + 100, src.data() + n / 2, n / 2) == 0);
}

void test_shared_memory_round_trip() {
  const std::string name = "/unirt-native-test-" + std::to_string(::getpid());
  {
    auto owner = unirt::SharedMemory::create(name, 4096);
    CHECK(owner->owner() && owner->writable() && owner->size() >= 4096);
    std::memcpy(owner->data(), "hello", 6);
    auto reader = unirt::SharedMemory::attach(name, false);
    CHECK(!reader->owner() && !reader->writable());
    CHECK(std::strcmp(reader->data(), "hello") == 0);
    CHECK(throws<unirt::SystemError>([&] { unirt::SharedMemory::create(name, 16); }));  // the name is taken
  }  // the owner unlinks the name when it goes
  CHECK(throws<unirt::SystemError>([&] { unirt::SharedMemory::attach(name, false); }));
  CHECK(throws<std::invalid_argument>([] { unirt::SharedMemory::create("no-slash", 16); }));
  CHECK(throws<std::invalid_argument>([&] { unirt::SharedMemory::create(name, 0); }));
}

}  // namespace

void test_json_numbers() {
  using unirt::json_numbers_capacity;
  using unirt::parse_json_numbers;
  double out[8];
  auto parse = [&](const char* text) {
    const std::size_t n = std::strlen(text);
    return parse_json_numbers(text, n, out, json_numbers_capacity(text, n));
  };
  auto r = parse(" 1, -2.5 ,3e2,0.1 ");
  CHECK(r.ok && !r.integral && r.count == 4);
  CHECK(out[0] == 1.0 && out[1] == -2.5 && out[2] == 300.0 && out[3] == 0.1);
  r = parse("7,-0");
  CHECK(r.ok && r.integral && r.count == 2 && out[0] == 7.0 && out[1] == 0.0);
  CHECK(parse("").ok && parse("").count == 0 && parse(" \n").ok);
  for (const char* bad : {"1,", ",1", "1,,2", "01", "+1", ".5", "1.", "1e", "-", "NaN", "1e400", "[1]", "1 2"}) {
    CHECK(!parse(bad).ok);
  }
  CHECK(!parse_json_numbers("1,2,3", 5, out, 2).ok);  // more numbers than room: refused, nothing past `out`
}

int main() {
  const std::pair<const char*, void (*)()> tests[] = {
      {"pool_reuses_blocks_by_size_class", test_pool_reuses_blocks_by_size_class},
      {"pool_size_classes", test_pool_size_classes},
      {"pool_respects_its_cache_limit_and_close", test_pool_respects_its_cache_limit_and_close},
      {"pool_from_many_threads", test_pool_from_many_threads},
      {"arena_carves_and_coalesces", test_arena_carves_and_coalesces},
      {"arena_grows_when_full", test_arena_grows_when_full},
      {"gather_and_scatter", test_gather_and_scatter},
      {"run_copies_splits_large_copies_across_threads", test_run_copies_splits_large_copies_across_threads},
      {"shared_memory_round_trip", test_shared_memory_round_trip},
      {"json_numbers", test_json_numbers},
  };
  for (const auto& [name, test] : tests) {
    const int before = failures;
    try {
      test();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s: unexpected exception: %s\n", name, e.what());
      ++failures;
    }
    std::printf("%s %s\n", failures == before ? "PASS" : "FAIL", name);
  }
  return failures == 0 ? 0 : 1;
}
