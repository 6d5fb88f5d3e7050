// Code point sets to UTF-8 byte sequences (utf8_ranges.h).
#include "text/guided/utf8_ranges.h"

#include <algorithm>

namespace gantry::guided::internal {

CodePointSet CodePointSet::Range(char32_t lo, char32_t hi) {
  CodePointSet set;
  set.Add(lo, hi);
  return set;
}

void CodePointSet::Add(char32_t lo, char32_t hi) {
  if (lo > hi) return;
  ranges_.emplace_back(lo, std::min(hi, kMaxCodePoint));
  Normalize();
}

void CodePointSet::AddSet(const CodePointSet& other) {
  ranges_.insert(ranges_.end(), other.ranges_.begin(), other.ranges_.end());
  Normalize();
}

void CodePointSet::Normalize() {
  std::sort(ranges_.begin(), ranges_.end());
  std::vector<std::pair<char32_t, char32_t>> merged;
  for (const auto& r : ranges_) {
    if (!merged.empty() && r.first <= merged.back().second + 1) {
      merged.back().second = std::max(merged.back().second, r.second);
    } else {
      merged.push_back(r);
    }
  }
  ranges_ = std::move(merged);
}

CodePointSet CodePointSet::Complement() const {
  CodePointSet out;
  char32_t next = 0;
  for (const auto& r : ranges_) {
    if (r.first > next) out.ranges_.emplace_back(next, r.first - 1);
    next = r.second + 1;
  }
  if (next <= kMaxCodePoint) out.ranges_.emplace_back(next, kMaxCodePoint);
  return out;
}

CodePointSet CodePointSet::Intersect(const CodePointSet& other) const {
  CodePointSet out;
  for (const auto& [lo, hi] : ranges_) {
    for (const auto& [olo, ohi] : other.ranges_) {
      if (std::max(lo, olo) <= std::min(hi, ohi)) out.ranges_.emplace_back(std::max(lo, olo), std::min(hi, ohi));
    }
  }
  out.Normalize();
  return out;
}

bool CodePointSet::Contains(char32_t c) const {
  for (const auto& r : ranges_) {
    if (c >= r.first && c <= r.second) return true;
  }
  return false;
}

namespace {

int EncodedLength(char32_t c) { return c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4; }

void Encode(char32_t c, int n, uint8_t* out) {
  static constexpr uint8_t kLead[5] = {0, 0, 0xC0, 0xE0, 0xF0};
  for (int i = n - 1; i > 0; --i) {
    out[i] = static_cast<uint8_t>(0x80 | (c & 0x3F));
    c >>= 6;
  }
  out[0] = static_cast<uint8_t>(n == 1 ? c : (kLead[n] | c));
}

// [lo, hi] with one encoded length and no surrogates: split until each piece
// is a product of byte ranges (every continuation position spans 80..BF
// except at the shared prefix).
void AddSequences(char32_t lo, char32_t hi, std::vector<ExprPtr>* out) {
  int n = EncodedLength(lo);
  for (int i = 1; i < n; ++i) {
    char32_t m = (char32_t{1} << (6 * i)) - 1;
    if ((lo & ~m) != (hi & ~m)) {
      if ((lo & m) != 0) {
        AddSequences(lo, lo | m, out);
        AddSequences((lo | m) + 1, hi, out);
        return;
      }
      if ((hi & m) != m) {
        AddSequences(lo, (hi & ~m) - 1, out);
        AddSequences(hi & ~m, hi, out);
        return;
      }
    }
  }
  uint8_t a[4], b[4];
  Encode(lo, n, a);
  Encode(hi, n, b);
  std::vector<ExprPtr> parts;
  for (int i = 0; i < n; ++i) parts.push_back(ByteRange(a[i], b[i]));
  out->push_back(Seq(std::move(parts)));
}

}  // namespace

ExprPtr Utf8Class(const CodePointSet& set) {
  std::vector<ExprPtr> options;
  ByteSet ascii;
  static constexpr char32_t kBounds[][2] = {{0, 0x7F}, {0x80, 0x7FF}, {0x800, 0xD7FF}, {0xE000, 0xFFFF},
                                            {0x10000, 0x10FFFF}};
  for (const auto& r : set.ranges()) {
    for (const auto& b : kBounds) {
      char32_t lo = std::max(r.first, b[0]), hi = std::min(r.second, b[1]);
      if (lo > hi) continue;
      if (hi < 0x80) {
        for (char32_t c = lo; c <= hi; ++c) ascii.set(c);
      } else {
        AddSequences(lo, hi, &options);
      }
    }
  }
  if (ascii.any()) options.insert(options.begin(), Bytes(ascii));
  return Alt(std::move(options));
}

}  // namespace gantry::guided::internal
