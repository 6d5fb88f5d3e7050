// Encoder models (BERT, XLM-R, their cross-encoder heads): config parsing,
// task detection from sentence-transformers folders, and the runner checked
// against a plain double-precision reference of the same maths on a random
// checkpoint written here, including inputs padded inside larger batches.
// The transformers-made fixtures (tests/models/*_embed, *_rerank) are
// checked in encoder_fixture_test.cc.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/encoder_config.h"
#include "runtime/encoder_runner.h"
#include "runtime/model_task.h"
#include "tests/runtime/test_files.h"

namespace gantry::runtime {
namespace {

using ::gantry::testing::MakeTempDir;
using ::gantry::testing::SafetensorsBytes;
using ::gantry::testing::WriteFile;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;

constexpr char kBgeM3Config[] = R"({
  "architectures": ["XLMRobertaModel"], "vocab_size": 250002, "hidden_size": 1024,
  "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
  "max_position_embeddings": 8194, "type_vocab_size": 1, "pad_token_id": 1,
  "layer_norm_eps": 1e-05, "hidden_act": "gelu", "position_embedding_type": "absolute",
  "torch_dtype": "float32"})";

TEST(EncoderConfigTest, ParsesBgeM3) {
  auto config = ParseEncoderConfig(kBgeM3Config, "bge-m3");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->architecture, EncoderArchitecture::kRoberta);
  EXPECT_EQ(config->head, EncoderHead::kNone);
  EXPECT_EQ(config->position_offset(), 2);
  EXPECT_EQ(config->max_tokens(), 8192);
  EXPECT_EQ(config->output_size(), 1024);
  EXPECT_DOUBLE_EQ(config->layer_norm_eps, 1e-5);
}

TEST(EncoderConfigTest, ClassifierLabelsComeFromId2Label) {
  auto config = ParseEncoderConfig(R"({"architectures": ["BertForSequenceClassification"], "vocab_size": 100,
    "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
    "id2label": {"0": "LABEL_0"}})", "m");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->head, EncoderHead::kBertClassifier);
  EXPECT_EQ(config->num_labels, 1);
  EXPECT_EQ(config->output_size(), 1);
  EXPECT_EQ(config->max_tokens(), 512);  // BERT: positions from 0
}

TEST(EncoderConfigTest, RejectsWhatItCannotRun) {
  const std::string base = R"("vocab_size": 100, "hidden_size": 8, "intermediate_size": 16,
    "num_hidden_layers": 1, "num_attention_heads": 2)";
  auto relative = ParseEncoderConfig(absl::StrCat(R"({"architectures": ["BertModel"], )", base,
                                                  R"(, "position_embedding_type": "relative_key"})"), "m");
  EXPECT_EQ(relative.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(relative.status().message(), HasSubstr("relative_key"));
  auto act = ParseEncoderConfig(absl::StrCat(R"({"architectures": ["BertModel"], )", base,
                                             R"(, "hidden_act": "swish"})"), "m");
  EXPECT_THAT(act.status().message(), HasSubstr("swish"));
  auto heads = ParseEncoderConfig(R"({"architectures": ["BertModel"], "vocab_size": 100, "hidden_size": 9,
    "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2})", "m");
  EXPECT_THAT(heads.status().message(), HasSubstr("not a multiple of num_attention_heads"));
  auto llama = ParseEncoderConfig(R"({"architectures": ["LlamaForCausalLM"]})", "m");
  EXPECT_EQ(llama.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(llama.status().message(), HasSubstr("XLMRobertaModel"));
}

// A model folder with the given config.json and sentence-transformers files.
std::string WriteFolder(const std::string& name, const Json& config, const std::vector<std::pair<std::string, std::string>>& files) {
  const std::string dir = MakeTempDir(name);
  WriteFile(dir + "/config.json", config.dump());
  for (const auto& [path, text] : files) {
    const auto slash = path.rfind('/');
    if (slash != std::string::npos) std::filesystem::create_directories(dir + "/" + path.substr(0, slash));
    WriteFile(dir + "/" + path, text);
  }
  return dir;
}

const char kModules[] = R"([
  {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
  {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
  {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}])";

TEST(ModelTaskTest, ReadsSentenceTransformersFolders) {
  const std::string dir = WriteFolder(
      "st_mean", Json::parse(kBgeM3Config),
      {{"modules.json", kModules},
       {"1_Pooling/config.json", R"({"word_embedding_dimension": 1024, "pooling_mode_cls_token": false,
                                     "pooling_mode_mean_tokens": true, "include_prompt": true})"},
       {"sentence_bert_config.json", R"({"max_seq_length": 8192, "do_lower_case": false})"},
       {"config_sentence_transformers.json",
        R"({"prompts": {"query": "query: ", "document": ""}, "default_prompt_name": "document"})"}});
  auto info = DetectModelTask(dir);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->task, ModelTask::kEmbed);
  EXPECT_EQ(info->embedding.pooling, Pooling::kMean);
  EXPECT_TRUE(info->embedding.normalize);
  EXPECT_EQ(info->embedding.max_seq_length, 8192);
  EXPECT_EQ(info->embedding.prompts.at("query"), "query: ");
  EXPECT_EQ(info->embedding.default_prompt_name, "document");
  EXPECT_EQ(info->embedding.source, "sentence-transformers");
}

