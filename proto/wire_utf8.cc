#include "proto/wire_utf8.h"

#include <cstdint>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.pb.h"

namespace gantry::proto {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::FileDescriptor;

// Protobuf's default recursion limit: deeper messages fail to parse anyway,
// and hostile nesting must not overflow the stack here.
constexpr int kMaxDepth = 100;

enum WireType : uint32_t {
  kVarint = 0,
  kFixed64 = 1,
  kLengthDelimited = 2,
  kStartGroup = 3,
  kEndGroup = 4,
  kFixed32 = 5,
};

enum class Walk { kEnd, kFound, kMalformed };

bool ReadVarint(absl::string_view* in, uint64_t* value) {
  *value = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (in->empty()) return false;
    const uint8_t byte = static_cast<uint8_t>(in->front());
    in->remove_prefix(1);
    *value |= uint64_t{byte & 0x7Fu} << shift;
    if ((byte & 0x80) == 0) return true;
  }
  return false;
}

bool ReadTag(absl::string_view* in, uint32_t* number, uint32_t* wire_type) {
  uint64_t tag;
  if (!ReadVarint(in, &tag) || tag > UINT32_MAX || (tag >> 3) == 0) return false;
  *number = static_cast<uint32_t>(tag >> 3);
  *wire_type = static_cast<uint32_t>(tag & 7);
  return true;
}

bool ReadLengthDelimited(absl::string_view* in, absl::string_view* value) {
  uint64_t length;
  if (!ReadVarint(in, &length) || length > in->size()) return false;
  *value = in->substr(0, length);
  in->remove_prefix(length);
  return true;
}

bool ReadFixed(absl::string_view* in, size_t size, uint64_t* value) {
  if (in->size() < size) return false;
  *value = 0;
  for (size_t i = 0; i < size; ++i) *value |= uint64_t{static_cast<uint8_t>((*in)[i])} << (8 * i);
  in->remove_prefix(size);
  return true;
}

// Skips the value of a field whose tag was just read; a group through its
// END_GROUP tag.
bool SkipValue(absl::string_view* in, uint32_t number, uint32_t wire_type, int depth) {
  uint64_t ignored;
  absl::string_view ignored_view;
  switch (wire_type) {
    case kVarint:
      return ReadVarint(in, &ignored);
    case kFixed64:
      return ReadFixed(in, 8, &ignored);
    case kFixed32:
      return ReadFixed(in, 4, &ignored);
    case kLengthDelimited:
      return ReadLengthDelimited(in, &ignored_view);
    case kStartGroup: {
      if (depth >= kMaxDepth) return false;
      uint32_t inner_number, inner_wire_type;
      while (ReadTag(in, &inner_number, &inner_wire_type)) {
        if (inner_wire_type == kEndGroup) return inner_number == number;
        if (!SkipValue(in, inner_number, inner_wire_type, depth + 1)) return false;
      }
      return false;
    }
    default:
      return false;
  }
}

// Protobuf (3.21) rejects invalid UTF-8 only in the strings of proto3 files;
// proto2 ones are at most logged.
bool RequiresUtf8(const FieldDescriptor& field) {
  return field.type() == FieldDescriptor::TYPE_STRING && field.file()->syntax() == FileDescriptor::SYNTAX_PROTO3;
}

// A map entry's key as a path names it (`"team"`, `7`, `true`), or nullopt
// when it cannot be read as a valid key (the entry's index names it then).
std::optional<std::string> MapKey(const Descriptor& entry, absl::string_view in) {
  const FieldDescriptor* key = entry.FindFieldByNumber(1);
  if (key == nullptr) return std::nullopt;
  // An absent key is the default; the last one on the wire wins, as in parsing.
  uint64_t number_key = 0;
  absl::string_view string_key;
  uint32_t number, wire_type;
  while (ReadTag(&in, &number, &wire_type)) {
    if (number != 1) {
      if (!SkipValue(&in, number, wire_type, 0)) return std::nullopt;
      continue;
    }
    bool read = false;
    switch (key->type()) {
      case FieldDescriptor::TYPE_STRING:
        read = wire_type == kLengthDelimited && ReadLengthDelimited(&in, &string_key);
        break;
      case FieldDescriptor::TYPE_FIXED32:
      case FieldDescriptor::TYPE_SFIXED32:
        read = wire_type == kFixed32 && ReadFixed(&in, 4, &number_key);
        break;
      case FieldDescriptor::TYPE_FIXED64:
      case FieldDescriptor::TYPE_SFIXED64:
        read = wire_type == kFixed64 && ReadFixed(&in, 8, &number_key);
        break;
      default:
        read = wire_type == kVarint && ReadVarint(&in, &number_key);
        break;
    }
    if (!read) return std::nullopt;
  }
  if (!in.empty()) return std::nullopt;
  switch (key->type()) {
    case FieldDescriptor::TYPE_STRING:
      if (FirstInvalidUtf8Byte(string_key)) return std::nullopt;
      return absl::StrCat("\"", absl::Utf8SafeCEscape(string_key), "\"");
    case FieldDescriptor::TYPE_BOOL:
      return number_key != 0 ? "true" : "false";
    case FieldDescriptor::TYPE_INT32:
    case FieldDescriptor::TYPE_SFIXED32:
      return absl::StrCat(static_cast<int32_t>(number_key));
    case FieldDescriptor::TYPE_UINT32:
    case FieldDescriptor::TYPE_FIXED32:
      return absl::StrCat(static_cast<uint32_t>(number_key));
    case FieldDescriptor::TYPE_INT64:
    case FieldDescriptor::TYPE_SFIXED64:
      return absl::StrCat(static_cast<int64_t>(number_key));
    case FieldDescriptor::TYPE_SINT32:
      return absl::StrCat(static_cast<int32_t>(static_cast<uint32_t>(number_key) >> 1) ^
                          -static_cast<int32_t>(number_key & 1));
    case FieldDescriptor::TYPE_SINT64:
      return absl::StrCat(static_cast<int64_t>(number_key >> 1) ^ -static_cast<int64_t>(number_key & 1));
    default:
      return absl::StrCat(number_key);
  }
}

