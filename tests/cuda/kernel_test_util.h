// Shared pieces of the CUDA kernel tests: device buffers, host conversions to
// and from the storage types, seeded random inputs, and the error measure.
// Every kernel is checked against a CPU reference in double precision on
// random inputs (as llm.c checks its kernels); outputs are poisoned before
// each launch so an element the kernel never writes fails the check.
#ifndef GANTRY_TESTS_CUDA_KERNEL_TEST_UTIL_H_
#define GANTRY_TESTS_CUDA_KERNEL_TEST_UTIL_H_

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/cuda/kernels.h"

namespace gantry::cuda::testing {

// Skips the test where no CUDA device is usable (CI's machines).
inline bool HaveGpu() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}
#define GANTRY_REQUIRE_GPU() \
  if (!::gantry::cuda::testing::HaveGpu()) GTEST_SKIP() << "no CUDA device"

inline size_t ElementSize(DType dtype) { return dtype == DType::kFloat32 ? 4 : 2; }

// Rounds x to the storage type and back (what the device sees when the host
// uploads x in that type).
inline float RoundTo(DType dtype, float x) {
  switch (dtype) {
    case DType::kFloat32: return x;
    case DType::kFloat16: return __half2float(__float2half_rn(x));
    case DType::kBFloat16: return __bfloat162float(__float2bfloat16_rn(x));
  }
  return x;
}

// Host bytes of `values` in the storage type.
inline std::vector<uint8_t> Encode(DType dtype, const std::vector<float>& values) {
  std::vector<uint8_t> bytes(values.size() * ElementSize(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::kFloat32) {
      std::memcpy(&bytes[i * 4], &values[i], 4);
    } else if (dtype == DType::kFloat16) {
      __half h = __float2half_rn(values[i]);
      std::memcpy(&bytes[i * 2], &h, 2);
    } else {
      __nv_bfloat16 b = __float2bfloat16_rn(values[i]);
      std::memcpy(&bytes[i * 2], &b, 2);
    }
  }
  return bytes;
}

inline std::vector<float> Decode(DType dtype, const std::vector<uint8_t>& bytes) {
  const size_t n = bytes.size() / ElementSize(dtype);
  std::vector<float> values(n);
  for (size_t i = 0; i < n; ++i) {
    if (dtype == DType::kFloat32) {
      std::memcpy(&values[i], &bytes[i * 4], 4);
    } else if (dtype == DType::kFloat16) {
      __half h;
      std::memcpy(&h, &bytes[i * 2], 2);
      values[i] = __half2float(h);
    } else {
      __nv_bfloat16 b;
      std::memcpy(&b, &bytes[i * 2], 2);
      values[i] = __bfloat162float(b);
    }
  }
  return values;
}

// A cudaMalloc'd buffer, freed on destruction.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    EXPECT_EQ(cudaMalloc(&ptr_, bytes == 0 ? 1 : bytes), cudaSuccess);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept { *this = std::move(other); }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    std::swap(ptr_, other.ptr_);
    std::swap(bytes_, other.bytes_);
    return *this;
  }
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  void* get() const { return ptr_; }
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }

  // Fills every byte with 0xFF: NaN in every float type, so an element the
  // kernel leaves unwritten fails any comparison.
  void Poison() { EXPECT_EQ(cudaMemset(ptr_, 0xFF, bytes_), cudaSuccess); }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

template <typename T>
DeviceBuffer Upload(const std::vector<T>& values) {
  DeviceBuffer buffer(values.size() * sizeof(T));
  EXPECT_EQ(cudaMemcpy(buffer.get(), values.data(), values.size() * sizeof(T), cudaMemcpyHostToDevice),
            cudaSuccess);
  return buffer;
}

// Uploads `values` in the storage type.
inline DeviceBuffer UploadAs(DType dtype, const std::vector<float>& values) {
  return Upload(Encode(dtype, values));
}