TEST(ModelTaskTest, WithoutModulesJsonAnEncoderPoolsClsAndNormalizes) {
  auto info = DetectModelTask(WriteFolder("bare", Json::parse(kBgeM3Config), {}));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->task, ModelTask::kEmbed);
  EXPECT_EQ(info->embedding.pooling, Pooling::kCls);
  EXPECT_TRUE(info->embedding.normalize);
  EXPECT_EQ(info->embedding.source, "default");
}

TEST(ModelTaskTest, TaskFollowsTheArchitectureAndOverridesMustAgree) {
  Json classifier = Json::parse(kBgeM3Config);
  classifier["architectures"] = {"XLMRobertaForSequenceClassification"};
  auto rerank = DetectModelTask(WriteFolder("xenc", classifier, {}));
  ASSERT_TRUE(rerank.ok()) << rerank.status();
  EXPECT_EQ(rerank->task, ModelTask::kRerank);
  auto wrong = DetectModelTask(WriteFolder("xenc2", classifier, {}), ModelTask::kEmbed);
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(wrong.status().message(), HasSubstr("task embed is not what XLMRobertaForSequenceClassification serves"));
  auto llama = DetectModelTask(WriteFolder("llama", Json{{"architectures", {"LlamaForCausalLM"}}}, {}));
  ASSERT_TRUE(llama.ok());
  EXPECT_EQ(llama->task, ModelTask::kGenerate);
  EXPECT_FALSE(llama->decoder_rerank);
  // A causal LM may be asked to rerank (as Qwen3-Reranker), not to embed.
  auto judge = DetectModelTask(WriteFolder("judge", Json{{"architectures", {"Qwen3ForCausalLM"}}}, {}), ModelTask::kRerank);
  ASSERT_TRUE(judge.ok()) << judge.status();
  EXPECT_EQ(judge->task, ModelTask::kRerank);
  EXPECT_TRUE(judge->decoder_rerank);
  auto embed = DetectModelTask(WriteFolder("judge2", Json{{"architectures", {"Qwen3ForCausalLM"}}}, {}), ModelTask::kEmbed);
  EXPECT_THAT(embed.status().message(), HasSubstr("task embed is not what Qwen3ForCausalLM serves (generate)"));
  EXPECT_EQ(ParseModelTask("rerank").value(), ModelTask::kRerank);
  EXPECT_THAT(ParseModelTask("classify").status().message(), HasSubstr("generate, embed, rerank"));
}

