#include "runtime/model_config.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gantry::runtime {
namespace {

using ::testing::HasSubstr;

constexpr char kLlama31[] = R"({
  "architectures": ["LlamaForCausalLM"], "vocab_size": 128256, "hidden_size": 4096,
  "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
  "num_key_value_heads": 8, "max_position_embeddings": 131072, "rms_norm_eps": 1e-05,
  "rope_theta": 500000.0, "torch_dtype": "bfloat16", "hidden_act": "silu",
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "eos_token_id": 128001, "bos_token_id": 128000})";

TEST(ModelConfigTest, ParsesLlama31) {
  auto config = ParseModelConfig(kLlama31, R"({"eos_token_id": [128001, 128008, 128009]})", "m");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->architecture, Architecture::kLlama);
  EXPECT_EQ(config->head_dim, 128);
  EXPECT_EQ(config->num_kv_heads, 8);
  EXPECT_EQ(config->rope.type, "llama3");
  EXPECT_DOUBLE_EQ(config->rope.theta, 500000.0);
  EXPECT_EQ(config->rope.original_max_position_embeddings, 8192);
  EXPECT_EQ(config->dtype, "bfloat16");
  EXPECT_EQ(config->eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_EQ(config->bos_token_id, 128000);
  EXPECT_FALSE(config->qkv_bias);
}

TEST(ModelConfigTest, ParsesTransformers5RopeParameters) {
  auto config = ParseModelConfig(R"({
    "architectures": ["Qwen3ForCausalLM"], "vocab_size": 10, "hidden_size": 8,
    "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
    "num_key_value_heads": 1, "head_dim": 8, "dtype": "float32",
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}})", "", "m");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->qk_norm);
  EXPECT_EQ(config->head_dim, 8);
  EXPECT_DOUBLE_EQ(config->rope.theta, 1000000.0);
}

TEST(ModelConfigTest, Qwen2HasQkvBias) {
  auto config = ParseModelConfig(R"({
    "architectures": ["Qwen2ForCausalLM"], "vocab_size": 10, "hidden_size": 8,
    "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
    "sliding_window": 4, "use_sliding_window": false})", "", "m");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->qkv_bias);
  EXPECT_FALSE(config->o_bias);
  EXPECT_EQ(config->sliding_window, 0);
}

TEST(ModelConfigTest, UnsupportedArchitectureListsSupported) {
  auto config = ParseModelConfig(R"({"architectures": ["GPT2LMHeadModel"]})", "", "/models/gpt2");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(config.status().message(), HasSubstr("architecture \"GPT2LMHeadModel\" is not supported"));
  EXPECT_THAT(config.status().message(),
              HasSubstr("LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM"));
}

TEST(ModelConfigTest, BadValuesNameTheKey) {
  auto missing = ParseModelConfig(R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 10})", "", "m");
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("missing required key \"hidden_size\""));

  auto heads = ParseModelConfig(R"({
    "architectures": ["LlamaForCausalLM"], "vocab_size": 10, "hidden_size": 12,
    "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 3,
    "num_key_value_heads": 2})", "", "m");
  ASSERT_FALSE(heads.ok());
  EXPECT_THAT(heads.status().message(), HasSubstr("must be a multiple of num_key_value_heads (2)"));

  auto rope = ParseModelConfig(R"({
    "architectures": ["LlamaForCausalLM"], "vocab_size": 10, "hidden_size": 8,
    "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
    "rope_scaling": {"type": "yarn", "factor": 4.0}})", "", "m");
  ASSERT_FALSE(rope.ok());
  EXPECT_THAT(rope.status().message(), HasSubstr("rope scaling type \"yarn\" is not supported"));

  auto act = ParseModelConfig(R"({
    "architectures": ["LlamaForCausalLM"], "vocab_size": 10, "hidden_size": 8,
    "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
    "hidden_act": "gelu"})", "", "m");
  ASSERT_FALSE(act.ok());
  EXPECT_THAT(act.status().message(), HasSubstr("hidden_act \"gelu\""));
}

}  // namespace
}  // namespace gantry::runtime
