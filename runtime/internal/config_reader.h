// Typed reads of a model folder's JSON config files (config.json,
// sentence-transformers' files) that name the file and key in every error.
// Torch-free: the config parsers in gantry_runtime_core use it.
#ifndef GANTRY_RUNTIME_INTERNAL_CONFIG_READER_H_
#define GANTRY_RUNTIME_INTERNAL_CONFIG_READER_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace gantry::runtime {

// Keeps the first error; later reads return their fallback.
class ConfigReader {
 public:
  ConfigReader(const nlohmann::json& root, absl::string_view source) : root_(root), source_(source) {}

  absl::Status status() const { return status_; }

  int64_t Int(const char* key, std::optional<int64_t> fallback = std::nullopt) {
    auto it = root_.find(key);
    if (it == root_.end() || it->is_null()) {
      if (fallback) return *fallback;
      Fail(absl::StrCat("missing required key \"", key, "\""));
      return 0;
    }
    if (!it->is_number_integer()) {
      Fail(absl::StrCat("\"", key, "\" must be an integer, got ", it->dump()));
      return 0;
    }
    return it->get<int64_t>();
  }

  int64_t PositiveInt(const char* key, std::optional<int64_t> fallback = std::nullopt) {
    int64_t value = Int(key, fallback);
    if (status_.ok() && value <= 0) Fail(absl::StrCat("\"", key, "\" must be positive, got ", value));
    return value;
  }

  double Number(const nlohmann::json& object, const char* key, double fallback) {
    auto it = object.find(key);
    if (it == object.end() || it->is_null()) return fallback;
    if (!it->is_number()) {
      Fail(absl::StrCat("\"", key, "\" must be a number, got ", it->dump()));
      return fallback;
    }
    return it->get<double>();
  }

  bool Bool(const char* key, bool fallback) {
    auto it = root_.find(key);
    if (it == root_.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) {
      Fail(absl::StrCat("\"", key, "\" must be true or false, got ", it->dump()));
      return fallback;
    }
    return it->get<bool>();
  }

  void Fail(std::string message) {
    if (status_.ok()) status_ = absl::InvalidArgumentError(absl::StrCat(source_, ": ", message));
  }

 private:
  const nlohmann::json& root_;
  absl::string_view source_;
  absl::Status status_;
};

// config.json's "dtype" (transformers 5) or "torch_dtype": float32 when
// absent; UNIMPLEMENTED for a dtype the runtime cannot hold.
inline absl::StatusOr<std::string> ReadWeightDtype(const nlohmann::json& root, absl::string_view source) {
  std::string dtype = "float32";
  for (const char* key : {"dtype", "torch_dtype"}) {
    if (auto it = root.find(key); it != root.end() && it->is_string()) {
      dtype = it->get<std::string>();
      break;
    }
  }
  if (dtype != "float32" && dtype != "bfloat16" && dtype != "float16") {
    return absl::UnimplementedError(absl::StrCat(source, ": dtype \"", dtype,
                                                 "\" is not supported; supported: float32, bfloat16, float16"));
  }
  return dtype;
}

}  // namespace gantry::runtime

#endif  // GANTRY_RUNTIME_INTERNAL_CONFIG_READER_H_