TEST(ModelTaskTest, UnsupportedModulesAndPoolingAreNamed) {
  const Json config = Json::parse(kBgeM3Config);
  auto dense = DetectModelTask(WriteFolder(
      "dense", config,
      {{"modules.json", R"([{"path": "", "type": "sentence_transformers.models.Transformer"},
                            {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                            {"path": "2_Dense", "type": "sentence_transformers.models.Dense"}])"},
       {"1_Pooling/config.json", R"({"pooling_mode_cls_token": true})"}}));
  EXPECT_EQ(dense.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(dense.status().message(), HasSubstr("sentence_transformers.models.Dense"));
  auto max = DetectModelTask(WriteFolder(
      "max", config, {{"modules.json", kModules}, {"1_Pooling/config.json", R"({"pooling_mode_max_tokens": true})"}}));
  EXPECT_THAT(max.status().message(), HasSubstr("pooling_mode_max_tokens"));
  auto escape = DetectModelTask(WriteFolder(
      "escape", config, {{"modules.json", R"([{"path": "", "type": "sentence_transformers.models.Transformer"},
                                             {"path": "../x", "type": "sentence_transformers.models.Pooling"}])"}}));
  EXPECT_THAT(escape.status().message(), HasSubstr("leaves the folder"));
}

// ---------------------------------------------------------------------------
// The runner against a double-precision reference.

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> values;
};

// A tiny random encoder written as a safetensors folder; `weights` keeps the
// values for the reference.
struct TinyEncoder {
  Json config;
  std::map<std::string, Tensor> weights;
  std::string prefix;  // "", "bert." or "roberta."

  const std::vector<float>& W(const std::string& name) const { return weights.at(name).values; }
};

TinyEncoder MakeTinyEncoder(const std::string& architecture, uint32_t seed) {
  TinyEncoder model;
  const bool roberta = architecture.find("Roberta") != std::string::npos;
  const int64_t vocab = 40, hidden = 16, inter = 24, layers = 2, positions = 20, types = roberta ? 1 : 2;
  model.config = {{"architectures", {architecture}},
                  {"vocab_size", vocab},
                  {"hidden_size", hidden},
                  {"intermediate_size", inter},
                  {"num_hidden_layers", layers},
                  {"num_attention_heads", 4},
                  {"max_position_embeddings", positions},
                  {"type_vocab_size", types},
                  {"pad_token_id", roberta ? 1 : 0},
                  {"layer_norm_eps", 1e-5},
                  {"hidden_act", "gelu"},
                  {"torch_dtype", "float32"},
                  {"id2label", {{"0", "LABEL_0"}}}};
  const bool classifier = architecture.find("Classification") != std::string::npos;
  model.prefix = classifier ? (roberta ? "roberta." : "bert.") : "";
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.4f);
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float base = 0.0f) {
    Tensor t{shape, {}};
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    for (int64_t i = 0; i < n; ++i) t.values.push_back(base + normal(rng));
    model.weights[name] = std::move(t);
  };
  const std::string& p = model.prefix;
  add(p + "embeddings.word_embeddings.weight", {vocab, hidden});
  add(p + "embeddings.position_embeddings.weight", {positions, hidden});
  add(p + "embeddings.token_type_embeddings.weight", {types, hidden});
  add(p + "embeddings.LayerNorm.weight", {hidden}, 1.0f);
  add(p + "embeddings.LayerNorm.bias", {hidden});
  for (int64_t i = 0; i < layers; ++i) {
    const std::string l = p + "encoder.layer." + std::to_string(i) + ".";
    for (const char* part : {"query", "key", "value"}) {
      add(l + "attention.self." + part + ".weight", {hidden, hidden});
      add(l + "attention.self." + part + ".bias", {hidden});
    }
    add(l + "attention.output.dense.weight", {hidden, hidden});
    add(l + "attention.output.dense.bias", {hidden});
    add(l + "attention.output.LayerNorm.weight", {hidden}, 1.0f);
    add(l + "attention.output.LayerNorm.bias", {hidden});
    add(l + "intermediate.dense.weight", {inter, hidden});
    add(l + "intermediate.dense.bias", {inter});
    add(l + "output.dense.weight", {hidden, inter});
    add(l + "output.dense.bias", {hidden});
    add(l + "output.LayerNorm.weight", {hidden}, 1.0f);
    add(l + "output.LayerNorm.bias", {hidden});
  }
  // A pooler the bare encoder must ignore, and the classifier heads.
  add(p + "pooler.dense.weight", {hidden, hidden});
  add(p + "pooler.dense.bias", {hidden});
  if (classifier && !roberta) {
    add("classifier.weight", {1, hidden});
    add("classifier.bias", {1});
  } else if (classifier) {
    model.weights.erase(p + "pooler.dense.weight");
    model.weights.erase(p + "pooler.dense.bias");
    add("classifier.dense.weight", {hidden, hidden});
    add("classifier.dense.bias", {hidden});
    add("classifier.out_proj.weight", {1, hidden});
    add("classifier.out_proj.bias", {1});
  }
  return model;
}

