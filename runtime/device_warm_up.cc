// The tiny model is written by hand (a config.json and one safetensors file
// of zeros, its head from runtime/safetensors.h) because no library at hand
// writes safetensors from C++, and a folder is what LoadModel reads: the warm-up then takes exactly the path a
// real load takes. Its shapes follow the common 8B layout where kernels pick
// by shape (head_dim 128, grouped-query attention, an untied lm_head).
#include "runtime/device_warm_up.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/internal/torch_util.h"
#include "runtime/model_runner.h"
#include "runtime/safetensors.h"

namespace gantry::runtime {
namespace {

constexpr int64_t kHidden = 512, kHeads = 4, kKvHeads = 2, kHeadDim = 128, kIntermediate = 1024, kVocab = 2048;

absl::Status WriteAll(int fd, const std::string& bytes, const std::string& path) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::InternalError(absl::StrCat("writing ", path, ": ", std::strerror(errno)));
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// `bytes`, then zeros up to `size` (a sparse tail: nothing to write).
absl::Status WriteFile(const std::string& path, const std::string& bytes, uint64_t size) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return absl::InternalError(absl::StrCat("creating ", path, ": ", std::strerror(errno)));
  absl::Status status = WriteAll(fd, bytes, path);
  if (status.ok() && size > bytes.size() && ::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    status = absl::InternalError(absl::StrCat("extending ", path, ": ", std::strerror(errno)));
  }
  ::close(fd);
  return status;
}

absl::Status WriteTinyLlama(const std::string& dir, const std::string& dtype) {
  // LoadOptions' dtype names, and the safetensors dtype the file stores.
  static const std::map<std::string, DType> kDTypes = {
      {"float32", DType::kF32}, {"bfloat16", DType::kBF16}, {"float16", DType::kF16}};
  auto stored = kDTypes.find(dtype);
  if (stored == kDTypes.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("warm-up dtype \"", dtype, "\" is not float32, bfloat16 or float16"));
  }
  const std::string type_name(DTypeName(stored->second));
  const int64_t element_bytes = DTypeSize(stored->second);
  nlohmann::json config = {
      {"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
      {"hidden_size", kHidden}, {"intermediate_size", kIntermediate},
      {"num_attention_heads", kHeads}, {"num_key_value_heads", kKvHeads}, {"head_dim", kHeadDim},
      {"num_hidden_layers", 1}, {"vocab_size", kVocab}, {"max_position_embeddings", 4096},
      {"rms_norm_eps", 1e-5}, {"rope_theta", 500000.0}, {"hidden_act", "silu"},
      {"tie_word_embeddings", false}, {"torch_dtype", dtype}, {"bos_token_id", 1}, {"eos_token_id", 2}};
  const std::vector<std::pair<std::string, std::vector<int64_t>>> tensors = {
      {"model.embed_tokens.weight", {kVocab, kHidden}},
      {"model.norm.weight", {kHidden}},
      {"lm_head.weight", {kVocab, kHidden}},
      {"model.layers.0.input_layernorm.weight", {kHidden}},
      {"model.layers.0.post_attention_layernorm.weight", {kHidden}},
      {"model.layers.0.self_attn.q_proj.weight", {kHeads * kHeadDim, kHidden}},
      {"model.layers.0.self_attn.k_proj.weight", {kKvHeads * kHeadDim, kHidden}},
      {"model.layers.0.self_attn.v_proj.weight", {kKvHeads * kHeadDim, kHidden}},
      {"model.layers.0.self_attn.o_proj.weight", {kHidden, kHeads * kHeadDim}},
      {"model.layers.0.mlp.gate_proj.weight", {kIntermediate, kHidden}},
      {"model.layers.0.mlp.up_proj.weight", {kIntermediate, kHidden}},
      {"model.layers.0.mlp.down_proj.weight", {kHidden, kIntermediate}},
  };
  nlohmann::json header = nlohmann::json::object();
  int64_t offset = 0;
  for (const auto& [name, shape] : tensors) {
    int64_t bytes = element_bytes;
    for (int64_t d : shape) bytes *= d;
    header[name] = {{"dtype", type_name}, {"shape", shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');  // data 8-byte aligned
  const std::string head = SafetensorsFileHead(header_text);
  if (auto s = WriteFile(dir + "/config.json", config.dump(2), 0); !s.ok()) return s;
  return WriteFile(dir + "/model.safetensors", head, head.size() + static_cast<uint64_t>(offset));
}

}  // namespace

absl::StatusOr<double> WarmUpDevice(const std::string& device, const std::string& dtype) {
  const auto start = std::chrono::steady_clock::now();
  const char* tmp = std::getenv("TMPDIR");
  std::string dir = absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/gantry-warm-up-XXXXXX");
  if (::mkdtemp(dir.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("creating the warm-up folder ", dir, ": ", std::strerror(errno)));
  }
  absl::Status status = WriteTinyLlama(dir, dtype);
  if (status.ok()) {
    LoadOptions options;
    options.model_dir = dir;
    options.device = device;
    options.dtype = dtype;
    options.kv_cache_bytes = 16ull << 20;
    auto runner = LoadModel(options);
    status = runner.status();
  }
  ::unlink((dir + "/config.json").c_str());
  ::unlink((dir + "/model.safetensors").c_str());
  ::rmdir(dir.c_str());
  if (!status.ok()) {
    return absl::Status(status.code(), absl::StrCat("warming up ", device, ": ", status.message()));
  }
  ReleaseCachedDeviceMemory();  // the tiny model's blocks back to the driver, out of the budget's way
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace gantry::runtime
