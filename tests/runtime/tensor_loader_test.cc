// TensorLoader with a ByteSink (the path the staged GPU upload takes): the
// byte ranges it hands the sink are the right ones, so weights loaded through
// a sink equal a plain load bit for bit, for every decoder fixture, whole and
// as tensor-parallel shards, and every encoder fixture (dim-0 slices go through the sink, dim-1 slices and
// dtype conversions are copied); a failing sink fails the load. The sink here
// preads synchronously into CPU memory, standing in for the GPU upload.
// ByteSinkPool lends a sink to one load at a time and drops a failed one. On
// a CUDA build with a GPU, the real staged upload gives the same weights as a
// plain load, and a load that failed in it leaves the next one unharmed.
#include <ATen/ATen.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/checkpoint.h"
#include "runtime/encoder_config.h"
#include "runtime/internal/byte_sink_pool.h"
#include "runtime/internal/encoder_model.h"
#include "runtime/internal/staged_upload_sink.h"
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

// A decoder fixture's config and checkpoint, and the dtype its tensors are stored in.
struct OpenedModel {
  ModelConfig config;
  std::unique_ptr<Checkpoint> checkpoint;
  at::ScalarType file_dtype = at::kFloat;
};

absl::StatusOr<OpenedModel> OpenModel(const std::string& dir) {
  OpenedModel opened;
  auto config = LoadModelConfig(dir);
  if (!config.ok()) return config.status();
  opened.config = *std::move(config);
  auto checkpoint = Checkpoint::Open(dir);
  if (!checkpoint.ok()) return checkpoint.status();
  opened.checkpoint = *std::move(checkpoint);
  const auto* embed = opened.checkpoint->Find("model.embed_tokens.weight");
  if (embed == nullptr) return absl::NotFoundError("model.embed_tokens.weight");
  auto file_dtype = FileScalarType(*embed->info);
  if (!file_dtype.ok()) return file_dtype.status();
  opened.file_dtype = *file_dtype;
  return opened;
}

