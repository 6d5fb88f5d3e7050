#include "text/stream_decoder.h"

#include "gtest/gtest.h"
#include "tests/text/text_test_util.h"

namespace gantry::text {
namespace {

class StreamDecoderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tokenizer_ = testing::LoadTokenizer("llama3");
    ASSERT_NE(tokenizer_, nullptr);
  }
  std::vector<int32_t> Encode(const std::string& text) { return *tokenizer_->Encode(text, false); }
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(StreamDecoderTest, HoldsSplitCharactersUntilWhole) {
  // "🤗" is one character over several byte-level tokens.
  std::vector<int32_t> ids = Encode("a🤗");
  ASSERT_GE(ids.size(), 3u);
  StreamDecoder stream(*tokenizer_, {}, false);
  std::vector<std::string> releases;
  for (int32_t id : ids) releases.push_back(stream.Add(id).text);
  EXPECT_EQ(releases.front(), "a");
  for (size_t i = 1; i + 1 < releases.size(); ++i) EXPECT_EQ(releases[i], "") << i;
  EXPECT_EQ(releases.back(), "🤗");
}

TEST_F(StreamDecoderTest, StopStringAcrossTokenBoundaries) {
  std::vector<int32_t> ids = Encode("The answer is 42.\nUser: next question");
  StreamDecoder stream(*tokenizer_, {"\nUser:"}, false);
  std::string out;
  bool stopped = false;
  for (int32_t id : ids) {
    auto release = stream.Add(id);
    out += release.text;
    // Nothing past the stop is ever released, even partially.
    EXPECT_EQ(out.find('\n'), std::string::npos) << out;
    if (release.stopped) {
      stopped = true;
      EXPECT_EQ(release.stop, "\nUser:");
      break;
    }
  }
  EXPECT_TRUE(stopped);
  EXPECT_EQ(out, "The answer is 42.");
  EXPECT_TRUE(stream.Add(ids.back()).text.empty());
}

TEST_F(StreamDecoderTest, HeldPrefixIsReleasedWhenItDoesNotComplete) {
  std::vector<int32_t> ids = Encode("x\nUs then");
  StreamDecoder stream(*tokenizer_, {"\nUser:"}, false);
  std::string out;
  for (int32_t id : ids) out += stream.Add(id).text;
  out += stream.Finish().text;
  EXPECT_EQ(out, "x\nUs then");
}

TEST_F(StreamDecoderTest, EarliestStopWinsAndStopInsideOneToken) {
  std::vector<int32_t> ids = Encode("alpha beta gamma");
  StreamDecoder stream(*tokenizer_, {"gamma", "eta"}, false);
  std::string out;
  for (int32_t id : ids) {
    auto release = stream.Add(id);
    out += release.text;
    if (release.stopped) {
      EXPECT_EQ(release.stop, "eta");
      break;
    }
  }
  EXPECT_EQ(out, "alpha b");
}

TEST_F(StreamDecoderTest, CutOffCharacterAtTheEndBecomesReplacement) {
  std::vector<int32_t> ids = Encode("🤗");
  StreamDecoder stream(*tokenizer_, {}, false);
  std::string out = stream.Add(ids[0]).text;
  out += stream.Finish().text;
  EXPECT_EQ(out, "\xEF\xBF\xBD");
}

TEST_F(StreamDecoderTest, SkipsSpecialTokensWhenAsked) {
  StreamDecoder stream(*tokenizer_, {}, /*skip_special_tokens=*/true);
  std::string out = stream.Add(128009).text;  // <|eot_id|>
  for (int32_t id : Encode("ok")) out += stream.Add(id).text;
  EXPECT_EQ(out, "ok");
}

}  // namespace
}  // namespace gantry::text
