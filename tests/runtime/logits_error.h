// The error measure the runtime tests hold logits to.
#ifndef GANTRY_TESTS_RUNTIME_LOGITS_ERROR_H_
#define GANTRY_TESTS_RUNTIME_LOGITS_ERROR_H_

#include <algorithm>
#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace gantry::testing {

// max |a - b| / max |b|: the error relative to the logits' scale. A size
// mismatch fails the test; a non-finite value is an infinite error.
inline double RelativeError(const std::vector<float>& actual, const std::vector<float>& expected) {
  EXPECT_EQ(actual.size(), expected.size());
  double diff = 0, scale = 0;
  for (size_t i = 0; i < std::min(actual.size(), expected.size()); ++i) {
    if (!std::isfinite(actual[i])) return INFINITY;
    diff = std::max(diff, std::abs(static_cast<double>(actual[i]) - expected[i]));
    scale = std::max(scale, std::abs(static_cast<double>(expected[i])));
  }
  return diff / scale;
}

}  // namespace gantry::testing

#endif  // GANTRY_TESTS_RUNTIME_LOGITS_ERROR_H_
