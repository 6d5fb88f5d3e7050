// Which string field makes protobuf bytes fail to parse. Protobuf rejects a
// proto3 `string` holding invalid UTF-8 without saying which field it was;
// this walks the wire format with the message's descriptor to name it, so a
// client can be told the field path and the byte. Protobuf only, no gRPC.
#ifndef GANTRY_PROTO_WIRE_UTF8_H_
#define GANTRY_PROTO_WIRE_UTF8_H_

#include <cstddef>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "google/protobuf/descriptor.h"

namespace gantry::proto {

// Offset of the first byte of the first ill-formed UTF-8 sequence in `text`,
// or nullopt when it is all valid. Valid is what protobuf accepts (RFC 3629):
// no overlong forms, no surrogates, nothing above U+10FFFF.
std::optional<size_t> FirstInvalidUtf8Byte(absl::string_view text);

struct InvalidUtf8Field {
  // From the top message, e.g. "messages[2].content": repeated fields are
  // indexed by occurrence, map entries by key (`labels["team"]`, or by
  // occurrence when the key itself is the bad string: `labels[0].key`).
  std::string path;
  // Offset of the first invalid byte within the field's value, from 0.
  size_t byte = 0;
};

// The first field, in wire order and at any depth, that protobuf's parser
// rejects as invalid UTF-8 when `wire` is parsed as a `message`: a string
// field (map keys and values included) declared in a proto3 file. nullopt
// when there is none before the bytes end or stop being well-formed wire
// format; callers tell a malformed message from a valid one by parsing it.
std::optional<InvalidUtf8Field> FindInvalidUtf8Field(const google::protobuf::Descriptor& message,
                                                     absl::string_view wire);

}  // namespace gantry::proto

#endif  // GANTRY_PROTO_WIRE_UTF8_H_