template <typename T>
std::vector<T> Download(const DeviceBuffer& buffer, size_t count) {
  std::vector<T> values(count);
  EXPECT_EQ(cudaMemcpy(values.data(), buffer.get(), count * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return values;
}

// Downloads `count` elements stored in `dtype`, as float.
inline std::vector<float> DownloadAs(DType dtype, const DeviceBuffer& buffer, size_t count) {
  return Decode(dtype, Download<uint8_t>(buffer, count * ElementSize(dtype)));
}

// Waits for the device and fails the test on any asynchronous error.
inline void Sync() {
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess) << cudaGetErrorString(cudaGetLastError());
}

// Uniform values in [lo, hi), already rounded to `dtype` (so the CPU
// reference sees exactly what the device reads).
inline std::vector<float> RandomValues(std::mt19937& rng, DType dtype, size_t n, float lo = -1.0f,
                                       float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> values(n);
  for (float& v : values) v = RoundTo(dtype, dist(rng));
  return values;
}

// ||actual - expected|| / ||expected|| (L2); NaN or a size mismatch gives +inf.
inline double RelativeError(const std::vector<float>& actual, const std::vector<double>& expected) {
  if (actual.size() != expected.size()) return INFINITY;
  double diff = 0, norm = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    if (!std::isfinite(actual[i])) return INFINITY;
    diff += (actual[i] - expected[i]) * (actual[i] - expected[i]);
    norm += expected[i] * expected[i];
  }
  return norm == 0 ? std::sqrt(diff) : std::sqrt(diff / norm);
}

// The tolerance for outputs stored in `dtype`, from METHOD.md's guidance:
// float32 far under 1e-3, 16-bit storage between 1e-3 and 1e-2.
inline double Tolerance(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return 1e-5;
    case DType::kFloat16: return 2e-3;
    case DType::kBFloat16: return 1e-2;
  }
  return 0;
}

// The kernels' rounding to the storage type; float32 keeps the double so a
// reference stays exact there.
inline double Store(DType dtype, double x) {
  return dtype == DType::kFloat32 ? x : static_cast<double>(RoundTo(dtype, static_cast<float>(x)));
}

// For kernels whose reference follows their rounding points exactly:
// relative error under float32_tolerance (float32), 1e-3 (fp16) or 4e-3
// (bf16), and for 16-bit types at least 99% of the elements equal to the
// reference rounded to the type (a wrong rounding point fails this).
inline void ExpectRoundedMatch(DType dtype, double float32_tolerance, const std::vector<float>& actual,
                               const std::vector<double>& expected, const std::string& what) {
  const double tolerance = dtype == DType::kFloat32 ? float32_tolerance : dtype == DType::kFloat16 ? 1e-3 : 4e-3;
  EXPECT_LT(RelativeError(actual, expected), tolerance) << what;
  if (dtype == DType::kFloat32 || actual.size() != expected.size()) return;
  size_t same = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    if (actual[i] == RoundTo(dtype, static_cast<float>(expected[i]))) ++same;
  }
  EXPECT_GE(same, 0.99 * actual.size()) << what << ": only " << same << " of " << actual.size()
                                        << " elements bit-identical";
}

// Weights scaled like a trained Linear layer's.
inline constexpr float kWeightScale = 0.05f;

