#pragma once
// The fuzzers' one assertion: an invariant that does not hold ends the run (libFuzzer keeps
// the input as a crash reproducer), also in builds with NDEBUG.
#include <cstdio>
#include <cstdlib>

namespace coap2mqtt::fuzz {

inline void check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "invariant violated: %s\n", what);
    std::abort();
  }
}

}  // namespace coap2mqtt::fuzz
