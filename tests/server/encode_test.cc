// Inference.Embed and Inference.Rerank end to end: the real gantry-server on
// loopback serving the embedding and rerank fixtures (tools/
// make_encoder_models.py) beside a chat model, checked against
// sentence-transformers' and transformers' outputs stored with them.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>
#include <sstream>
#include <thread>
#include <vector>

#include "gantry/v1/gantry.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/safetensors.h"
#include "tests/runtime/reference_file.h"
#include "tests/server/shared_server.h"

namespace gantry {
namespace {

using ::gantry::testing::ErrorReasonOf;
using ::testing::HasSubstr;

std::string Models() { return std::string(GANTRY_SOURCE_DIR) + "/tests/models/"; }

// A fixture's reference.json and reference.safetensors.
struct Reference {
  nlohmann::json meta;
  std::unique_ptr<runtime::SafetensorsFile> file;

  explicit Reference(const std::string& fixture) {
    std::ifstream in(Models() + fixture + "/reference.json");
    std::stringstream text;
    text << in.rdbuf();
    meta = nlohmann::json::parse(text.str());
    auto opened = runtime::SafetensorsFile::Open(Models() + fixture + "/reference.safetensors");
    EXPECT_TRUE(opened.ok()) << opened.status();
    file = *std::move(opened);
  }
  std::vector<float> Floats(const std::string& name) const { return testing::ReadTensor<float>(*file, name); }
  std::vector<std::string> Strings(const std::string& key) const { return meta[key].get<std::vector<std::string>>(); }
};

double MaxRelativeError(const std::vector<float>& got, const std::vector<float>& want) {
  EXPECT_EQ(got.size(), want.size());
  double diff = 0, scale = 0;
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(got[i]) - want[i]));
    scale = std::max(scale, std::abs(static_cast<double>(want[i])));
  }
  return diff / scale;
}

double Norm(const v1::Embedding& e) {
  double sum = 0;
  for (float v : e.values()) sum += static_cast<double>(v) * v;
  return std::sqrt(sum);
}

class EncodeTest : public testing::SharedServerTest<EncodeTest> {
 public:
  static const char* Name() { return "encode_test"; }
  static std::string Config();

 protected:
  grpc::Status Embed(const v1::EmbedRequest& request, v1::EmbedResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    return inference_->Embed(&context, request, response);
  }
  grpc::Status Rerank(const v1::RerankRequest& request, v1::RerankResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    return inference_->Rerank(&context, request, response);
  }
  static v1::EmbedRequest Texts(const std::string& model, const std::vector<std::string>& texts) {
    v1::EmbedRequest request;
    request.set_model(model);
    for (const auto& text : texts) request.add_inputs()->set_text(text);
    return request;
  }
};

std::string EncodeTest::Config() {
  const std::string root = GANTRY_SOURCE_DIR;
  return "drain_timeout_seconds: 1\n"
         "defaults:\n  kv_cache_mib: 16\n"
         "models:\n"
         "  - name: chat\n    path: " + root + "/models/demo\n"
         "  - name: bge\n    path: " + Models() + "bert_embed\n    task: embed\n"
         "  - name: m3\n    path: " + Models() + "xlmr_embed\n"
         "  - name: reranker\n    path: " + Models() + "bert_rerank\n"
         "  - name: xreranker\n    path: " + Models() + "xlmr_rerank\n"
         "  - name: qwen-reranker\n    path: " + Models() + "qwen3_rerank\n    task: rerank\n"
         "  - name: qwen-embed\n    path: " + Models() + "qwen3_embed\n";
}

// Each of the response's vectors within 1e-4 of its row of `want` (rows of
// equal width, in order).
void ExpectEmbeddings(const v1::EmbedResponse& response, const std::vector<float>& want, size_t rows,
                      const std::string& what) {
  ASSERT_EQ(response.embeddings_size(), static_cast<int>(rows)) << what;
  const size_t width = want.size() / rows;
  for (size_t i = 0; i < rows; ++i) {
    const auto& values = response.embeddings(static_cast<int>(i)).values();
    EXPECT_LT(MaxRelativeError({values.begin(), values.end()}, {want.begin() + i * width, want.begin() + (i + 1) * width}),
              1e-4)
        << what << " text " << i;
  }
}

