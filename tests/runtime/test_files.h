// Helpers for tests that write model folders and safetensors files.
#ifndef GANTRY_TESTS_RUNTIME_TEST_FILES_H_
#define GANTRY_TESTS_RUNTIME_TEST_FILES_H_

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/safetensors.h"

namespace gantry::testing {

// A fresh empty folder under the test's temporary directory.
inline std::string MakeTempDir(const std::string& name) {
  std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

inline void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A safetensors file: 8-byte little-endian header length, header, data.
inline std::string SafetensorsBytes(const std::string& header_json, const std::string& data) {
  return runtime::SafetensorsFileHead(header_json) + data;
}

inline std::string TestModelDir(const std::string& name) {
  return std::string(GANTRY_TEST_MODELS) + "/" + name;
}

}  // namespace gantry::testing

#endif  // GANTRY_TESTS_RUNTIME_TEST_FILES_H_