// splitmix64: weights of the 8B shapes (up to 525M values) are generated
// from a hash, which is much faster than mt19937 and needs no float copy.
inline uint64_t Mix(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// W [n, k] in the storage type, uniform in [-kWeightScale, kWeightScale).
inline std::vector<uint8_t> RandomWeightBytes(DType dtype, int64_t n, int64_t k, uint64_t seed) {
  const size_t count = static_cast<size_t>(n * k), es = ElementSize(dtype);
  std::vector<uint8_t> bytes(count * es);
  for (size_t i = 0; i < count; ++i) {
    const float u = static_cast<float>(Mix(seed ^ (i * 0x100000001B3ull)) >> 40) * 0x1p-24f;  // [0, 1)
    const float v = (2.0f * u - 1.0f) * kWeightScale;
    if (dtype == DType::kFloat32) {
      std::memcpy(&bytes[i * 4], &v, 4);
    } else if (dtype == DType::kFloat16) {
      const __half h = __float2half_rn(v);
      std::memcpy(&bytes[i * 2], &h, 2);
    } else {
      const __nv_bfloat16 b = __float2bfloat16_rn(v);
      std::memcpy(&bytes[i * 2], &b, 2);
    }
  }
  return bytes;
}

// Row `row` of W as the device reads it.
inline std::vector<float> WeightRow(DType dtype, const std::vector<uint8_t>& w_bytes, int64_t k, int64_t row) {
  const size_t es = ElementSize(dtype);
  const auto begin = w_bytes.begin() + static_cast<size_t>(row * k) * es;
  return Decode(dtype, std::vector<uint8_t>(begin, begin + static_cast<size_t>(k) * es));
}

// The output features the reference checks: all of them for small n; for
// large n the first and last 32 (the first and a partial last tile) and a
// random sample, so the 8B shapes' CPU reference stays fast.
inline std::vector<int64_t> CheckedRows(int64_t n, std::mt19937& rng) {
  std::vector<int64_t> rows;
  constexpr int64_t kAll = 2048;
  if (n <= kAll) {
    for (int64_t i = 0; i < n; ++i) rows.push_back(i);
    return rows;
  }
  for (int64_t i = 0; i < 32; ++i) rows.push_back(i), rows.push_back(n - 1 - i);
  std::uniform_int_distribution<int64_t> pick(32, n - 33);
  for (int i = 0; i < 960; ++i) rows.push_back(pick(rng));
  std::sort(rows.begin(), rows.end());
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  return rows;
}

// Mean microseconds per call of `launch(i)` over `launches` back-to-back
// calls on the default stream, after `warmup` untimed ones; `launch` returns
// whether its call was accepted (a refused call fails the test, result 0).
inline double MicrosecondsPerLaunch(int warmup, int launches, const std::function<bool(int)>& launch) {
  for (int i = 0; i < warmup; ++i) {
    if (!launch(i)) {
      ADD_FAILURE() << "warm-up launch " << i << " refused";
      return 0;
    }
  }
  cudaEvent_t start, stop;
  EXPECT_EQ(cudaEventCreate(&start), cudaSuccess);
  EXPECT_EQ(cudaEventCreate(&stop), cudaSuccess);
  EXPECT_EQ(cudaEventRecord(start, nullptr), cudaSuccess);
  bool accepted = true;
  for (int i = 0; i < launches && accepted; ++i) accepted = launch(i);
  EXPECT_TRUE(accepted) << "a timed launch was refused";
  EXPECT_EQ(cudaEventRecord(stop, nullptr), cudaSuccess);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  float ms = 0;
  EXPECT_EQ(cudaEventElapsedTime(&ms, start, stop), cudaSuccess);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return accepted ? 1000.0 * ms / launches : 0;
}

// Rotary inverse frequencies as transformers computes them: exponents 2i/d
// in float32, inv_freq = 1 / theta^exponent in float32.
inline std::vector<float> InverseFrequencies(int head_dim, float theta) {
  std::vector<float> inv_freq(head_dim / 2);
  for (int i = 0; i < head_dim / 2; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv_freq[i] = 1.0f / std::pow(theta, exponent);
  }
  return inv_freq;
}

inline const std::vector<DType>& AllDTypes() {
  static const std::vector<DType> all = {DType::kFloat32, DType::kFloat16, DType::kBFloat16};
  return all;
}

}  // namespace gantry::cuda::testing

#endif  // GANTRY_TESTS_CUDA_KERNEL_TEST_UTIL_H_
