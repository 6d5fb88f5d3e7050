#include "runtime/safetensors.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/checkpoint.h"
#include "tests/runtime/test_files.h"

namespace gantry::runtime {
namespace {

using ::gantry::testing::MakeTempDir;
using ::gantry::testing::SafetensorsBytes;
using ::gantry::testing::WriteFile;
using ::testing::HasSubstr;

absl::StatusOr<std::unique_ptr<SafetensorsFile>> OpenBytes(const std::string& name,
                                                           const std::string& bytes) {
  std::string path = MakeTempDir("safetensors_" + name) + "/model.safetensors";
  WriteFile(path, bytes);
  return SafetensorsFile::Open(path);
}

TEST(SafetensorsTest, ReadsTensorsAndMetadata) {
  float values[3] = {1.5f, -2.0f, 3.25f};
  std::string data(reinterpret_cast<const char*>(values), sizeof(values));
  data += std::string(4, '\x7f');  // an I8 tensor of 4 bytes
  auto file = OpenBytes("ok", SafetensorsBytes(
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"I8","shape":[2,2],"data_offsets":[12,16]},)"
      R"("a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})", data));
  ASSERT_TRUE(file.ok()) << file.status();
  const auto& header = (*file)->header();
  ASSERT_EQ(header.tensors.size(), 2u);
  EXPECT_EQ(header.metadata.at("format"), "pt");
  const TensorInfo* a = (*file)->Find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->dtype, DType::kF32);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{3}));
  const float* mapped = static_cast<const float*>((*file)->Data(*a));
  EXPECT_EQ(mapped[2], 3.25f);
  EXPECT_EQ((*file)->Find("b")->NumElements(), 4);
  EXPECT_EQ((*file)->Find("missing"), nullptr);
}

// Each kind of corruption gets its own error, naming what is wrong.
struct Corruption {
  std::string name;
  std::string bytes;
  std::string message;
};

std::string LengthPastEnd() {
  std::string bytes = SafetensorsBytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", "abcd");
  bytes[0] = static_cast<char>(0xff);  // claim a header of 0x7fff bytes
  bytes[1] = static_cast<char>(0x7f);
  return bytes;
}

std::vector<Corruption> Corruptions() {
  return {
      {"truncated", std::string("\x10\x00\x00", 3), "truncated safetensors file: 3 bytes"},
      {"header_length_past_end", LengthPastEnd(), "runs past the end of the file"},
      {"malformed_json", SafetensorsBytes(R"({"a": {"dtype": "F32", )", ""), "not well-formed JSON"},
      // Offsets promise 16 bytes; the file holds 8.
      {"short_data",
       SafetensorsBytes(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", std::string(8, '\0')),
       "tensor \"a\": data_offsets [0, 16] run past the data section of 8 bytes"},
      {"overlap",
       SafetensorsBytes(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("y":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                        std::string(12, '\0')),
       "tensors \"x\" [0, 8) and \"y\" [4, 12) overlap"},
      // BF16 [3] needs 6 bytes, not 12.
      {"dtype_size",
       SafetensorsBytes(R"({"w":{"dtype":"BF16","shape":[3],"data_offsets":[0,12]}})", std::string(12, '\0')),
       "tensor \"w\": holds 12 bytes but dtype BF16 and shape [3] need 6"},
      {"unknown_dtype",
       SafetensorsBytes(R"({"w":{"dtype":"F13","shape":[1],"data_offsets":[0,2]}})", std::string(2, '\0')),
       "unknown dtype \"F13\""},
      {"negative_shape",
       SafetensorsBytes(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", std::string(4, '\0')),
       "not a non-negative integer"},
  };
}

class CorruptionTest : public ::testing::TestWithParam<Corruption> {};

TEST_P(CorruptionTest, FailsWithItsOwnMessage) {
  auto file = OpenBytes(GetParam().name, GetParam().bytes);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(file.status().message(), HasSubstr(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(Files, CorruptionTest, ::testing::ValuesIn(Corruptions()),
                         [](const auto& info) { return info.param.name; });

TEST(SafetensorsTest, MissingFileIsNotFound) {
  auto file = SafetensorsFile::Open("/nonexistent/model.safetensors");
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
}

TEST(CheckpointTest, ShardedIndexMustMatchShards) {
  std::string dir = MakeTempDir("sharded_bad");
  std::string data(4, '\0');
  WriteFile(dir + "/a.safetensors",
            SafetensorsBytes(R"({"t1":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", data));
  WriteFile(dir + "/b.safetensors",
            SafetensorsBytes(R"({"t2":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", data));
  WriteFile(dir + "/model.safetensors.index.json",
            R"({"weight_map":{"t1":"a.safetensors","t2":"a.safetensors"}})");
  auto checkpoint = Checkpoint::Open(dir);
  ASSERT_FALSE(checkpoint.ok());
  EXPECT_THAT(checkpoint.status().message(), HasSubstr("places \"t2\" in a.safetensors, which lacks it"));

  WriteFile(dir + "/model.safetensors.index.json",
            R"({"weight_map":{"t1":"a.safetensors","t2":"c.safetensors"}})");
  checkpoint = Checkpoint::Open(dir);
  ASSERT_FALSE(checkpoint.ok());
  EXPECT_THAT(checkpoint.status().message(), HasSubstr("shard c.safetensors listed in"));

  WriteFile(dir + "/model.safetensors.index.json",
            R"({"weight_map":{"t1":"a.safetensors","t2":"b.safetensors"}})");
  checkpoint = Checkpoint::Open(dir);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ((*checkpoint)->Names(), (std::vector<std::string>{"t1", "t2"}));
  auto bytes = CheckpointTensorBytes(dir);
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(*bytes, 8u);
}

TEST(CheckpointTest, EmptyFolderSaysWhatIsMissing) {
  auto checkpoint = Checkpoint::Open(MakeTempDir("empty_model"));
  ASSERT_FALSE(checkpoint.ok());
  EXPECT_THAT(checkpoint.status().message(),
              HasSubstr("neither model.safetensors nor model.safetensors.index.json"));
}

}  // namespace
}  // namespace gantry::runtime
