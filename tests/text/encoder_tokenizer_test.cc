// WordPiece (BERT) and Unigram (XLM-RoBERTa-style SentencePiece) tokenizers
// against goldens from Hugging Face's Rust tokenizers (make_encoder_goldens.mjs):
// single texts and pairs, ids and token type ids, byte for byte.
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/text/text_test_util.h"
#include "text/tokenizer.h"

namespace gantry::text {
namespace {

using ::testing::HasSubstr;
using nlohmann::json;

std::string ReadFixture(const std::string& relative) {
  std::ifstream in(std::string(GANTRY_TEXT_DIR) + "/" + relative, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

struct Variant {
  std::string family;
  std::string name;
};

std::string PrintVariant(const ::testing::TestParamInfo<Variant>& info) {
  return info.param.family + "_" + info.param.name;
}

// Each golden variant is the family's tokenizer.json with JSON-pointer
// replacements (another normalizer, post-processor or model option).
class EncoderGoldenTest : public ::testing::TestWithParam<Variant> {
 protected:
  void SetUp() override {
    golden_ = testing::LoadGolden(GetParam().family);
    ASSERT_TRUE(golden_.is_object());
    for (const auto& v : golden_["variants"]) {
      if (v["name"] == GetParam().name) variant_ = v;
    }
    ASSERT_TRUE(variant_.is_object()) << GetParam().name;
    json root = json::parse(ReadFixture(golden_["tokenizer"].get<std::string>() + "/tokenizer.json"));
    for (const auto& [pointer, value] : variant_["patch"].items()) root[json::json_pointer(pointer)] = value;
    auto tokenizer = Tokenizer::FromJson(root.dump(), "");
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = *std::move(tokenizer);
    texts_ = golden_["texts"].get<std::vector<std::string>>();
  }

  json golden_, variant_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::vector<std::string> texts_;
};

class EncoderSinglesTest : public EncoderGoldenTest {};
class EncoderPairsTest : public EncoderGoldenTest {};
class EncoderDecodeTest : public EncoderGoldenTest {};

TEST_P(EncoderSinglesTest, MatchReference) {
  ASSERT_TRUE(variant_.contains("singles"));
  const auto& singles = variant_["singles"];
  ASSERT_EQ(singles.size(), texts_.size());
  ASSERT_GE(texts_.size(), 300u);
  int mismatches = 0;
  for (size_t i = 0; i < texts_.size() && mismatches < 5; ++i) {
    auto encoding = tokenizer_->EncodeWithTypes(texts_[i]);
    ASSERT_TRUE(encoding.ok()) << encoding.status();
    const auto expected = singles[i]["ids"].get<std::vector<int32_t>>();
    bool same = encoding->ids == expected && encoding->type_ids == std::vector<int32_t>(expected.size(), 0);
    if (singles[i].contains("plain")) {
      auto plain = tokenizer_->Encode(texts_[i], /*add_special_tokens=*/false);
      ASSERT_TRUE(plain.ok());
      same &= *plain == singles[i]["plain"].get<std::vector<int32_t>>();
    }
    if (!same) {
      ++mismatches;
      ADD_FAILURE() << "text " << json(texts_[i]).dump() << "\n ours   " << ::testing::PrintToString(encoding->ids)
                    << "\n theirs " << singles[i]["ids"].dump();
    }
  }
}

TEST_P(EncoderPairsTest, MatchReference) {
  ASSERT_TRUE(variant_.contains("pairs"));
  const auto& pairs = golden_["pairs"];
  ASSERT_GE(pairs.size(), 100u);
  int mismatches = 0;
  for (size_t i = 0; i < pairs.size() && mismatches < 5; ++i) {
    const std::string& a = texts_[pairs[i][0].get<size_t>()];
    const std::string& b = texts_[pairs[i][1].get<size_t>()];
    const json& expected = variant_["pairs"][i];
    auto with = tokenizer_->EncodePair(a, b);
    auto without = tokenizer_->EncodePair(a, b, /*add_special_tokens=*/false);
    ASSERT_TRUE(with.ok() && without.ok());
    if (with->ids != expected["ids"].get<std::vector<int32_t>>() ||
        with->type_ids != expected["type_ids"].get<std::vector<int32_t>>() ||
        without->ids != expected["plain"].get<std::vector<int32_t>>() ||
        without->type_ids != expected["plain_type_ids"].get<std::vector<int32_t>>()) {
      ++mismatches;
      ADD_FAILURE() << "pair " << json(a).dump() << " + " << json(b).dump() << "\n ours   "
                    << ::testing::PrintToString(with->ids) << " types " << ::testing::PrintToString(with->type_ids)
                    << "\n theirs " << expected["ids"].dump() << " types " << expected["type_ids"].dump();
    }
  }
}

TEST_P(EncoderDecodeTest, MatchReference) {
  ASSERT_TRUE(variant_.contains("singles") && variant_["singles"][0].contains("decoded"));
  for (size_t i = 0; i < texts_.size(); ++i) {
    const json& single = variant_["singles"][i];
    const auto ids = single["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tokenizer_->Decode(ids), single["decoded"].get<std::string>()) << json(texts_[i]).dump();
    EXPECT_EQ(tokenizer_->Decode(ids, /*skip_special_tokens=*/true), single["skipped"].get<std::string>())
        << json(texts_[i]).dump();
  }
}

// Variants with "full" goldens are in all three lists; the generator says
// which variant has what.
INSTANTIATE_TEST_SUITE_P(Encoders, EncoderSinglesTest,
                         ::testing::Values(Variant{"bert", "uncased"}, Variant{"bert", "cased"},
                                           Variant{"bert", "strip_accents_only"}, Variant{"bert", "raw"},
                                           Variant{"xlmr", "template"}, Variant{"xlmr", "byte_fallback"},
                                           Variant{"xlmr", "nfkc"}),
                         PrintVariant);
INSTANTIATE_TEST_SUITE_P(Encoders, EncoderPairsTest,
                         ::testing::Values(Variant{"bert", "uncased"}, Variant{"bert", "bert_processing"},
                                           Variant{"bert", "no_post_processor"}, Variant{"xlmr", "template"},
                                           Variant{"xlmr", "roberta_processing"}),
                         PrintVariant);
INSTANTIATE_TEST_SUITE_P(Encoders, EncoderDecodeTest,
                         ::testing::Values(Variant{"bert", "uncased"}, Variant{"xlmr", "template"}), PrintVariant);

TEST(EncoderGoldenFiles, EveryVariantIsTested) {
  // The list above must follow the generator's.
  int variants = 0;
  for (const char* family : {"bert", "xlmr"}) variants += testing::LoadGolden(family)["variants"].size();
  EXPECT_EQ(variants, 10);
}

std::unique_ptr<Tokenizer> Bert() {
  auto tokenizer = Tokenizer::FromJson(ReadFixture("encoders/bert-base-uncased/tokenizer.json"), "");
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? *std::move(tokenizer) : nullptr;
}

TEST(EncoderTokenizerTest, BertPairHasSegmentIds) {
  auto bert = Bert();
  ASSERT_NE(bert, nullptr);
  auto encoding = bert->EncodePair("what is gantry?", "a server.");
  ASSERT_TRUE(encoding.ok());
  // [CLS] what is gantry ? [SEP] a server . [SEP]
  ASSERT_EQ(encoding->ids.size(), encoding->type_ids.size());
  EXPECT_EQ(encoding->ids.front(), 101);
  EXPECT_EQ(encoding->ids.back(), 102);
  EXPECT_THAT(encoding->type_ids, ::testing::ElementsAreArray(std::vector<int32_t>{0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1}));
  EXPECT_EQ(bert->Decode(encoding->ids, /*skip_special_tokens=*/true), "what is gantry? a server.");
}

TEST(EncoderTokenizerTest, UnknownComponentsNameTheirType) {
  json root = json::parse(ReadFixture("encoders/bert-base-uncased/tokenizer.json"));
  const std::pair<const char*, json> cases[] = {
      {"/normalizer", {{"type", "Nmt"}}},
      {"/pre_tokenizer", {{"type", "UnicodeScripts"}}},
      {"/post_processor", {{"type", "Fancy"}}},
      {"/decoder", {{"type", "CTC"}}},
      {"/model/type", "WordLevel"},
  };
  for (const auto& [pointer, value] : cases) {
    json patched = root;
    patched[json::json_pointer(pointer)] = value;
    auto tokenizer = Tokenizer::FromJson(patched.dump(), "");
    ASSERT_FALSE(tokenizer.ok()) << pointer;
    const std::string type = value.is_string() ? value.get<std::string>() : value["type"].get<std::string>();
    EXPECT_THAT(std::string(tokenizer.status().message()), HasSubstr("\"" + type + "\"")) << pointer;
  }
}

TEST(EncoderTokenizerTest, PairWithoutPairTemplateIsAnError) {
  json root = json::parse(ReadFixture("encoders/bert-base-uncased/tokenizer.json"));
  root["post_processor"].erase("pair");
  auto tokenizer = Tokenizer::FromJson(root.dump(), "");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  auto encoding = (*tokenizer)->EncodePair("a", "b");
  EXPECT_EQ(encoding.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(EncoderTokenizerTest, FieldOfTheWrongTypeIsALoadError) {
  auto tokenizer = Tokenizer::FromJson(R"({"model": {"type": "WordPiece", "vocab": {"[UNK]": 0}, "unk_token": 5}})", "");
  EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(EncoderTokenizerTest, BadCharsmapIsALoadError) {
  json root = json::parse(ReadFixture("encoders/xlmr-unigram/tokenizer.json"));
  root["normalizer"]["normalizers"][0]["precompiled_charsmap"] = "AAAA/w==";
  auto tokenizer = Tokenizer::FromJson(root.dump(), "");
  ASSERT_FALSE(tokenizer.ok());
  EXPECT_THAT(std::string(tokenizer.status().message()), HasSubstr("Precompiled"));
}

}  // namespace
}  // namespace gantry::text
