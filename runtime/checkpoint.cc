#include "runtime/checkpoint.h"

#include <sys/stat.h>

#include <set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/model_config.h"

namespace gantry::runtime {
namespace {

bool FileExists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

constexpr char kIndexName[] = "model.safetensors.index.json";

// weight_map of the index: tensor name -> shard file name.
absl::StatusOr<std::map<std::string, std::string>> ReadIndex(const std::string& model_dir) {
  std::string path = model_dir + "/" + kIndexName;
  auto text = ReadTextFile(path);
  if (!text.ok()) return text.status();
  auto root = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object() || !root.contains("weight_map") ||
      !root["weight_map"].is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a JSON object with a \"weight_map\" object"));
  }
  std::map<std::string, std::string> weight_map;
  for (const auto& [name, file] : root["weight_map"].items()) {
    if (!file.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": weight_map entry \"", name, "\" is not a file name"));
    }
    std::string shard = file.get<std::string>();
    if (shard.find('/') != std::string::npos || shard == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": weight_map entry \"", name, "\" names a path outside the folder: ", shard));
    }
    weight_map[name] = shard;
  }
  return weight_map;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ListCheckpointFiles(const std::string& model_dir) {
  if (FileExists(model_dir + "/" + kIndexName)) {
    auto weight_map = ReadIndex(model_dir);
    if (!weight_map.ok()) return weight_map.status();
    std::set<std::string> shards;
    for (const auto& [name, shard] : *weight_map) shards.insert(shard);
    std::vector<std::string> paths;
    for (const auto& shard : shards) {
      std::string path = model_dir + "/" + shard;
      if (!FileExists(path)) {
        return absl::NotFoundError(
            absl::StrCat(model_dir, ": shard ", shard, " listed in ", kIndexName, " is missing"));
      }
      paths.push_back(path);
    }
    return paths;
  }
  std::string single = model_dir + "/model.safetensors";
  if (FileExists(single)) return std::vector<std::string>{single};
  return absl::NotFoundError(absl::StrCat(model_dir, ": neither model.safetensors nor ",
                                          kIndexName, " is present"));
}

absl::StatusOr<uint64_t> CheckpointTensorBytes(const std::string& model_dir) {
  auto files = ListCheckpointFiles(model_dir);
  if (!files.ok()) return files.status();
  uint64_t total = 0;
  for (const auto& path : *files) {
    auto header = ReadSafetensorsHeader(path);
    if (!header.ok()) return header.status();
    for (const auto& tensor : header->tensors) total += tensor.NumBytes();
  }
  return total;
}

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& model_dir) {
  auto paths = ListCheckpointFiles(model_dir);
  if (!paths.ok()) return paths.status();
  auto checkpoint = std::make_unique<Checkpoint>();
  checkpoint->model_dir_ = model_dir;
  for (const auto& path : *paths) {
    auto file = SafetensorsFile::Open(path);
    if (!file.ok()) return file.status();
    for (const auto& info : (*file)->header().tensors) {
      auto [it, inserted] = checkpoint->entries_.emplace(info.name, Entry{file->get(), &info});
      if (!inserted) {
        return absl::InvalidArgumentError(absl::StrCat(model_dir, ": tensor \"", info.name,
                                                       "\" appears in both ", it->second.file->path(),
                                                       " and ", path));
      }
    }
    checkpoint->files_.push_back(*std::move(file));
  }
  if (FileExists(model_dir + "/" + kIndexName)) {
    auto weight_map = ReadIndex(model_dir);
    if (!weight_map.ok()) return weight_map.status();
    for (const auto& [name, shard] : *weight_map) {
      auto it = checkpoint->entries_.find(name);
      std::string expected_path = model_dir + "/" + shard;
      if (it == checkpoint->entries_.end() || it->second.file->path() != expected_path) {
        return absl::InvalidArgumentError(absl::StrCat(model_dir, ": ", kIndexName, " places \"",
                                                       name, "\" in ", shard, ", which lacks it"));
      }
    }
  }
  return checkpoint;
}

const Checkpoint::Entry* Checkpoint::Find(absl::string_view name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second;
}

std::vector<std::string> Checkpoint::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, entry] : entries_) names.push_back(name);
  return names;
}

}  // namespace gantry::runtime
