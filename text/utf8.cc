#include "text/utf8.h"

#include <array>

#include "absl/strings/str_cat.h"

namespace gantry::text {
namespace {

struct ByteTables {
  std::array<char32_t, 256> to_code_point;
  std::array<int, 512> to_byte;  // code points < 512 cover every mapped value
};

ByteTables MakeByteTables() {
  ByteTables tables;
  tables.to_byte.fill(-1);
  auto printable = [](int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255); };
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    char32_t cp = printable(b) ? static_cast<char32_t>(b) : static_cast<char32_t>(next++);
    tables.to_code_point[b] = cp;
    tables.to_byte[cp] = b;
  }
  return tables;
}

const ByteTables& Tables() {
  static const ByteTables tables = MakeByteTables();
  return tables;
}

bool IsContinuation(unsigned char c) { return (c & 0xC0) == 0x80; }

}  // namespace

int Utf8SequenceLength(absl::string_view text, size_t pos) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  unsigned char c = s[pos];
  if (c < 0x80) return 1;
  int length;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    length = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    length = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;  // no surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    length = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  for (int i = 1; i < length; ++i) {
    if (pos + i >= n) return -1;
    unsigned char d = s[pos + i];
    if (i == 1 ? (d < lo || d > hi) : !IsContinuation(d)) return 0;
  }
  return length;
}

absl::Status ValidateUtf8(absl::string_view text) {
  for (size_t pos = 0; pos < text.size();) {
    int length = Utf8SequenceLength(text, pos);
    if (length <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("text is not valid UTF-8 at byte ", pos));
    }
    pos += length;
  }
  return absl::OkStatus();
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

char32_t NextCodePoint(absl::string_view text, size_t* pos) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data()) + *pos;
  int length = Utf8SequenceLength(text, *pos);
  if (length <= 0) {  // callers pass valid text; stay safe anyway
    ++*pos;
    return 0xFFFD;
  }
  *pos += length;
  switch (length) {
    case 1: return s[0];
    case 2: return ((s[0] & 0x1F) << 6) | (s[1] & 0x3F);
    case 3: return ((s[0] & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    default: return ((s[0] & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) | (s[3] & 0x3F);
  }
}

void DrainUtf8(std::string* pending, bool final, std::string* out) {
  const absl::string_view text(*pending);
  size_t pos = 0;
  while (pos < text.size()) {
    int length = Utf8SequenceLength(text, pos);
    if (length > 0) {
      out->append(text.data() + pos, length);
      pos += length;
      continue;
    }
    if (length < 0 && !final) break;  // may complete with the next token
    // A maximal invalid subpart: a lead byte and the continuation bytes that
    // fit it, or one stray byte.
    size_t end = pos + 1;
    unsigned char c = static_cast<unsigned char>(text[pos]);
    int expected = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 1;
    while (end < text.size() && end - pos < static_cast<size_t>(expected) &&
           IsContinuation(static_cast<unsigned char>(text[end])) &&
           Utf8SequenceLength(text.substr(0, end + 1), pos) != 0) {
      ++end;
    }
    out->append("\xEF\xBF\xBD");
    pos = end;
  }
  pending->erase(0, pos);
}

char32_t ByteToCodePoint(uint8_t byte) { return Tables().to_code_point[byte]; }

int CodePointToByte(char32_t cp) { return cp < 512 ? Tables().to_byte[cp] : -1; }

}  // namespace gantry::text
