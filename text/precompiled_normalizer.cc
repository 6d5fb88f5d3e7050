#include "text/precompiled_normalizer.h"

#include <utf8proc.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "text/utf8.h"

namespace gantry::text {
namespace {

// Clusters of this many bytes or more are never replaced whole (the
// reference's rule, kept for identical output).
constexpr size_t kWholeClusterBytes = 6;

class Precompiled : public Normalizer {
 public:
  Precompiled(std::vector<uint32_t> units, std::string normalized)
      : units_(std::move(units)), normalized_(std::move(normalized)) {}

  void Normalize(std::string* text) const override {
    if (units_.empty()) return;
    std::string out;
    out.reserve(text->size());
    utf8proc_int32_t state = 0;
    size_t pos = 0;
    while (pos < text->size()) {
      // One extended grapheme cluster: [start, pos).
      const size_t start = pos;
      char32_t previous = NextCodePoint(*text, &pos);
      while (pos < text->size()) {
        size_t next = pos;
        const char32_t c = NextCodePoint(*text, &next);
        if (utf8proc_grapheme_break_stateful(static_cast<utf8proc_int32_t>(previous),
                                             static_cast<utf8proc_int32_t>(c), &state)) {
          break;
        }
        previous = c;
        pos = next;
      }
      const absl::string_view cluster(text->data() + start, pos - start);
      if (cluster.size() < kWholeClusterBytes) {
        if (auto replacement = Transform(cluster)) {
          out.append(replacement->data(), replacement->size());
          continue;
        }
      }
      for (size_t p = 0; p < cluster.size();) {
        const size_t char_start = p;
        NextCodePoint(cluster, &p);
        const absl::string_view c = cluster.substr(char_start, p - char_start);
        auto replacement = Transform(c);
        out.append(replacement ? replacement->data() : c.data(), replacement ? replacement->size() : c.size());
      }
    }
    *text = std::move(out);
  }

 private:
  // The replacement of the shortest key that prefixes `chunk`, if any
  // (darts-clone's common prefix search, first result).
  std::optional<absl::string_view> Transform(absl::string_view chunk) const {
    size_t node = 0;
    uint32_t unit = units_[node];
    node ^= Offset(unit);
    for (unsigned char c : chunk) {
      if (c == 0) break;
      node ^= c;
      if (node >= units_.size()) return std::nullopt;
      unit = units_[node];
      if ((unit & ((1u << 31) | 0xFF)) != c) return std::nullopt;
      node ^= Offset(unit);
      if (node >= units_.size()) return std::nullopt;
      if ((unit >> 8) & 1) {
        const size_t begin = units_[node] & ((1u << 31) - 1);
        if (begin >= normalized_.size()) return std::nullopt;
        const size_t end = normalized_.find('\0', begin);
        return absl::string_view(normalized_).substr(begin, (end == std::string::npos ? normalized_.size() : end) - begin);
      }
    }
    return std::nullopt;
  }

  static size_t Offset(uint32_t unit) { return (unit >> 10) << ((unit & (1u << 9)) >> 6); }

  std::vector<uint32_t> units_;
  std::string normalized_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> MakePrecompiledNormalizer(absl::string_view charsmap_base64) {
  std::string blob;
  if (!absl::Base64Unescape(charsmap_base64, &blob)) {
    return absl::InvalidArgumentError("normalizer Precompiled: precompiled_charsmap is not base64");
  }
  if (blob.empty()) return std::make_unique<Precompiled>(std::vector<uint32_t>(), "");
  uint32_t trie_bytes = 0;
  if (blob.size() < 4) return absl::InvalidArgumentError("normalizer Precompiled: precompiled_charsmap is truncated");
  std::memcpy(&trie_bytes, blob.data(), 4);  // little-endian, as every supported host
  if (trie_bytes % 4 != 0 || trie_bytes == 0 || blob.size() - 4 < trie_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("normalizer Precompiled: trie of ", trie_bytes, " bytes does not fit the ", blob.size(),
                     "-byte precompiled_charsmap"));
  }
  std::vector<uint32_t> units(trie_bytes / 4);
  std::memcpy(units.data(), blob.data() + 4, trie_bytes);
  std::string normalized = blob.substr(4 + trie_bytes);
  if (auto s = ValidateUtf8(normalized); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("normalizer Precompiled: replacement strings: ", s.message()));
  }
  return std::make_unique<Precompiled>(std::move(units), std::move(normalized));
}

}  // namespace gantry::text