std::string WriteTinyEncoder(const TinyEncoder& model, const std::string& name,
                             const std::vector<std::pair<std::string, std::string>>& files = {}) {
  Json header = Json::object();
  std::string data;
  for (const auto& [tensor_name, tensor] : model.weights) {
    const size_t begin = data.size();
    data.append(reinterpret_cast<const char*>(tensor.values.data()), tensor.values.size() * sizeof(float));
    header[tensor_name] = {{"dtype", "F32"}, {"shape", tensor.shape}, {"data_offsets", {begin, data.size()}}};
  }
  const std::string dir = WriteFolder(name, model.config, files);
  WriteFile(dir + "/model.safetensors", SafetensorsBytes(header.dump(), data));
  return dir;
}

using Matrix = std::vector<std::vector<double>>;  // [rows][columns]

// y = x W^T + b for W [out, in] stored row-major.
Matrix Linear(const Matrix& x, const std::vector<float>& w, const std::vector<float>& b) {
  const size_t out = b.size(), in = x[0].size();
  Matrix y(x.size(), std::vector<double>(out));
  for (size_t r = 0; r < x.size(); ++r) {
    for (size_t o = 0; o < out; ++o) {
      double sum = b[o];
      for (size_t i = 0; i < in; ++i) sum += x[r][i] * w[o * in + i];
      y[r][o] = sum;
    }
  }
  return y;
}

void LayerNorm(Matrix& x, const std::vector<float>& w, const std::vector<float>& b, double eps) {
  for (auto& row : x) {
    double mean = 0, var = 0;
    for (double v : row) mean += v;
    mean /= row.size();
    for (double v : row) var += (v - mean) * (v - mean);
    var /= row.size();
    for (size_t i = 0; i < row.size(); ++i) row[i] = (row[i] - mean) / std::sqrt(var + eps) * w[i] + b[i];
  }
}

