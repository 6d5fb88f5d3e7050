// Requests that do not parse, sent as raw bytes to the real gantry-server
// (issue 13): INVALID_ARGUMENT naming the field and byte of invalid UTF-8, or
// saying the bytes are no message of the method's type; not gRPC's bare
// INTERNAL or UNIMPLEMENTED. The server keeps serving.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>

#include "gantry/v1/gantry.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/server/shared_server.h"

namespace gantry {
namespace {

using namespace std::chrono_literals;

class InvalidRequestTest : public testing::SharedServerTest<InvalidRequestTest> {
 public:
  static const char* Name() { return "invalid_request_test"; }
  static std::string Config() {
    const std::string root = GANTRY_SOURCE_DIR;
    return "drain_timeout_seconds: 1\n"
           "defaults:\n  kv_cache_mib: 16\n"
           "models:\n"
           "  - name: demo\n    path: " + root + "/models/demo\n    resident: true\n    max_context: 2048\n";
  }

 protected:
  // Sends `bytes` as the request of `method` ("/gantry.v1.Inference/Chat"),
  // whatever they hold, and returns the call's status.
  grpc::Status Send(const std::string& method, const std::string& bytes) {
    grpc::GenericStub stub(channel_);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 10s);
    grpc::Slice slice(bytes);
    grpc::ByteBuffer request(&slice, 1), response;
    std::mutex mu;
    std::condition_variable done_cv;
    bool done = false;
    grpc::Status status;
    stub.UnaryCall(&context, method, grpc::StubOptions(), &request, &response, [&](grpc::Status s) {
      std::lock_guard<std::mutex> lock(mu);
      status = std::move(s);
      done = true;
      done_cv.notify_one();
    });
    std::unique_lock<std::mutex> lock(mu);
    done_cv.wait(lock, [&] { return done; });
    return status;
  }
};

// `message` serialised, with `placeholder` (unique in the bytes) replaced by
// as many other bytes.
std::string Patched(const google::protobuf::Message& message, const std::string& placeholder,
                    const std::string& replacement) {
  std::string bytes = message.SerializeAsString();
  const size_t at = bytes.find(placeholder);
  EXPECT_NE(at, std::string::npos);
  EXPECT_EQ(bytes.find(placeholder, at + 1), std::string::npos);
  EXPECT_EQ(placeholder.size(), replacement.size());
  if (at != std::string::npos) bytes.replace(at, placeholder.size(), replacement);
  return bytes;
}

TEST_F(InvalidRequestTest, InvalidUtf8NamesTheFieldAndByte) {
  v1::ChatRequest chat;
  chat.set_model("demo");
  for (const char* content : {"Hi", "Hello", "Tell me about Gantry@"}) {
    v1::ChatMessage* message = chat.add_messages();
    message->set_role("user");
    message->set_content(content);
  }
  grpc::Status status = Send("/gantry.v1.Inference/Chat", Patched(chat, "@", "\xFF"));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_EQ(status.error_message(), "request field messages[2].content is not valid UTF-8 (byte 20)");

  v1::GenerateRequest generate;
  generate.set_model("demo");
  generate.set_text("The license grants @@");
  generate.mutable_parameters()->add_stop("ok");
  status = Send("/gantry.v1.Inference/Generate", Patched(generate, "@@", "\xED\xA0"));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_EQ(status.error_message(), "request field text is not valid UTF-8 (byte 19)");
  generate.set_text("fine");
  generate.mutable_parameters()->set_stop(0, "@");
  status = Send("/gantry.v1.Inference/Generate", Patched(generate, "@", "\x80"));
  EXPECT_EQ(status.error_message(), "request field parameters.stop[0] is not valid UTF-8 (byte 0)");

  v1::TokenizeRequest tokenize;
  tokenize.set_model("demo");
  tokenize.set_text("abc@");
  status = Send("/gantry.v1.Inference/Tokenize", Patched(tokenize, "@", "\xC3"));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_EQ(status.error_message(), "request field text is not valid UTF-8 (byte 3)");
}

TEST_F(InvalidRequestTest, OtherUnparsableBytesAreNotAValidMessage) {
  for (const std::string& bytes : {std::string("\x0a\x05" "de"), std::string("\x0f\x00", 2)}) {
    grpc::Status status = Send("/gantry.v1.Inference/Chat", bytes);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
    EXPECT_EQ(status.error_message(), "request is not a valid gantry.v1.ChatRequest message");
    status = Send("/gantry.v1.Inference/Detokenize", bytes);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
    EXPECT_EQ(status.error_message(), "request is not a valid gantry.v1.DetokenizeRequest message");
  }
}

// Models is a sync service: gRPC parses its requests through
// SerializationTraits<MessageLite>, out of reach of proto/request_traits.h,
// so the answer names the message type but not the field.
TEST_F(InvalidRequestTest, ModelsRequestsThatDoNotParseAreInvalidArguments) {
  v1::GetModelRequest get;
  get.set_name("demo@");
  grpc::Status status = Send("/gantry.v1.Models/Get", Patched(get, "@", "\xFF"));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_EQ(status.error_message(), "request is not a valid gantry.v1.GetModelRequest message");
  status = Send("/gantry.v1.Models/Unload", "\x0a\x05" "de");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_EQ(status.error_message(), "request is not a valid gantry.v1.UnloadModelRequest message");
}

TEST_F(InvalidRequestTest, TheServerKeepsServing) {
  v1::TokenizeRequest tokenize;
  tokenize.set_model("demo");
  tokenize.set_text("@");
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(Send("/gantry.v1.Inference/Tokenize", Patched(tokenize, "@", "\xFE")).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  EXPECT_EQ(server_->WaitExit(100ms), -1) << "the server exited";

  // The typed stubs, and their serialisation, as before.
  auto inference = v1::Inference::NewStub(channel_);
  grpc::ClientContext tokenize_context;
  tokenize.set_text("The license grants");
  v1::TokenizeResponse tokens;
  grpc::Status status = inference->Tokenize(&tokenize_context, tokenize, &tokens);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_GT(tokens.token_ids_size(), 0);

  grpc::ClientContext chat_context;
  v1::ChatRequest chat;
  chat.set_model("demo");
  v1::ChatMessage* message = chat.add_messages();
  message->set_role("user");
  message->set_content("你好");
  chat.mutable_parameters()->set_max_tokens(4);
  chat.mutable_parameters()->set_seed(1);
  auto reader = inference->Chat(&chat_context, chat);
  v1::GenerateResponse response;
  int messages = 0;
  while (reader->Read(&response)) ++messages;
  status = reader->Finish();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_GT(messages, 0);

  auto models = v1::Models::NewStub(channel_);
  grpc::ClientContext get_context;
  v1::GetModelRequest get;
  get.set_name("demo");
  v1::ModelStatus model;
  status = models->Get(&get_context, get, &model);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(model.name(), "demo");
}

}  // namespace
}  // namespace gantry
