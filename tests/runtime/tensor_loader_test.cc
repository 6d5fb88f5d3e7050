// TensorLoader with a ByteSink (the path the staged GPU upload takes): the
// byte ranges it hands the sink are the right ones, so weights loaded through
// a sink equal a plain load bit for bit, for every decoder fixture, whole and
// as tensor-parallel shards, and every encoder fixture (dim-0 slices go through the sink, dim-1 slices and
// dtype conversions are copied); a failing sink fails the load. The sink here
// preads synchronously into CPU memory, standing in for the GPU upload.
#include <ATen/ATen.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "runtime/checkpoint.h"
#include "runtime/encoder_config.h"
#include "runtime/internal/encoder_model.h"
#include "runtime/internal/tensor_loader.h"
#include "runtime/internal/weights.h"
#include "runtime/model_config.h"
#include "tests/runtime/test_files.h"

namespace gantry::runtime {
namespace {

using ::gantry::testing::TestModelDir;

class PreadSink final : public ByteSink {
 public:
  absl::Status Enqueue(void* dst, std::vector<ByteRange> ranges) override {
    if (fail_) return absl::DataLossError("sink failed");
    char* out = static_cast<char*>(dst);
    for (const ByteRange& r : ranges) {
      uint64_t done = 0;
      while (done < r.bytes) {
        const ssize_t n = pread(r.fd, out + done, r.bytes - done, static_cast<off_t>(r.offset + done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return absl::DataLossError(absl::StrCat("short read at ", r.offset + done));
        done += static_cast<uint64_t>(n);
      }
      out += r.bytes;
      bytes_ += r.bytes;
    }
    ++enqueued_;
    return absl::OkStatus();
  }
  absl::Status Finish() override {
    ++finished_;
    return absl::OkStatus();
  }

  void set_fail(bool fail) { fail_ = fail; }
  uint64_t bytes() const { return bytes_; }
  int enqueued() const { return enqueued_; }
  int finished() const { return finished_; }

 private:
  bool fail_ = false;
  uint64_t bytes_ = 0;
  int enqueued_ = 0, finished_ = 0;
};

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

void ExpectSameTensors(const NamedTensors& expected, const NamedTensors& actual, const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  for (size_t i = 0; i < expected.size(); ++i) {
    ASSERT_EQ(actual[i].second.defined(), expected[i].second.defined()) << what << " " << expected[i].first;
    if (!expected[i].second.defined()) continue;
    EXPECT_TRUE(at::equal(actual[i].second, expected[i].second)) << what << " " << expected[i].first;
  }
}

// Every tensor of the weights, named.
std::vector<std::pair<std::string, at::Tensor>> Tensors(const ModelWeights& w) {
  std::vector<std::pair<std::string, at::Tensor>> all = {
      {"embed_tokens", w.embed_tokens}, {"final_norm", w.final_norm}, {"lm_head", w.lm_head}};
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const LayerWeights& l = w.layers[i];
    const std::string p = absl::StrCat("layer ", i, " ");
    for (const auto& [name, t] : std::vector<std::pair<std::string, at::Tensor>>{
             {"input_norm", l.input_norm}, {"qkv_proj", l.qkv_proj}, {"qkv_bias", l.qkv_bias},
             {"q_norm", l.q_norm}, {"k_norm", l.k_norm}, {"o_proj", l.o_proj}, {"o_bias", l.o_bias},
             {"post_norm", l.post_norm}, {"gate_up_proj", l.gate_up_proj}, {"gate_up_bias", l.gate_up_bias},
             {"down_proj", l.down_proj}, {"down_bias", l.down_bias}}) {
      all.emplace_back(p + name, t);
    }
  }
  return all;
}

TEST(TensorLoaderTest, WeightsThroughASinkEqualAPlainLoad) {
  for (const char* model : {"llama", "llama3", "mistral", "qwen2", "qwen3"}) {
    auto config = LoadModelConfig(TestModelDir(model));
    ASSERT_TRUE(config.ok()) << config.status();
    auto checkpoint = Checkpoint::Open(TestModelDir(model));
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
    // Loads in the files' dtype go through the sink; the other converts (copies).
    const auto* embed = (*checkpoint)->Find("model.embed_tokens.weight");
    ASSERT_NE(embed, nullptr);
    auto file_dtype = FileScalarType(*embed->info);
    ASSERT_TRUE(file_dtype.ok()) << file_dtype.status();
    for (at::ScalarType dtype : {at::kBFloat16, at::kFloat}) {
      for (const Shard& shard : {Shard{0, 1}, Shard{0, 2}, Shard{1, 2}}) {
        const std::string what = absl::StrCat(model, " ", at::toString(dtype), " rank ", shard.rank, "/", shard.size);
        auto plain = LoadWeights(**checkpoint, *config, at::kCPU, dtype, shard);
        ASSERT_TRUE(plain.ok()) << what << ": " << plain.status();
        PreadSink sink;
        auto sunk = LoadWeights(**checkpoint, *config, at::kCPU, dtype, shard, &sink);
        ASSERT_TRUE(sunk.ok()) << what << ": " << sunk.status();
        EXPECT_GE(sink.finished(), 1) << what;
        if (dtype == *file_dtype) {
          EXPECT_GT(sink.bytes(), 0u) << what;
          // Sharded o and down are column slices: copied, not sunk.
          if (shard.size == 1) EXPECT_EQ(sink.bytes(), plain->device_bytes) << what;
          if (shard.size > 1) EXPECT_LT(sink.bytes(), plain->device_bytes) << what;
        } else {
          EXPECT_EQ(sink.bytes(), 0u) << what;
        }
        EXPECT_EQ(sunk->device_bytes, plain->device_bytes) << what;
        ExpectSameTensors(Tensors(*plain), Tensors(*sunk), what);
      }
    }
  }
}

// Every tensor of an encoder's weights, named.
std::vector<std::pair<std::string, at::Tensor>> Tensors(const EncoderWeights& w) {
  std::vector<std::pair<std::string, at::Tensor>> all = {
      {"word", w.word},           {"position", w.position},     {"token_type", w.token_type},
      {"embed_norm", w.embed_norm}, {"embed_norm_bias", w.embed_norm_bias}, {"head_dense", w.head_dense},
      {"head_dense_bias", w.head_dense_bias}, {"classifier", w.classifier}, {"classifier_bias", w.classifier_bias}};
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const EncoderLayerWeights& l = w.layers[i];
    const std::string p = absl::StrCat("layer ", i, " ");
    for (const auto& [name, t] : std::vector<std::pair<std::string, at::Tensor>>{
             {"qkv", l.qkv}, {"qkv_bias", l.qkv_bias}, {"attn_out", l.attn_out}, {"attn_out_bias", l.attn_out_bias},
             {"attn_norm", l.attn_norm}, {"attn_norm_bias", l.attn_norm_bias}, {"up", l.up}, {"up_bias", l.up_bias},
             {"down", l.down}, {"down_bias", l.down_bias}, {"out_norm", l.out_norm},
             {"out_norm_bias", l.out_norm_bias}}) {
      all.emplace_back(p + name, t);
    }
  }
  return all;
}

TEST(TensorLoaderTest, EncoderWeightsThroughASinkEqualAPlainLoad) {
  uint64_t total_sunk = 0;
  for (const char* model : {"bert_embed", "bert_rerank", "xlmr_embed", "xlmr_rerank"}) {
    auto config = LoadEncoderConfig(TestModelDir(model));
    ASSERT_TRUE(config.ok()) << config.status();
    auto checkpoint = Checkpoint::Open(TestModelDir(model));
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
    for (at::ScalarType dtype : {at::kBFloat16, at::kFloat}) {
      const std::string what = absl::StrCat(model, " ", at::toString(dtype));
      auto plain = LoadEncoderWeights(**checkpoint, *config, at::kCPU, dtype);
      ASSERT_TRUE(plain.ok()) << what << ": " << plain.status();
      PreadSink sink;
      auto sunk = LoadEncoderWeights(**checkpoint, *config, at::kCPU, dtype, &sink);
      ASSERT_TRUE(sunk.ok()) << what << ": " << sunk.status();
      EXPECT_GE(sink.finished(), 1) << what;
      ExpectSameTensors(Tensors(*plain), Tensors(*sunk), what);
      total_sunk += sink.bytes();
    }
  }
  EXPECT_GT(total_sunk, 0u);  // at least one fixture's dtype is loaded as stored
}

TEST(TensorLoaderTest, AFailingSinkFailsTheLoad) {
  auto config = LoadModelConfig(TestModelDir("qwen3"));
  ASSERT_TRUE(config.ok()) << config.status();
  auto checkpoint = Checkpoint::Open(TestModelDir("qwen3"));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  PreadSink sink;
  sink.set_fail(true);
  auto weights = LoadWeights(**checkpoint, *config, at::kCPU, at::kBFloat16, Shard{}, &sink);
  ASSERT_FALSE(weights.ok());
  EXPECT_EQ(weights.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(weights.status().message(), "sink failed");
  EXPECT_GE(sink.finished(), 1);  // drained before the tensors went
}

}  // namespace
}  // namespace gantry::runtime