TEST_F(EncodeTest, EmbeddingsMatchSentenceTransformers) {
  for (const auto& [model, fixture] : {std::pair{"bge", "bert_embed"}, std::pair{"m3", "xlmr_embed"}}) {
    Reference ref(fixture);
    const auto texts = ref.Strings("texts");
    v1::EmbedResponse response;
    grpc::Status status = Embed(Texts(model, texts), &response);
    ASSERT_TRUE(status.ok()) << model << ": " << status.error_message() << "\n" << server_->Log();
    ExpectEmbeddings(response, ref.Floats("embeddings"), texts.size(), model);
    EXPECT_GT(response.usage().prompt_tokens(), texts.size() * 2);
  }
}

TEST_F(EncodeTest, Qwen3EmbeddingMatchesSentenceTransformers) {
  // A bare Qwen3Model: last-token pooling of its final-normed hidden states,
  // with and without the model's "query" prompt.
  Reference ref("qwen3_embed");
  const auto texts = ref.Strings("texts");
  for (const auto& [prompt_name, key] : {std::pair{"", "embeddings"}, std::pair{"query", "query_embeddings"}}) {
    v1::EmbedRequest request = Texts("qwen-embed", texts);
    request.set_prompt_name(prompt_name);
    v1::EmbedResponse response;
    grpc::Status status = Embed(request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message() << "\n" << server_->Log();
    ExpectEmbeddings(response, ref.Floats(key), texts.size(), key);
  }
  // It embeds; it does not chat.
  v1::ChatRequest chat;
  chat.set_model("qwen-embed");
  auto* message = chat.add_messages();
  message->set_role("user");
  message->set_content("hi");
  grpc::ClientContext context;
  auto reader = inference_->Chat(&context, chat);
  v1::GenerateResponse ignored;
  while (reader->Read(&ignored)) {
  }
  const grpc::Status chat_status = reader->Finish();
  EXPECT_EQ(chat_status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(ErrorReasonOf(chat_status), "UNSUPPORTED");
}

TEST_F(EncodeTest, TokenIdsDimensionsAndNormalize) {
  // Token ids give what the text gives.
  v1::TokenizeRequest tokenize;
  tokenize.set_model("bge");
  tokenize.set_text("What is the capital of France?");
  v1::TokenizeResponse ids;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(inference_->Tokenize(&context, tokenize, &ids).ok());
  }
  v1::EmbedRequest by_ids;
  by_ids.set_model("bge");
  by_ids.add_inputs()->mutable_token_ids()->mutable_ids()->CopyFrom(ids.token_ids());
  by_ids.add_inputs()->set_text("What is the capital of France?");
  v1::EmbedResponse both;
  ASSERT_TRUE(Embed(by_ids, &both).ok());
  ASSERT_EQ(both.embeddings_size(), 2);
  EXPECT_EQ(both.embeddings(0).values().size(), 64);
  for (int k = 0; k < 64; ++k) EXPECT_FLOAT_EQ(both.embeddings(0).values(k), both.embeddings(1).values(k));
  EXPECT_NEAR(Norm(both.embeddings(0)), 1.0, 1e-5);

  // The first 16 components, normalized again.
  v1::EmbedRequest shorter = Texts("bge", {"What is the capital of France?"});
  shorter.set_dimensions(16);
  v1::EmbedResponse cut;
  ASSERT_TRUE(Embed(shorter, &cut).ok());
  ASSERT_EQ(cut.embeddings(0).values().size(), 16);
  EXPECT_NEAR(Norm(cut.embeddings(0)), 1.0, 1e-5);
  double scale = 0;
  for (int k = 0; k < 16; ++k) scale += both.embeddings(0).values(k) * both.embeddings(0).values(k);
  EXPECT_NEAR(cut.embeddings(0).values(3), both.embeddings(0).values(3) / std::sqrt(scale), 1e-5);

  // Raw pooled states when normalize is off: not unit length.
  v1::EmbedRequest raw = Texts("bge", {"What is the capital of France?"});
  raw.set_normalize(false);
  v1::EmbedResponse raw_out;
  ASSERT_TRUE(Embed(raw, &raw_out).ok());
  EXPECT_GT(std::abs(Norm(raw_out.embeddings(0)) - 1.0), 0.1);

  v1::EmbedRequest too_many = Texts("bge", {"x"});
  too_many.set_dimensions(65);
  v1::EmbedResponse refused;
  grpc::Status status = Embed(too_many, &refused);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("dimensions 65 exceeds the model's 64"));
}

