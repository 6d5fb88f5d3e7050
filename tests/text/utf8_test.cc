#include "text/utf8.h"

#include "gtest/gtest.h"

namespace gantry::text {
namespace {

TEST(Utf8Test, SequenceLengths) {
  EXPECT_EQ(Utf8SequenceLength("a", 0), 1);
  EXPECT_EQ(Utf8SequenceLength("\xC3\xA9", 0), 2);
  EXPECT_EQ(Utf8SequenceLength("\xE4\xBD\xA0", 0), 3);
  EXPECT_EQ(Utf8SequenceLength("\xF0\x9F\xA4\x97", 0), 4);
  EXPECT_EQ(Utf8SequenceLength("\xF0\x9F", 0), -1);       // cut off
  EXPECT_EQ(Utf8SequenceLength("\xC0\xAF", 0), 0);        // overlong
  EXPECT_EQ(Utf8SequenceLength("\xED\xA0\x80", 0), 0);    // surrogate
  EXPECT_EQ(Utf8SequenceLength("\x80", 0), 0);            // stray continuation
}

TEST(Utf8Test, DrainHoldsCutOffAndReplacesInvalid) {
  std::string pending = "ab\xE4\xBD", out;
  DrainUtf8(&pending, false, &out);
  EXPECT_EQ(out, "ab");
  EXPECT_EQ(pending, "\xE4\xBD");
  pending += "\xA0!";
  DrainUtf8(&pending, false, &out);
  EXPECT_EQ(out, "ab\xE4\xBD\xA0!");
  EXPECT_TRUE(pending.empty());

  pending = "x\x80y\xE4\xBDz";  // stray byte, then a cut-off sequence followed by more text
  out.clear();
  DrainUtf8(&pending, false, &out);
  EXPECT_EQ(out, "x\xEF\xBF\xBDy\xEF\xBF\xBDz");
  pending = "\xF0\x9F";
  out.clear();
  DrainUtf8(&pending, true, &out);
  EXPECT_EQ(out, "\xEF\xBF\xBD");
}

TEST(Utf8Test, ByteLevelTableIsABijection) {
  for (int b = 0; b < 256; ++b) EXPECT_EQ(CodePointToByte(ByteToCodePoint(static_cast<uint8_t>(b))), b);
  EXPECT_EQ(ByteToCodePoint(' '), U'\u0120');  // "Ġ"
  EXPECT_EQ(ByteToCodePoint('\n'), U'\u010A');  // "Ċ"
  EXPECT_EQ(ByteToCodePoint('a'), U'a');
}

}  // namespace
}  // namespace gantry::text
