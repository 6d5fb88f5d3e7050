// Byte-pair encoding as Hugging Face's tokenizers "BPE" model: merges by rank,
// ignore_merges, byte_fallback, unk_token with fuse_unk.
#ifndef GANTRY_RUNTIME_TEXT_BPE_MODEL_H_
#define GANTRY_RUNTIME_TEXT_BPE_MODEL_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json_fwd.hpp"
#include "text/model.h"

namespace gantry::text {

class BpeModel : public Model {
 public:
  // `model` is tokenizer.json's "model" object (type "BPE").
  static absl::StatusOr<std::unique_ptr<Model>> Create(const nlohmann::json& model);

 private:
  BpeModel() = default;
  void EncodeUncached(absl::string_view word, std::vector<int32_t>* ids) const override;

  struct Merge {
    int32_t rank;
    int32_t merged;
  };
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  absl::flat_hash_map<uint64_t, Merge> merges_;
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  int32_t byte_ids_[256];  // <0xXX> tokens for byte_fallback, -1 when absent
};

}  // namespace gantry::text

#endif  // GANTRY_RUNTIME_TEXT_BPE_MODEL_H_
