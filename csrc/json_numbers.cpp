#include "json_numbers.hpp"

#include <charconv>
#include <cstring>
#include <system_error>

namespace unirt {
namespace {

inline bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
inline bool is_digit(char c) { return c >= '0' && c <= '9'; }

// The end of the JSON number starting at `p`, or nullptr when none starts there. `integral` is cleared by a
// fraction or an exponent.
const char* scan_number(const char* p, const char* end, bool& integral) {
  if (p < end && *p == '-') ++p;
  if (p >= end || !is_digit(*p)) return nullptr;
  if (*p == '0') {
    ++p;
  } else {
    while (p < end && is_digit(*p)) ++p;
  }
  if (p < end && *p == '.') {
    ++p;
    if (p >= end || !is_digit(*p)) return nullptr;
    while (p < end && is_digit(*p)) ++p;
    integral = false;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    ++p;
    if (p < end && (*p == '+' || *p == '-')) ++p;
    if (p >= end || !is_digit(*p)) return nullptr;
    while (p < end && is_digit(*p)) ++p;
    integral = false;
  }
  return p;
}

}  // namespace

std::size_t json_numbers_capacity(const char* text, std::size_t size) {
  std::size_t commas = 0;
  bool blank = true;
  for (const char* p = text; p < text + size;) {
    const void* hit = std::memchr(p, ',', static_cast<std::size_t>(text + size - p));
    if (hit == nullptr) break;
    ++commas;
    p = static_cast<const char*>(hit) + 1;
  }
  for (std::size_t i = 0; i < size && blank; ++i) blank = is_space(text[i]);
  return blank ? 0 : commas + 1;
}

JsonNumbers parse_json_numbers(const char* text, std::size_t size, double* out, std::size_t capacity) {
  JsonNumbers r;
  r.integral = true;
  const char* p = text;
  const char* const end = text + size;
  while (p < end && is_space(*p)) ++p;
  if (p == end) {  // "[]"
    r.ok = true;
    return r;
  }
  while (true) {
    const char* stop = scan_number(p, end, r.integral);
    if (stop == nullptr || r.count >= capacity) return r;
    double value = 0.0;
    const auto [ptr, ec] = std::from_chars(p, stop, value);
    if (ec != std::errc() || ptr != stop) return r;  // out of the double range: the caller's slower path decides
    out[r.count++] = value;
    p = stop;
    while (p < end && is_space(*p)) ++p;
    if (p == end) break;
    if (*p != ',') return r;
    ++p;
    while (p < end && is_space(*p)) ++p;
  }
  r.ok = true;
  return r;
}

}  // namespace unirt
