// The regex compiler: the language it accepts, and its errors.
#include "text/guided/regex_grammar.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/guided/guided_test_util.h"

namespace gantry::guided {
namespace {

using ::testing::HasSubstr;
using testing::Matches;
using testing::MustCompile;
using testing::RegexSpec;
using testing::SmallVocabulary;

std::shared_ptr<const Grammar> Regex(const std::string& pattern) {
  return MustCompile(RegexSpec(pattern), SmallVocabulary());
}

TEST(RegexTest, LiteralsClassesAndQuantifiers) {
  auto g = Regex("ab[c-e]x?y*z+");
  ASSERT_NE(g, nullptr);
  EXPECT_TRUE(Matches(g, "abcz"));
  EXPECT_TRUE(Matches(g, "abexyyyzz"));
  EXPECT_FALSE(Matches(g, "abfz"));
  EXPECT_FALSE(Matches(g, "abc"));
  EXPECT_FALSE(Matches(g, "abczq"));
}

TEST(RegexTest, CountedRepetition) {
  auto g = Regex("a{2,3}b{2}c{1,}");
  ASSERT_NE(g, nullptr);
  EXPECT_TRUE(Matches(g, "aabbc"));
  EXPECT_TRUE(Matches(g, "aaabbccc"));
  EXPECT_FALSE(Matches(g, "abbc"));
  EXPECT_FALSE(Matches(g, "aaaabbc"));
  EXPECT_FALSE(Matches(g, "aabbbc"));
  EXPECT_FALSE(Matches(g, "aabb"));
}

TEST(RegexTest, GroupsAlternationAndAnchors) {
  auto g = Regex("^(?:cat|dog)s?(-(\\d+)|(?<name>[A-Z]))$");
  ASSERT_NE(g, nullptr);
  EXPECT_TRUE(Matches(g, "cats-12"));
  EXPECT_TRUE(Matches(g, "dogX"));
  EXPECT_FALSE(Matches(g, "cow-1"));
  EXPECT_FALSE(Matches(g, "cat-"));
}

TEST(RegexTest, EscapesAndShorthands) {
  auto g = Regex("\\d\\w\\s\\.\\\\\\x41\\u00e9[\\d\\-]");
  ASSERT_NE(g, nullptr);
  EXPECT_TRUE(Matches(g, "1_ .\\A\xC3\xA9-"));
  EXPECT_TRUE(Matches(g, "9a\t.\\A\xC3\xA9" "7"));
  EXPECT_FALSE(Matches(g, "a_ .\\A\xC3\xA9-"));
  EXPECT_FALSE(Matches(g, "1_ x\\A\xC3\xA9-"));
}

TEST(RegexTest, DotAndNegatedClassesMatchWholeCodePoints) {
  auto g = Regex(".[^a-z]");
  ASSERT_NE(g, nullptr);
  EXPECT_TRUE(Matches(g, "\xE4\xB8\xAD\xF0\x9F\x98\x80"));  // 中😀
  EXPECT_TRUE(Matches(g, "aA"));
  EXPECT_TRUE(Matches(g, "a\n"));       // a negated class includes newline
  EXPECT_FALSE(Matches(g, "\na"));      // . does not
  EXPECT_FALSE(Matches(g, "ab"));
  EXPECT_FALSE(Matches(g, "\xE4\xB8"));  // half a code point
  EXPECT_FALSE(Matches(g, "\xE4\xB8\xAD\xE4\xB8"));
  EXPECT_FALSE(Matches(g, "\xC0\x80" "A"));  // overlong encodings are not UTF-8
}

TEST(RegexTest, EmptyAlternativeAndNullablePattern) {
  auto g = Regex("(a|)b*");
  ASSERT_NE(g, nullptr);
  EXPECT_TRUE(Matches(g, ""));
  EXPECT_TRUE(Matches(g, "abb"));
  EXPECT_TRUE(Matches(g, "bb"));
  EXPECT_FALSE(Matches(g, "aa"));
}

TEST(RegexTest, ErrorsNameTheOffset) {
  auto error = [](const std::string& pattern) { return testing::CompileError(RegexSpec(pattern)); };
  EXPECT_THAT(error("ab(c"), HasSubstr("unclosed '(' at offset 2"));
  EXPECT_THAT(error("ab)"), HasSubstr("unmatched ')' at offset 2"));
  EXPECT_THAT(error("a[b"), HasSubstr("unclosed '[' at offset 1"));
  EXPECT_THAT(error("*a"), HasSubstr("nothing to repeat at offset 0"));
  EXPECT_THAT(error("a(?=b)"), HasSubstr("lookaround"));
  EXPECT_THAT(error("(a)\\1"), HasSubstr("unsupported escape \\1 at offset 3"));
  EXPECT_THAT(error("a\\bc"), HasSubstr("word boundary"));
  EXPECT_THAT(error("a^b"), HasSubstr("anchors"));
  EXPECT_THAT(error("[z-a]"), HasSubstr("bad character range"));
  EXPECT_THAT(error("a{3,2}"), HasSubstr("m < n"));
  EXPECT_THAT(error("a{99999}"), HasSubstr("above 10000"));
  EXPECT_EQ(CompileGrammar(RegexSpec("[]"), SmallVocabulary()).status().code(),
            absl::StatusCode::kInvalidArgument);  // matches nothing
}

// Subset construction is exponential in patterns like ".*a.{n}"; such a
// grammar is refused at a state limit (quickly) instead of holding the
// thread (found by fuzz_guided_grammar), and the largest allowed grows no
// further.
TEST(RegexTest, AutomatonBlowUpIsRefusedNamingTheLimit) {
  const std::string blow_up = testing::CompileError(RegexSpec(".*a.{30}"));
  EXPECT_THAT(blow_up, HasSubstr("too complex"));
  EXPECT_THAT(blow_up, HasSubstr("100000 states"));
  // The fuzzer's input: ".*" then literal NULs and many '.'.
  std::string found = "..*..";
  found += std::string(8, '\0');
  found += std::string(27, '.') + "\"" + std::string(22, '.') + "\"...d";
  EXPECT_THAT(testing::CompileError(RegexSpec(found)), HasSubstr("too complex"));
  // A bounded but sizeable pattern still compiles.
  MustCompile(RegexSpec(".*a.{10}"), SmallVocabulary());
}

TEST(ChoiceTest, ExactlyOneOfTheStrings) {
  GrammarSpec spec;
  spec.kind = GrammarSpec::Kind::kChoice;
  spec.choices = {"cat", "category", "dog\"s"};
  auto g = MustCompile(spec, SmallVocabulary());
  ASSERT_NE(g, nullptr);
  EXPECT_TRUE(Matches(g, "cat"));
  EXPECT_TRUE(Matches(g, "category"));
  EXPECT_TRUE(Matches(g, "dog\"s"));
  EXPECT_FALSE(Matches(g, "cate"));
  EXPECT_FALSE(Matches(g, "dog"));
  spec.choices.clear();
  auto empty = CompileGrammar(spec, SmallVocabulary());
  ASSERT_FALSE(empty.ok());
  EXPECT_THAT(empty.status().message(), HasSubstr("empty"));
}

}  // namespace
}  // namespace gantry::guided