TEST(TensorLoaderTest, WeightsThroughASinkEqualAPlainLoad) {
  for (const char* model : {"llama", "llama3", "mistral", "qwen2", "qwen3"}) {
    auto opened = OpenModel(TestModelDir(model));
    ASSERT_TRUE(opened.ok()) << opened.status();
    // Loads in the files' dtype go through the sink; the other converts (copies).
    for (at::ScalarType dtype : {at::kBFloat16, at::kFloat}) {
      for (const Shard& shard : {Shard{0, 1}, Shard{0, 2}, Shard{1, 2}}) {
        const std::string what = absl::StrCat(model, " ", at::toString(dtype), " rank ", shard.rank, "/", shard.size);
        auto plain = LoadWeights(*opened->checkpoint, opened->config, at::kCPU, dtype, shard);
        ASSERT_TRUE(plain.ok()) << what << ": " << plain.status();
        PreadSink sink;
        auto sunk = LoadWeights(*opened->checkpoint, opened->config, at::kCPU, dtype, shard, &sink);
        ASSERT_TRUE(sunk.ok()) << what << ": " << sunk.status();
        EXPECT_GE(sink.finished(), 1) << what;
        if (dtype == opened->file_dtype) {
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

// A sink that counts what its pool did to it.
class CountingSink final : public ByteSink {
 public:
  explicit CountingSink(int* alive) : alive_(alive) { ++*alive_; }
  ~CountingSink() override { --*alive_; }
  absl::Status Enqueue(void* dst, std::vector<ByteRange> ranges) override {
    if (dst == nullptr) return absl::InvalidArgumentError("null dst");
    ++queued_;
    return absl::OkStatus();
  }
  absl::Status Finish() override {
    ++finishes_;
    queued_ = 0;
    if (fail_next_finish_) return absl::DataLossError("short read");
    return absl::OkStatus();
  }
  bool fail_next_finish_ = false;
  int queued_ = 0;
  int finishes_ = 0;

 private:
  int* alive_;
};

struct CountingPool {
  int alive = 0;
  std::vector<CountingSink*> made;
  ByteSinkPool pool{[this]() -> absl::StatusOr<std::unique_ptr<ByteSink>> {
                      auto sink = std::make_unique<CountingSink>(&alive);
                      made.push_back(sink.get());
                      return std::unique_ptr<ByteSink>(std::move(sink));
                    },
                    /*max_idle=*/1};
};

TEST(ByteSinkPoolTest, AHealthySinkServesTheNextLoad) {
  CountingPool p;
  for (int load = 0; load < 3; ++load) {
    auto sink = p.pool.Lease();
    ASSERT_TRUE(sink.ok()) << sink.status();
    char byte;
    ASSERT_TRUE((*sink)->Enqueue(&byte, {}).ok());
    ASSERT_TRUE((*sink)->Finish().ok());
  }
  EXPECT_EQ(p.pool.created(), 1);
  EXPECT_EQ(p.pool.idle(), 1);
  EXPECT_EQ(p.alive, 1);
}

TEST(ByteSinkPoolTest, AFailedSinkIsDroppedAndTheNextLoadGetsANewOne) {
  CountingPool p;
  {
    auto sink = p.pool.Lease();
    ASSERT_TRUE(sink.ok());
    p.made.back()->fail_next_finish_ = true;
    EXPECT_EQ((*sink)->Finish().code(), absl::StatusCode::kDataLoss);
  }
  EXPECT_EQ(p.pool.idle(), 0);
  EXPECT_EQ(p.alive, 0);  // the failed one is freed
  auto next = p.pool.Lease();
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(p.pool.created(), 2);
  EXPECT_TRUE((*next)->Finish().ok());
}

TEST(ByteSinkPoolTest, AnArgumentErrorLeavesTheSinkUsable) {
  CountingPool p;
  {
    auto sink = p.pool.Lease();
    ASSERT_TRUE(sink.ok());
    EXPECT_EQ((*sink)->Enqueue(nullptr, {}).code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE((*sink)->Finish().ok());
  }
  EXPECT_EQ(p.pool.idle(), 1);
}

TEST(ByteSinkPoolTest, AnUnfinishedLoadIsFinishedBeforeItsSinkIsReused) {
  CountingPool p;
  {
    auto sink = p.pool.Lease();
    ASSERT_TRUE(sink.ok());
    char byte;
    ASSERT_TRUE((*sink)->Enqueue(&byte, {}).ok());
    // the load gave up here (say a later tensor's shape was wrong)
  }
  ASSERT_EQ(p.made.size(), 1u);
  EXPECT_EQ(p.made[0]->finishes_, 1);
  EXPECT_EQ(p.made[0]->queued_, 0);
  EXPECT_EQ(p.pool.idle(), 1);
  // An unfinished load whose drain fails is dropped.
  {
    auto sink = p.pool.Lease();
    char byte;
    ASSERT_TRUE((*sink)->Enqueue(&byte, {}).ok());
    p.made[0]->fail_next_finish_ = true;
  }
  EXPECT_EQ(p.pool.idle(), 0);
  EXPECT_EQ(p.alive, 0);
}

TEST(ByteSinkPoolTest, LoadsAtOnceGetSinksOfTheirOwnAndTheSurplusIsFreed) {
  CountingPool p;
  {
    auto a = p.pool.Lease();
    auto b = p.pool.Lease();
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_NE(p.made[0], p.made[1]);
    EXPECT_EQ(p.alive, 2);
  }
  EXPECT_EQ(p.pool.idle(), 1);  // max_idle
  EXPECT_EQ(p.alive, 1);
}

TEST(ByteSinkPoolTest, AFactoryErrorIsTheLeaseError) {
  ByteSinkPool pool([]() -> absl::StatusOr<std::unique_ptr<ByteSink>> { return absl::ResourceExhaustedError("pin"); },
                    1);
  auto sink = pool.Lease();
  EXPECT_EQ(sink.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(pool.created(), 0);
}

TEST(TensorLoaderTest, StagedUploadOnlyWhenAskedAndOnCuda) {
  auto off = StagedUploadSinkFor(at::Device(at::kCUDA, 0), /*staged=*/false);
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_EQ(*off, nullptr);
  auto cpu = StagedUploadSinkFor(at::Device(at::kCPU), /*staged=*/true);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_EQ(*cpu, nullptr);
}

// The real staged upload on a GPU (skipped elsewhere).
absl::StatusOr<std::unique_ptr<ByteSink>> CudaSinkOrSkip() {
  if (!at::hasCUDA()) return absl::UnavailableError("no CUDA");
  auto sink = StagedUploadSinkFor(at::Device(at::kCUDA, 0), /*staged=*/true);
  if (!sink.ok()) return sink.status();
  if (*sink == nullptr) return absl::UnavailableError("built without Gantry's CUDA kernels");
  return sink;
}

TEST(TensorLoaderTest, CudaStagedUploadEqualsAPlainLoad) {
  {
    auto probe = CudaSinkOrSkip();
    if (absl::IsUnavailable(probe.status())) GTEST_SKIP() << probe.status();
  }
  const at::Device cuda(at::kCUDA, 0);
  for (const char* model : {"llama", "qwen3"}) {
    auto opened = OpenModel(TestModelDir(model));
    ASSERT_TRUE(opened.ok()) << opened.status();
    for (const Shard& shard : {Shard{0, 1}, Shard{1, 2}}) {
      const std::string what = absl::StrCat(model, " rank ", shard.rank, "/", shard.size);
      auto plain = LoadWeights(*opened->checkpoint, opened->config, cuda, opened->file_dtype, shard);
      ASSERT_TRUE(plain.ok()) << what << ": " << plain.status();
      auto sink = CudaSinkOrSkip();
      ASSERT_TRUE(sink.ok()) << sink.status();
      auto staged = LoadWeights(*opened->checkpoint, opened->config, cuda, opened->file_dtype, shard, sink->get());
      ASSERT_TRUE(staged.ok()) << what << ": " << staged.status();
      ExpectSameTensors(Tensors(*plain), Tensors(*staged), what);
    }
  }
}

TEST(TensorLoaderTest, CudaStagedUploadRecoversFromAFailedLoad) {
  {
    auto probe = CudaSinkOrSkip();
    if (absl::IsUnavailable(probe.status())) GTEST_SKIP() << probe.status();
  }
  const at::Device cuda(at::kCUDA, 0);
  // A copy of a fixture whose shard is cut short after it was opened: the
  // staged reads come up short. POSIX calls, not std::filesystem: this
  // binary links LibTorch directly, and the CUDA wheel's libtorch.so exports
  // std::filesystem symbols of its own that crash when called from here.
  std::string dir = ::testing::TempDir() + "staged_upload_cut_XXXXXX";
  ASSERT_NE(mkdtemp(dir.data()), nullptr) << dir;
  for (const char* name : {"config.json", "model.safetensors"}) {
    std::ifstream in(TestModelDir("qwen3") + "/" + name, std::ios::binary);
    std::ofstream out(dir + "/" + name, std::ios::binary);
    out << in.rdbuf();
    ASSERT_TRUE(out.good()) << name;
  }
  auto opened = OpenModel(dir);
  ASSERT_TRUE(opened.ok()) << opened.status();
  const std::string shard = dir + "/model.safetensors";
  struct stat st {};
  ASSERT_EQ(stat(shard.c_str(), &st), 0);
  ASSERT_EQ(truncate(shard.c_str(), st.st_size / 2), 0);
  {
    auto sink = CudaSinkOrSkip();
    ASSERT_TRUE(sink.ok()) << sink.status();
    auto weights = LoadWeights(*opened->checkpoint, opened->config, cuda, opened->file_dtype, Shard{}, sink->get());
    ASSERT_FALSE(weights.ok());
    EXPECT_THAT(std::string(weights.status().message()), ::testing::HasSubstr("ends at offset")) << weights.status();
  }
  // The next load through the device's sink is whole.
  auto checkpoint = Checkpoint::Open(TestModelDir("qwen3"));
  ASSERT_TRUE(checkpoint.ok());
  auto plain = LoadWeights(**checkpoint, opened->config, cuda, opened->file_dtype, Shard{});
  ASSERT_TRUE(plain.ok()) << plain.status();
  auto sink = CudaSinkOrSkip();
  ASSERT_TRUE(sink.ok()) << sink.status();
  auto staged = LoadWeights(**checkpoint, opened->config, cuda, opened->file_dtype, Shard{}, sink->get());
  ASSERT_TRUE(staged.ok()) << staged.status();
  ExpectSameTensors(Tensors(*plain), Tensors(*staged), "after a failed load");
  unlink(shard.c_str());
  unlink((dir + "/config.json").c_str());
  rmdir(dir.c_str());
}

}  // namespace
}  // namespace gantry::runtime