TEST_F(EncodeTest, OverLongInputsFailUnlessTruncated) {
  Reference ref("bert_embed");
  const std::string long_text = ref.meta["long_text"];
  v1::EmbedResponse response;
  grpc::Status status = Embed(Texts("bge", {"short", long_text}), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ErrorReasonOf(status), "CONTEXT_LENGTH");
  EXPECT_THAT(status.error_message(), HasSubstr("input 1 has"));
  EXPECT_THAT(status.error_message(), HasSubstr("takes at most 128"));

  v1::EmbedRequest truncated = Texts("bge", {long_text});
  truncated.set_truncate(true);
  ASSERT_TRUE(Embed(truncated, &response).ok());
  const auto& values = response.embeddings(0).values();
  EXPECT_LT(MaxRelativeError({values.begin(), values.end()}, ref.Floats("long_embedding")), 1e-4);
  EXPECT_EQ(response.usage().prompt_tokens(), 128u);
}

TEST_F(EncodeTest, RerankOrdersDocumentsAsTheCrossEncoder) {
  for (const auto& [model, fixture] : {std::pair{"reranker", "bert_rerank"}, std::pair{"xreranker", "xlmr_rerank"}}) {
    Reference ref(fixture);
    const auto documents = ref.Strings("documents");
    const std::vector<float> logits = ref.Floats("logits");
    v1::RerankRequest request;
    request.set_model(model);
    request.set_query(ref.meta["query"].get<std::string>());
    for (const auto& d : documents) request.add_documents(d);
    v1::RerankResponse response;
    grpc::Status status = Rerank(request, &response);
    ASSERT_TRUE(status.ok()) << model << ": " << status.error_message();
    ASSERT_EQ(response.results_size(), static_cast<int>(documents.size()));
    std::vector<size_t> order(documents.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return logits[a] > logits[b]; });
    for (size_t r = 0; r < order.size(); ++r) {
      const v1::RerankResult& result = response.results(static_cast<int>(r));
      EXPECT_EQ(result.index(), order[r]) << model << " rank " << r;
      EXPECT_NEAR(result.logit(), logits[order[r]], 1e-4);
      EXPECT_NEAR(result.relevance_score(), 1.0 / (1.0 + std::exp(-logits[order[r]])), 1e-5);
      EXPECT_TRUE(result.document().empty());
    }

    request.set_top_n(2);
    request.set_return_documents(true);
    ASSERT_TRUE(Rerank(request, &response).ok());
    ASSERT_EQ(response.results_size(), 2);
    EXPECT_EQ(response.results(0).document(), documents[order[0]]);
    EXPECT_EQ(response.results(1).index(), order[1]);
  }
}

TEST_F(EncodeTest, CausalLmRerankerScoresAsQwen3RerankerDoes) {
  Reference ref("qwen3_rerank");
  const auto documents = ref.Strings("documents");
  const std::vector<float> scores = ref.Floats("scores");  // P(yes) from transformers, float32
  v1::RerankRequest request;
  request.set_model("qwen-reranker");
  request.set_query(ref.meta["query"].get<std::string>());
  for (const auto& d : documents) request.add_documents(d);
  for (int round = 0; round < 2; ++round) {  // the second reuses the cached prompt prefix
    v1::RerankResponse response;
    grpc::Status status = Rerank(request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message() << "\n" << server_->Log();
    ASSERT_EQ(response.results_size(), static_cast<int>(documents.size()));
    std::vector<size_t> order(documents.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] > scores[b]; });
    for (size_t r = 0; r < order.size(); ++r) {
      EXPECT_EQ(response.results(static_cast<int>(r)).index(), order[r]) << "rank " << r;
      EXPECT_NEAR(response.results(static_cast<int>(r)).relevance_score(), scores[order[r]], 1e-4) << "rank " << r;
    }
  }
  v1::ModelStatus status;
  grpc::ClientContext context;
  v1::GetModelRequest get;
  get.set_name("qwen-reranker");
  ASSERT_TRUE(models_->Get(&context, get, &status).ok());
  EXPECT_EQ(status.task(), "rerank");
  EXPECT_EQ(status.kv_blocks_free(), status.kv_blocks_total());  // blocks held for a step only
}