// One input through the encoder: [tokens][hidden] last hidden states.
Matrix ReferenceHidden(const TinyEncoder& m, const std::vector<int32_t>& tokens, const std::vector<int32_t>& types) {
  const auto& c = m.config;
  const int64_t hidden = c["hidden_size"], heads = c["num_attention_heads"], layers = c["num_hidden_layers"];
  const int64_t head_dim = hidden / heads;
  const bool roberta = m.config["architectures"][0].get<std::string>().find("Roberta") != std::string::npos;
  const int64_t offset = roberta ? c["pad_token_id"].get<int64_t>() + 1 : 0;
  const std::string& p = m.prefix;
  const size_t n = tokens.size();
  Matrix x(n, std::vector<double>(hidden));
  for (size_t t = 0; t < n; ++t) {
    for (int64_t i = 0; i < hidden; ++i) {
      x[t][i] = m.W(p + "embeddings.word_embeddings.weight")[tokens[t] * hidden + i] +
                m.W(p + "embeddings.position_embeddings.weight")[(t + offset) * hidden + i] +
                m.W(p + "embeddings.token_type_embeddings.weight")[(types.empty() ? 0 : types[t]) * hidden + i];
    }
  }
  LayerNorm(x, m.W(p + "embeddings.LayerNorm.weight"), m.W(p + "embeddings.LayerNorm.bias"), 1e-5);
  for (int64_t l = 0; l < layers; ++l) {
    const std::string pre = p + "encoder.layer." + std::to_string(l) + ".";
    auto proj = [&](const char* part) {
      return Linear(x, m.W(pre + "attention.self." + part + ".weight"), m.W(pre + "attention.self." + part + ".bias"));
    };
    Matrix q = proj("query"), k = proj("key"), v = proj("value");
    Matrix context(n, std::vector<double>(hidden, 0.0));
    for (int64_t h = 0; h < heads; ++h) {
      for (size_t i = 0; i < n; ++i) {
        std::vector<double> scores(n);
        double top = -1e300, total = 0;
        for (size_t j = 0; j < n; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < head_dim; ++d) dot += q[i][h * head_dim + d] * k[j][h * head_dim + d];
          scores[j] = dot / std::sqrt(static_cast<double>(head_dim));
          top = std::max(top, scores[j]);
        }
        for (double& s : scores) total += (s = std::exp(s - top));
        for (size_t j = 0; j < n; ++j) {
          for (int64_t d = 0; d < head_dim; ++d) context[i][h * head_dim + d] += scores[j] / total * v[j][h * head_dim + d];
        }
      }
    }
    Matrix attn = Linear(context, m.W(pre + "attention.output.dense.weight"), m.W(pre + "attention.output.dense.bias"));
    for (size_t t = 0; t < n; ++t) for (int64_t i = 0; i < hidden; ++i) attn[t][i] += x[t][i];
    LayerNorm(attn, m.W(pre + "attention.output.LayerNorm.weight"), m.W(pre + "attention.output.LayerNorm.bias"), 1e-5);
    x = attn;
    Matrix up = Linear(x, m.W(pre + "intermediate.dense.weight"), m.W(pre + "intermediate.dense.bias"));
    for (auto& row : up) for (double& u : row) u = 0.5 * u * (1.0 + std::erf(u / std::sqrt(2.0)));
    Matrix down = Linear(up, m.W(pre + "output.dense.weight"), m.W(pre + "output.dense.bias"));
    for (size_t t = 0; t < n; ++t) for (int64_t i = 0; i < hidden; ++i) down[t][i] += x[t][i];
    LayerNorm(down, m.W(pre + "output.LayerNorm.weight"), m.W(pre + "output.LayerNorm.bias"), 1e-5);
    x = down;
  }
  return x;
}

std::vector<double> ReferenceOutput(const TinyEncoder& m, const std::vector<int32_t>& tokens,
                                    const std::vector<int32_t>& types, Pooling pooling, bool normalize) {
  Matrix x = ReferenceHidden(m, tokens, types);
  const std::string arch = m.config["architectures"][0];
  if (arch == "BertForSequenceClassification" || arch == "XLMRobertaForSequenceClassification") {
    const bool bert = arch[0] == 'B';
    Matrix first = Linear({x[0]}, m.W(bert ? "bert.pooler.dense.weight" : "classifier.dense.weight"),
                          m.W(bert ? "bert.pooler.dense.bias" : "classifier.dense.bias"));
    for (double& f : first[0]) f = std::tanh(f);
    return Linear(first, m.W(bert ? "classifier.weight" : "classifier.out_proj.weight"),
                  m.W(bert ? "classifier.bias" : "classifier.out_proj.bias"))[0];
  }
  std::vector<double> pooled(x[0].size(), 0.0);
  if (pooling == Pooling::kCls) pooled = x.front();
  if (pooling == Pooling::kLastToken) pooled = x.back();
  if (pooling == Pooling::kMean) {
    for (const auto& row : x) for (size_t i = 0; i < row.size(); ++i) pooled[i] += row[i] / x.size();
  }
  if (normalize) {
    double norm = 0;
    for (double v : pooled) norm += v * v;
    for (double& v : pooled) v /= std::sqrt(norm);
  }
  return pooled;
}

