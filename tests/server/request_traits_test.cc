// The SerializationTraits of Gantry's request messages (proto/request_traits.h)
// as gRPC calls them, and that every request message of the API has them.
#include "proto/request_traits.h"

#include <google/protobuf/stubs/logging.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>

#include <set>
#include <string>
#include <type_traits>

#include "gantry/v1/gantry.grpc.pb.h"
#include "gtest/gtest.h"

namespace gantry::proto {
namespace {

#define GANTRY_EXPECT_TRAITS(Request)                                                                               \
  static_assert(std::is_base_of_v<RequestSerializationTraits<v1::Request>, grpc::SerializationTraits<v1::Request>>, \
                #Request " is not deserialised by DeserializeRequest");
// A few (the list may name messages gantry.proto does not define yet).
GANTRY_EXPECT_TRAITS(GenerateRequest)
GANTRY_EXPECT_TRAITS(ChatRequest)
GANTRY_EXPECT_TRAITS(GetModelRequest)
#undef GANTRY_EXPECT_TRAITS

class RequestTraitsTest : public ::testing::Test {
 private:
  google::protobuf::LogSilencer silence_;  // protobuf logs each invalid string
};

TEST_F(RequestTraitsTest, EveryRequestMessageOfTheApiIsListed) {
#define GANTRY_REQUEST_NAME(Request) "gantry.v1." #Request,
  const std::set<std::string> listed = {GANTRY_REQUEST_MESSAGES(GANTRY_REQUEST_NAME)};
#undef GANTRY_REQUEST_NAME
  const google::protobuf::FileDescriptor* file = v1::ChatRequest::descriptor()->file();
  ASSERT_GT(file->service_count(), 0);
  for (int s = 0; s < file->service_count(); ++s) {
    const google::protobuf::ServiceDescriptor* service = file->service(s);
    for (int m = 0; m < service->method_count(); ++m) {
      const google::protobuf::MethodDescriptor* method = service->method(m);
      EXPECT_EQ(listed.count(method->input_type()->full_name()), 1u)
          << method->full_name() << ": add " << method->input_type()->name()
          << " to GANTRY_REQUEST_MESSAGES in proto/request_traits.h";
    }
  }
}

grpc::ByteBuffer Buffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

// ChatRequest bytes with "@@" in the third message's content at byte 5.
std::string ChatBytes() {
  v1::ChatRequest request;
  request.set_model("demo");
  for (const char* content : {"one", "two", "three@@ and more"}) {
    v1::ChatMessage* message = request.add_messages();
    message->set_role("user");
    message->set_content(content);
  }
  return request.SerializeAsString();
}

std::string Patch(std::string bytes, const std::string& placeholder, const std::string& replacement) {
  const size_t at = bytes.find(placeholder);
  EXPECT_NE(at, std::string::npos);
  EXPECT_EQ(placeholder.size(), replacement.size());
  if (at != std::string::npos) bytes.replace(at, placeholder.size(), replacement);
  return bytes;
}

TEST_F(RequestTraitsTest, InvalidUtf8NamesTheFieldAndByte) {
  grpc::ByteBuffer buffer = Buffer(Patch(ChatBytes(), "@@", "\xE2("));
  v1::ChatRequest request;
  const grpc::Status status = grpc::SerializationTraits<v1::ChatRequest>::Deserialize(&buffer, &request);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(), "request field messages[2].content is not valid UTF-8 (byte 5)");
  // Kept for the interceptor, once.
  std::optional<grpc::Status> kept = internal::TakeRequestError();
  ASSERT_TRUE(kept.has_value());
  EXPECT_EQ(kept->error_message(), status.error_message());
  EXPECT_FALSE(internal::TakeRequestError().has_value());
}

TEST_F(RequestTraitsTest, OtherUnparsableBytesAreNotAValidMessage) {
  for (const std::string& bytes : {std::string("\x0a\x05" "de"), std::string("\xFF\xFF\xFF"),
                                   ChatBytes().substr(0, ChatBytes().size() - 3)}) {
    grpc::ByteBuffer buffer = Buffer(bytes);
    v1::ChatRequest request;
    const grpc::Status status = grpc::SerializationTraits<v1::ChatRequest>::Deserialize(&buffer, &request);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(status.error_message(), "request is not a valid gantry.v1.ChatRequest message");
  }
  grpc::ByteBuffer buffer = Buffer(std::string("\x0a\x01\xFF", 3));
  v1::GetModelRequest request;
  EXPECT_EQ(grpc::SerializationTraits<v1::GetModelRequest>::Deserialize(&buffer, &request).error_message(),
            "request field name is not valid UTF-8 (byte 0)");
}

TEST_F(RequestTraitsTest, ValidRequestsParseAsBefore) {
  (void)internal::TakeRequestError();
  grpc::ByteBuffer buffer = Buffer(ChatBytes());
  v1::ChatRequest request;
  ASSERT_TRUE(grpc::SerializationTraits<v1::ChatRequest>::Deserialize(&buffer, &request).ok());
  EXPECT_EQ(request.SerializeAsString(), ChatBytes());
  EXPECT_FALSE(internal::TakeRequestError().has_value());

  // Serialize is gRPC's: the same bytes, small and large (sliced) messages.
  for (size_t size : {10, 100000}) {
    request.mutable_messages(0)->set_content(std::string(size, 'x'));
    grpc::ByteBuffer out;
    bool own_buffer = false;
    ASSERT_TRUE(grpc::SerializationTraits<v1::ChatRequest>::Serialize(request, &out, &own_buffer).ok());
    grpc::Slice slice;
    ASSERT_TRUE(out.DumpToSingleSlice(&slice).ok());
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(slice.begin()), slice.size()), request.SerializeAsString());
  }
}

TEST_F(RequestTraitsTest, NoPayloadIsGrpcsInternalError) {
  v1::ChatRequest request;
  const grpc::Status status = grpc::SerializationTraits<v1::ChatRequest>::Deserialize(nullptr, &request);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INTERNAL);
}

}  // namespace
}  // namespace gantry::proto