TEST_F(EncodeTest, WrongTaskAndBadRequestsNameTheProblem) {
  v1::EmbedResponse embed;
  grpc::Status status = Embed(Texts("chat", {"hello"}), &embed);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(ErrorReasonOf(status), "UNSUPPORTED");
  EXPECT_THAT(status.error_message(), HasSubstr("model chat serves generate, not embeddings"));

  v1::RerankRequest rerank;
  rerank.set_model("bge");
  rerank.set_query("q");
  rerank.add_documents("d");
  v1::RerankResponse reranked;
  status = Rerank(rerank, &reranked);
  EXPECT_THAT(status.error_message(), HasSubstr("model bge serves embed, not rerank"));

  v1::GenerateRequest generate;
  generate.set_model("bge");
  generate.set_text("hello");
  grpc::ClientContext context;
  v1::GenerateResponse piece;
  auto reader = inference_->Generate(&context, generate);
  while (reader->Read(&piece)) {
  }
  status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("model bge serves embed, not text generation"));

  v1::ChatRequest chat;
  chat.set_model("reranker");
  auto* message = chat.add_messages();
  message->set_role("user");
  message->set_content("hello");
  grpc::ClientContext chat_context;
  auto chat_reader = inference_->Chat(&chat_context, chat);
  while (chat_reader->Read(&piece)) {
  }
  status = chat_reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(ErrorReasonOf(status), "UNSUPPORTED");
  EXPECT_THAT(status.error_message(), HasSubstr("model reranker serves rerank, not chat"));

  struct Case {
    v1::EmbedRequest request;
    const char* message;
  };
  std::vector<Case> cases;
  cases.push_back({Texts("bge", {}), "inputs is empty"});
  cases.push_back({Texts("bge", {"a", ""}), "inputs[1].text is empty"});
  v1::EmbedRequest neither = Texts("bge", {"a"});
  neither.add_inputs();
  cases.push_back({neither, "inputs[1] has neither text nor token_ids"});
  v1::EmbedRequest vocabulary;
  vocabulary.set_model("bge");
  vocabulary.add_inputs()->mutable_token_ids()->add_ids(5000);
  cases.push_back({vocabulary, "token id 5000 is outside the vocabulary"});
  v1::EmbedRequest prompt = Texts("bge", {"a"});
  prompt.set_prompt_name("query");
  cases.push_back({prompt, "prompt_name \"query\" is not a prompt of model bge"});
  for (const Case& c : cases) {
    status = Embed(c.request, &embed);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.message;
    EXPECT_THAT(status.error_message(), HasSubstr(c.message));
  }
  rerank.set_model("reranker");
  rerank.clear_documents();
  status = Rerank(rerank, &reranked);
  EXPECT_THAT(status.error_message(), HasSubstr("documents is empty"));
}

TEST_F(EncodeTest, ConcurrentCallersGetTheirOwnVectors) {
  Reference ref("bert_embed");
  const auto texts = ref.Strings("texts");
  const std::vector<float> want = ref.Floats("embeddings");
  const size_t width = want.size() / texts.size();
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&, t] {
      auto stub = v1::Inference::NewStub(channel_);
      for (int r = 0; r < 8; ++r) {
        const size_t i = (t + r) % texts.size();
        grpc::ClientContext context;
        v1::EmbedResponse response;
        if (!stub->Embed(&context, Texts("bge", {texts[i]}), &response).ok()) continue;
        const auto& values = response.embeddings(0).values();
        if (MaxRelativeError({values.begin(), values.end()},
                             {want.begin() + i * width, want.begin() + (i + 1) * width}) < 1e-4) {
          good.fetch_add(1);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(good.load(), 16 * 8);
}

TEST_F(EncodeTest, ModelsListTellsEachTask) {
  grpc::ClientContext context;
  v1::ListModelsResponse list;
  ASSERT_TRUE(models_->List(&context, {}, &list).ok());
  std::map<std::string, std::string> tasks;
  for (const auto& m : list.models()) tasks[m.name()] = m.task();
  EXPECT_EQ(tasks["chat"], "generate");
  EXPECT_EQ(tasks["bge"], "embed");
  EXPECT_EQ(tasks["m3"], "embed");
  EXPECT_EQ(tasks["reranker"], "rerank");
}

}  // namespace
}  // namespace gantry
