// The safetensors files of a Hugging Face model folder: a single
// `model.safetensors`, or shards listed by `model.safetensors.index.json`.
#ifndef GANTRY_RUNTIME_CHECKPOINT_H_
#define GANTRY_RUNTIME_CHECKPOINT_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/safetensors.h"

namespace gantry::runtime {

// Paths of the folder's safetensors files, in shard order.
absl::StatusOr<std::vector<std::string>> ListCheckpointFiles(const std::string& model_dir);

// Total tensor bytes of the folder, from the headers alone: what the weights
// cost before any dtype conversion.
absl::StatusOr<uint64_t> CheckpointTensorBytes(const std::string& model_dir);

class Checkpoint {
 public:
  struct Entry {
    const SafetensorsFile* file;
    const TensorInfo* info;
  };

  // Maps every shard; fails on a missing shard, a tensor named twice, or an
  // index entry whose tensor is not in the shard it names.
  static absl::StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& model_dir);

  const Entry* Find(absl::string_view name) const;
  std::vector<std::string> Names() const;
  const std::string& model_dir() const { return model_dir_; }

 private:
  std::string model_dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Entry, std::less<>> entries_;
};

}  // namespace gantry::runtime

#endif  // GANTRY_RUNTIME_CHECKPOINT_H_