// Inputs of different lengths, so each batch pads all but the longest.
std::vector<std::vector<int32_t>> Inputs() {
  return {{2, 7, 9, 3}, {2, 11, 12, 13, 14, 15, 16, 17, 18, 3}, {2, 3}, {2, 30, 31, 32, 39, 3}};
}

void ExpectClose(const std::vector<float>& got, const std::vector<double>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 0, worst = 0;
  for (double w : want) scale = std::max(scale, std::abs(w));
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(got[i] - want[i]));
  EXPECT_LT(worst / scale, 1e-4) << what;
}

absl::StatusOr<std::vector<std::vector<float>>> EncodeAll(EncoderRunner& runner,
                                                          const std::vector<std::vector<int32_t>>& tokens,
                                                          const std::vector<std::vector<int32_t>>& types = {}) {
  std::vector<EncoderInput> inputs;
  for (size_t i = 0; i < tokens.size(); ++i) {
    inputs.push_back({tokens[i], types.empty() ? absl::Span<const int32_t>() : types[i]});
  }
  return runner.Encode(inputs);
}

// A forward's cost of 1 token splits the batch by length into several
// forwards; 1000 keeps it one padded forward: the same outputs, in order.
TEST(EncoderRunnerTest, BertPoolingsMatchTheReferenceAloneAndInPaddedBatches) {
  const TinyEncoder model = MakeTinyEncoder("BertModel", 1);
  const std::string dir = WriteTinyEncoder(model, "tiny_bert");
  for (Pooling pooling : {Pooling::kCls, Pooling::kMean, Pooling::kLastToken}) {
    for (int variant = 0; variant < 8; ++variant) {
      const bool normalize = (variant & 1) != 0;
      const int64_t overhead = (variant & 2) != 0 ? 1000 : 1;
      const bool every_row = (variant & 4) != 0;
      EncoderLoadOptions options;
      options.model_dir = dir;
      options.pooling = pooling;
      options.normalize = normalize;
      options.group_overhead_tokens = overhead;
      options.last_layer_output_rows_only = !every_row;
      auto runner = LoadEncoder(options);
      ASSERT_TRUE(runner.ok()) << runner.status();
      EXPECT_EQ((*runner)->info().output_size, 16);
      EXPECT_EQ((*runner)->info().max_tokens, 20);
      EXPECT_EQ(absl::StrContains((*runner)->info().execution, "the last layer at the rows the output reads"),
                !every_row && pooling != Pooling::kMean)
          << (*runner)->info().execution;
      const std::string what = absl::StrCat(PoolingName(pooling), normalize ? " normalized" : "", ", forward costs ",
                                            overhead, " tokens", every_row ? ", every row through the last layer" : "");
      auto batched = EncodeAll(**runner, Inputs());
      ASSERT_TRUE(batched.ok()) << batched.status();
      for (size_t i = 0; i < Inputs().size(); ++i) {
        const auto want = ReferenceOutput(model, Inputs()[i], {}, pooling, normalize);
        ExpectClose((*batched)[i], want, absl::StrCat(what, ", input ", i, " in the batch"));
        auto alone = EncodeAll(**runner, {Inputs()[i]});
        ASSERT_TRUE(alone.ok());
        ExpectClose((*alone)[0], want, absl::StrCat(what, ", input ", i, " alone"));
      }
    }
  }
}

// The split a batch runs as, against every contiguous split of the sorted
// inputs (brute force) on random lengths.
int64_t GroupsCost(const std::vector<std::vector<size_t>>& groups, const std::vector<int64_t>& lengths,
                   int64_t overhead) {
  int64_t cost = 0;
  for (const auto& group : groups) {
    int64_t longest = 0;
    for (size_t i : group) longest = std::max(longest, lengths[i]);
    cost += overhead + static_cast<int64_t>(group.size()) * longest;
  }
  return cost;
}

