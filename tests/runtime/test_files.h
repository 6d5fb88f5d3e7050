// Helpers for tests that write model folders and safetensors files.
#ifndef GANTRY_TESTS_RUNTIME_TEST_FILES_H_
#define GANTRY_TESTS_RUNTIME_TEST_FILES_H_

#include <ftw.h>
#include <sys/stat.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/safetensors.h"

namespace gantry::testing {

// Removes `path` and all it holds (nothing when it does not exist). Through
// POSIX nftw, not std::filesystem::remove_all: PyTorch 2.11's CUDA
// libtorch.so exports its own copy of remove_all, the dynamic linker binds a
// test binary's calls to it, and that copy jumps to a null address (GPU
// machine, 2026-12-07; the copies of the other std::filesystem functions work).
inline void RemoveTree(const std::string& path) {
  nftw(
      path.c_str(), [](const char* entry, const struct stat*, int, struct FTW*) { return ::remove(entry); }, 16,
      FTW_DEPTH | FTW_PHYS);
}

// A fresh empty folder under the test's temporary directory.
inline std::string MakeTempDir(const std::string& name) {
  std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) / name;
  RemoveTree(dir.string());
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