// The path of occurrence `index` of `field` (whose value is `value`) in the
// message at `prefix`.
std::string FieldPath(const std::string& prefix, const FieldDescriptor& field, int index, absl::string_view value) {
  // A map's value is named by its entry: labels["team"], not labels["team"].value.
  if (field.containing_type()->options().map_entry() && field.number() == 2) return prefix;
  std::string path = prefix.empty() ? field.name() : absl::StrCat(prefix, ".", field.name());
  if (field.is_map()) {
    std::optional<std::string> key = MapKey(*field.message_type(), value);
    absl::StrAppend(&path, "[", key ? *key : absl::StrCat(index), "]");
  } else if (field.is_repeated()) {
    absl::StrAppend(&path, "[", index, "]");
  }
  return path;
}

// Walks the fields of one `message` in `*in`: to the end of `*in`, or through
// the END_GROUP tag numbered `group` when that is not 0.
Walk WalkMessage(const Descriptor& message, absl::string_view* in, uint32_t group, int depth, const std::string& path,
                 InvalidUtf8Field* found) {
  // Occurrences so far of each field, which index repeated ones.
  std::vector<int> seen(message.field_count(), 0);
  while (!in->empty()) {
    uint32_t number, wire_type;
    if (!ReadTag(in, &number, &wire_type)) return Walk::kMalformed;
    if (wire_type == kEndGroup) return number == group ? Walk::kEnd : Walk::kMalformed;
    const FieldDescriptor* field = message.FindFieldByNumber(number);
    // A known field with another wire type is parsed as an unknown field.
    const bool nested =
        field != nullptr && ((field->type() == FieldDescriptor::TYPE_MESSAGE && wire_type == kLengthDelimited) ||
                             (field->type() == FieldDescriptor::TYPE_GROUP && wire_type == kStartGroup));
    const bool text = field != nullptr && RequiresUtf8(*field) && wire_type == kLengthDelimited;
    if (!nested && !text) {
      if (!SkipValue(in, number, wire_type, depth)) return Walk::kMalformed;
      continue;
    }
    const int index = seen[field->index()]++;
    if (text) {
      absl::string_view value;
      if (!ReadLengthDelimited(in, &value)) return Walk::kMalformed;
      if (std::optional<size_t> byte = FirstInvalidUtf8Byte(value)) {
        *found = {FieldPath(path, *field, index, value), *byte};
        return Walk::kFound;
      }
      continue;
    }
    if (depth >= kMaxDepth) return Walk::kMalformed;
    Walk walk;
    if (wire_type == kLengthDelimited) {
      absl::string_view value;
      if (!ReadLengthDelimited(in, &value)) return Walk::kMalformed;
      walk = WalkMessage(*field->message_type(), &value, 0, depth + 1, FieldPath(path, *field, index, value), found);
    } else {
      walk = WalkMessage(*field->message_type(), in, number, depth + 1, FieldPath(path, *field, index, {}), found);
    }
    if (walk != Walk::kEnd) return walk;
  }
  return group == 0 ? Walk::kEnd : Walk::kMalformed;
}

}  // namespace

std::optional<size_t> FirstInvalidUtf8Byte(absl::string_view text) {
  const auto* bytes = reinterpret_cast<const uint8_t*>(text.data());
  const size_t size = text.size();
  size_t i = 0;
  while (i < size) {
    const uint8_t lead = bytes[i];
    if (lead < 0x80) {
      ++i;
      continue;
    }
    // Sequence length and the range of the second byte (RFC 3629, table 3-7
    // of Unicode): narrower after E0, ED, F0 and F4 to exclude overlong
    // forms, surrogates and code points past U+10FFFF.
    size_t length;
    uint8_t low = 0x80, high = 0xBF;
    if (lead >= 0xC2 && lead <= 0xDF) {
      length = 2;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      length = 3;
      if (lead == 0xE0) low = 0xA0;
      if (lead == 0xED) high = 0x9F;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      length = 4;
      if (lead == 0xF0) low = 0x90;
      if (lead == 0xF4) high = 0x8F;
    } else {
      return i;
    }
    if (size - i < length || bytes[i + 1] < low || bytes[i + 1] > high) return i;
    for (size_t k = 2; k < length; ++k) {
      if (bytes[i + k] < 0x80 || bytes[i + k] > 0xBF) return i;
    }
    i += length;
  }
  return std::nullopt;
}

std::optional<InvalidUtf8Field> FindInvalidUtf8Field(const Descriptor& message, absl::string_view wire) {
  InvalidUtf8Field found;
  if (WalkMessage(message, &wire, 0, 0, "", &found) != Walk::kFound) return std::nullopt;
  return found;
}

}  // namespace gantry::proto
