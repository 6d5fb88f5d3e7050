// WordPiece (BERT) and Unigram (XLM-RoBERTa-style SentencePiece) tokenizers
// against goldens from Hugging Face's Rust tokenizers (make_encoder_goldens.mjs,
// make_truncation_goldens.mjs): single texts and pairs, whole and truncated,
// ids and token type ids, byte for byte.
#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
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

// The family's tokenizer.json with a golden variant's JSON-pointer
// replacements (another normalizer, post-processor or model option).
absl::StatusOr<std::unique_ptr<Tokenizer>> PatchedTokenizer(const std::string& dir, const json& patch) {
  json root = json::parse(ReadFixture(dir + "/tokenizer.json"));
  for (const auto& [pointer, value] : patch.items()) root[json::json_pointer(pointer)] = value;
  return Tokenizer::FromJson(root.dump(), "");
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
    auto tokenizer = PatchedTokenizer(golden_["tokenizer"].get<std::string>(), variant_["patch"]);
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

// Truncation to each recorded max length (make_truncation_goldens.mjs),
// single texts and pairs, with and without special tokens. A max length the
// goldens skip for being below the special-token count must be refused.
class EncoderTruncationTest : public ::testing::TestWithParam<Variant> {};

TEST_P(EncoderTruncationTest, MatchReference) {
  const json golden = testing::LoadGolden("truncation");
  ASSERT_TRUE(golden.is_object());
  json family, variant;
  for (const auto& f : golden["families"]) {
    if (f["family"] == GetParam().family) family = f;
  }
  ASSERT_TRUE(family.is_object()) << GetParam().family;
  for (const auto& v : family["variants"]) {
    if (v["name"] == GetParam().name) variant = v;
  }
  ASSERT_TRUE(variant.is_object()) << GetParam().name;
  auto tokenizer = PatchedTokenizer(family["tokenizer"].get<std::string>(), variant["patch"]);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const auto texts = golden["texts"].get<std::vector<std::string>>();
  const auto& pairs = golden["pairs"];
  ASSERT_GE(texts.size(), 50u);
  ASSERT_GE(pairs.size(), 30u);

  auto same = [](const absl::StatusOr<Encoding>& ours, const json& ids, const json& type_ids) {
    return ours.ok() && ours->ids == ids.get<std::vector<int32_t>>() &&
           ours->type_ids == type_ids.get<std::vector<int32_t>>();
  };
  auto show = [](const absl::StatusOr<Encoding>& ours) {
    return ours.ok() ? ::testing::PrintToString(ours->ids) + " types " + ::testing::PrintToString(ours->type_ids)
                     : ours.status().ToString();
  };
  int mismatches = 0, compared = 0;
  for (const auto& at : variant["max_lengths"]) {
    const int max_length = at["max_length"].get<int>();
    if (at.contains("singles")) {
      for (size_t i = 0; i < texts.size() && mismatches < 5; ++i) {
        const json& expected = at["singles"][i];
        auto with = (*tokenizer)->EncodeWithTypes(texts[i], /*add_special_tokens=*/true, max_length);
        auto without = (*tokenizer)->EncodeWithTypes(texts[i], /*add_special_tokens=*/false, max_length);
        ++compared;
        if (!same(with, expected["ids"], expected["type_ids"]) ||
            !same(without, expected["plain"], expected["plain_type_ids"])) {
          ++mismatches;
          ADD_FAILURE() << "max_length " << max_length << " text " << json(texts[i]).dump() << "\n ours   "
                        << show(with) << " / " << show(without) << "\n theirs " << expected.dump();
        }
      }
    } else {
      EXPECT_EQ((*tokenizer)->EncodeWithTypes(texts[0], true, max_length).status().code(),
                absl::StatusCode::kInvalidArgument)
          << max_length;
    }
    if (at.contains("pairs")) {
      for (size_t i = 0; i < pairs.size() && mismatches < 5; ++i) {
        const std::string& a = texts[pairs[i][0].get<size_t>()];
        const std::string& b = texts[pairs[i][1].get<size_t>()];
        const json& expected = at["pairs"][i];
        auto with = (*tokenizer)->EncodePair(a, b, /*add_special_tokens=*/true, max_length);
        auto without = (*tokenizer)->EncodePair(a, b, /*add_special_tokens=*/false, max_length);
        ++compared;
        if (!same(with, expected["ids"], expected["type_ids"]) ||
            !same(without, expected["plain"], expected["plain_type_ids"])) {
          ++mismatches;
          ADD_FAILURE() << "max_length " << max_length << " pair " << json(a).dump() << " + " << json(b).dump()
                        << "\n ours   " << show(with) << " / " << show(without) << "\n theirs " << expected.dump();
        }
      }
    } else {
      EXPECT_EQ((*tokenizer)->EncodePair(texts[0], texts[1], true, max_length).status().code(),
                absl::StatusCode::kInvalidArgument)
          << max_length;
    }
  }
  EXPECT_GE(compared, 500);
}

INSTANTIATE_TEST_SUITE_P(Encoders, EncoderTruncationTest,
                         ::testing::Values(Variant{"bert", "uncased"}, Variant{"bert", "bert_processing"},
                                           Variant{"bert", "no_post_processor"}, Variant{"xlmr", "template"},
                                           Variant{"xlmr", "roberta_processing"}),
                         PrintVariant);

TEST(EncoderGoldenFiles, EveryTruncationVariantIsTested) {
  const json golden = testing::LoadGolden("truncation");  // outlives the loop over its member
  int variants = 0;
  for (const auto& family : golden["families"]) variants += family["variants"].size();
  EXPECT_EQ(variants, 5);
}

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

TEST(EncoderTokenizerTest, MaxLengthBelowSpecialTokensIsAnError) {
  auto bert = Bert();
  ASSERT_NE(bert, nullptr);
  // [CLS] A [SEP] adds 2, [CLS] A [SEP] B [SEP] adds 3.
  auto single = bert->EncodeWithTypes("hello world", /*add_special_tokens=*/true, /*max_length=*/1);
  EXPECT_EQ(single.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(single.status().message()), HasSubstr("max_length 1 is less than the 2 special tokens"));
  auto pair = bert->EncodePair("hello", "world", /*add_special_tokens=*/true, /*max_length=*/2);
  EXPECT_EQ(pair.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(pair.status().message()), HasSubstr("max_length 2 is less than the 3 special tokens"));
  EXPECT_EQ(bert->EncodePair("hello", "world", true, -1).status().code(), absl::StatusCode::kInvalidArgument);

  // Exactly the special tokens: the texts are cut away entirely.
  auto only_specials = bert->EncodePair("hello", "world", /*add_special_tokens=*/true, /*max_length=*/3);
  ASSERT_TRUE(only_specials.ok()) << only_specials.status();
  EXPECT_THAT(only_specials->ids, ::testing::ElementsAre(101, 102, 102));
  EXPECT_THAT(only_specials->type_ids, ::testing::ElementsAre(0, 0, 1));
  // Without special tokens the whole max_length is the texts'.
  auto plain = bert->EncodeWithTypes("hello world", /*add_special_tokens=*/false, /*max_length=*/1);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->ids.size(), 1u);
  // 0: no truncation.
  auto untruncated = bert->EncodeWithTypes("hello world", true, 0);
  ASSERT_TRUE(untruncated.ok());
  EXPECT_EQ(untruncated->ids, bert->EncodeWithTypes("hello world")->ids);
}

