// A JSON array's numbers read straight into doubles: the body of `[...]` (without the brackets), strictly by
// JSON's grammar, with no object per element. Used by the server for big tensor `data` arrays.
#pragma once

#include <cstddef>

namespace unirt {

// What `parse_json_numbers` found.
struct JsonNumbers {
  bool ok = false;        // the whole text is zero or more JSON numbers separated by commas (JSON whitespace around)
  bool integral = false;  // every number is written as an integer (no fraction, no exponent)
  std::size_t count = 0;  // numbers written to `out`
};

// How many numbers `text` holds at most (its commas + 1; 0 for blank text): the size `out` needs.
std::size_t json_numbers_capacity(const char* text, std::size_t size);

// Parses `text` (the inside of a JSON array) into `out` (room for `capacity` doubles). Each number is rounded as
// a correctly rounded strtod would (std::from_chars). Not ok: anything but numbers and commas (nested arrays,
// strings, true/false/null, NaN/Infinity), a number outside JSON's grammar ("+1", "01", ".5", "1."), an empty
// element, or a value outside the double range.
JsonNumbers parse_json_numbers(const char* text, std::size_t size, double* out, std::size_t capacity);

}  // namespace unirt
