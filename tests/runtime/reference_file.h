// Reading the tensors of a fixture's reference.safetensors (written by
// tools/make_test_models.py and tools/make_encoder_models.py).
#ifndef GANTRY_TESTS_RUNTIME_REFERENCE_FILE_H_
#define GANTRY_TESTS_RUNTIME_REFERENCE_FILE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/safetensors.h"

namespace gantry::testing {

// A tensor's elements, flat; a failure (and nothing) when it is missing.
template <typename T>
inline std::vector<T> ReadTensor(const runtime::SafetensorsFile& file, const std::string& name) {
  const runtime::TensorInfo* info = file.Find(name);
  EXPECT_NE(info, nullptr) << name;
  if (info == nullptr) return {};
  const T* data = static_cast<const T*>(file.Data(*info));
  return std::vector<T>(data, data + info->NumElements());
}

// A [rows, width] float32 tensor as rows; empty when it is missing.
inline std::vector<std::vector<float>> ReadRows(const runtime::SafetensorsFile& file, const std::string& name) {
  std::vector<std::vector<float>> rows;
  const runtime::TensorInfo* info = file.Find(name);
  if (info == nullptr) return rows;
  std::vector<float> flat = ReadTensor<float>(file, name);
  const int64_t width = info->shape[1];
  for (int64_t p = 0; p < info->shape[0]; ++p) {
    rows.emplace_back(flat.begin() + p * width, flat.begin() + (p + 1) * width);
  }
  return rows;
}

}  // namespace gantry::testing

#endif  // GANTRY_TESTS_RUNTIME_REFERENCE_FILE_H_