TEST(EncoderTokenizerTest, LongestFirstSplitsThePairBudget) {
  // No post-processor: the budget is max_length itself, type ids tell the
  // texts apart, and each single letter is one token. The table is the Rust
  // library's own (truncate_encodings_longest_first, max_length 7).
  auto tokenizer = PatchedTokenizer("encoders/bert-base-uncased", json{{"/post_processor", nullptr}});
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const std::string empty, short_text = "a b", medium = "a b c d", long_text = "a b c d e f g h";
  struct Case {
    const std::string& a;
    const std::string& b;
    int n1, n2;
  };
  const Case cases[] = {
      {empty, empty, 0, 0},          {empty, short_text, 0, 2},      {empty, medium, 0, 4},
      {empty, long_text, 0, 7},      {short_text, empty, 2, 0},      {short_text, short_text, 2, 2},
      {short_text, medium, 2, 4},    {short_text, long_text, 2, 5},  {medium, empty, 4, 0},
      {medium, short_text, 4, 2},    {medium, medium, 3, 4},         {medium, long_text, 3, 4},
      {long_text, empty, 7, 0},      {long_text, short_text, 5, 2},  {long_text, medium, 4, 3},
      {long_text, long_text, 3, 4},
  };
  for (const Case& c : cases) {
    auto encoding = (*tokenizer)->EncodePair(c.a, c.b, /*add_special_tokens=*/true, /*max_length=*/7);
    ASSERT_TRUE(encoding.ok()) << encoding.status();
    const auto n1 = std::count(encoding->type_ids.begin(), encoding->type_ids.end(), 0);
    const auto n2 = std::count(encoding->type_ids.begin(), encoding->type_ids.end(), 1);
    EXPECT_EQ(n1, c.n1) << json(c.a).dump() << " + " << json(c.b).dump();
    EXPECT_EQ(n2, c.n2) << json(c.a).dump() << " + " << json(c.b).dump();
  }
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