TEST(GroupInputsByLengthTest, SplitsOnlyWhereAForwardCostsLessThanItsPadding) {
  // One length: one forward, whatever it costs.
  EXPECT_THAT(GroupInputsByLength({7, 7, 7}, 0), ElementsAre(ElementsAre(0, 1, 2)));
  EXPECT_TRUE(GroupInputsByLength({}, 10).empty());
  // 16 inputs of 500 and 16 of 50, interleaved: padding the short ones to
  // 500 wastes 7,200 tokens, more than a forward's 2,048.
  std::vector<int64_t> mixed;
  for (int i = 0; i < 16; ++i) mixed.insert(mixed.end(), {500, 50});
  auto groups = GroupInputsByLength(mixed, 2048);
  ASSERT_EQ(groups.size(), 2u);
  for (size_t i : groups[0]) EXPECT_EQ(mixed[i], 50);
  for (size_t i : groups[1]) EXPECT_EQ(mixed[i], 500);
  EXPECT_EQ(groups[0].size(), 16u);
  // Short inputs of many lengths: their padding is cheaper than a forward.
  std::vector<int64_t> short_ones;
  for (int64_t n = 1; n <= 32; ++n) short_ones.push_back(n);
  EXPECT_EQ(GroupInputsByLength(short_ones, 2048).size(), 1u);

  std::mt19937 rng(5);
  for (int trial = 0; trial < 200; ++trial) {
    const size_t n = 1 + rng() % 9;
    std::vector<int64_t> lengths(n);
    for (auto& l : lengths) l = 1 + rng() % 40;
    const int64_t overhead = rng() % 60;
    const auto got = GroupInputsByLength(lengths, overhead);
    std::vector<size_t> seen;
    for (const auto& group : got) {
      ASSERT_FALSE(group.empty());
      for (size_t k = 1; k < group.size(); ++k) EXPECT_LE(lengths[group[k - 1]], lengths[group[k]]) << "shortest first";
      seen.insert(seen.end(), group.begin(), group.end());
    }
    std::sort(seen.begin(), seen.end());
    std::vector<size_t> all(n);
    std::iota(all.begin(), all.end(), 0);
    ASSERT_EQ(seen, all) << "every input exactly once";
    // Brute force over the 2^(n-1) ways to cut the sorted inputs.
    std::vector<int64_t> sorted = lengths;
    std::sort(sorted.begin(), sorted.end());
    int64_t best = std::numeric_limits<int64_t>::max();
    for (uint32_t cuts = 0; cuts < (1u << (n - 1)); ++cuts) {
      int64_t cost = 0;
      size_t start = 0;
      for (size_t i = 1; i <= n; ++i) {
        if (i == n || (cuts >> (i - 1)) & 1) {
          cost += overhead + static_cast<int64_t>(i - start) * sorted[i - 1];
          start = i;
        }
      }
      best = std::min(best, cost);
    }
    EXPECT_EQ(GroupsCost(got, lengths, overhead), best) << "trial " << trial;
  }
}

TEST(EncoderRunnerTest, TokenTypesAndXlmRobertaPositions) {
  const TinyEncoder bert = MakeTinyEncoder("BertModel", 2);
  EncoderLoadOptions options;
  options.model_dir = WriteTinyEncoder(bert, "tiny_bert_types");
  auto runner = LoadEncoder(options);
  ASSERT_TRUE(runner.ok()) << runner.status();
  const std::vector<int32_t> pair = {2, 7, 9, 3, 12, 13, 3}, types = {0, 0, 0, 0, 1, 1, 1};
  auto out = EncodeAll(**runner, {pair}, {types});
  ASSERT_TRUE(out.ok()) << out.status();
  ExpectClose((*out)[0], ReferenceOutput(bert, pair, types, Pooling::kCls, true), "token types");

  const TinyEncoder xlmr = MakeTinyEncoder("XLMRobertaModel", 3);
  options.model_dir = WriteTinyEncoder(xlmr, "tiny_xlmr");
  options.pooling = Pooling::kMean;
  auto xlmr_runner = LoadEncoder(options);
  ASSERT_TRUE(xlmr_runner.ok()) << xlmr_runner.status();
  EXPECT_EQ((*xlmr_runner)->info().max_tokens, 18);  // 20 positions from pad + 1 = 2
  auto encoded = EncodeAll(**xlmr_runner, Inputs());
  ASSERT_TRUE(encoded.ok()) << encoded.status();
  for (size_t i = 0; i < Inputs().size(); ++i) {
    ExpectClose((*encoded)[i], ReferenceOutput(xlmr, Inputs()[i], {}, Pooling::kMean, true), "xlmr");
  }
}

TEST(EncoderRunnerTest, CrossEncoderHeads) {
  for (const char* arch : {"BertForSequenceClassification", "XLMRobertaForSequenceClassification"}) {
    const TinyEncoder model = MakeTinyEncoder(arch, 4);
    for (bool every_row : {false, true}) {
      EncoderLoadOptions options;
      options.model_dir = WriteTinyEncoder(model, std::string("tiny_") + arch);
      options.last_layer_output_rows_only = !every_row;
      auto runner = LoadEncoder(options);
      ASSERT_TRUE(runner.ok()) << arch << ": " << runner.status();
      EXPECT_EQ((*runner)->info().output_size, 1);
      auto out = EncodeAll(**runner, Inputs());
      ASSERT_TRUE(out.ok()) << out.status();
      for (size_t i = 0; i < Inputs().size(); ++i) {
        ExpectClose((*out)[i], ReferenceOutput(model, Inputs()[i], {}, Pooling::kCls, false),
                    absl::StrCat(arch, every_row ? ", every row through the last layer" : ""));
      }
    }
  }
}

TEST(EncoderRunnerTest, BadInputsNameTheirIndexAndTheRunnerStaysUsable) {
  const TinyEncoder model = MakeTinyEncoder("BertModel", 5);
  EncoderLoadOptions options;
  options.model_dir = WriteTinyEncoder(model, "tiny_bert_bad");
  auto runner = LoadEncoder(options);
  ASSERT_TRUE(runner.ok()) << runner.status();
  auto empty = EncodeAll(**runner, {{2, 3}, {}});
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(empty.status().message(), HasSubstr("input 1 is empty"));
  auto long_input = EncodeAll(**runner, {std::vector<int32_t>(21, 5)});
  EXPECT_THAT(long_input.status().message(), HasSubstr("input 0 has 21 tokens; the model takes at most 20"));
  auto vocab = EncodeAll(**runner, {{2, 3}, {2, 40}});
  EXPECT_THAT(vocab.status().message(), HasSubstr("input 1: token id 40 is outside the vocabulary [0, 40)"));
  auto types = EncodeAll(**runner, {{2, 3}}, {{0, 2}});
  EXPECT_THAT(types.status().message(), HasSubstr("token type 2 is outside [0, 2)"));
  auto count = EncodeAll(**runner, {{2, 3}}, {{0}});
  EXPECT_THAT(count.status().message(), HasSubstr("2 tokens but 1 token types"));
  auto fine = EncodeAll(**runner, {{2, 3}});
  ASSERT_TRUE(fine.ok()) << fine.status();
}

TEST(EncoderRunnerTest, CheckpointProblemsAreListed) {
  TinyEncoder model = MakeTinyEncoder("BertModel", 6);
  model.weights.erase("encoder.layer.1.output.dense.bias");
  model.weights["encoder.layer.0.intermediate.dense.weight"].shape = {16, 24};
  model.weights["extra.weight"] = Tensor{{1}, {0.0f}};
  EncoderLoadOptions options;
  options.model_dir = WriteTinyEncoder(model, "tiny_bert_broken");
  auto runner = LoadEncoder(options);
  ASSERT_FALSE(runner.ok());
  EXPECT_THAT(runner.status().message(), HasSubstr("missing tensors: encoder.layer.1.output.dense.bias"));
  EXPECT_THAT(runner.status().message(), HasSubstr("unexpected tensors: extra.weight"));
  EXPECT_THAT(runner.status().message(), HasSubstr("encoder.layer.0.intermediate.dense.weight is [16, 24]"));
}

}  // namespace
}  // namespace gantry::runtime
