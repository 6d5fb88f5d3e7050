// A test suite's one gantry-server process (started before its first test,
// stopped after its last) and, per test, a channel and stubs to it; and the
// reason a refusal carries, as a client reads it.
#ifndef GANTRY_TESTS_SERVER_SHARED_SERVER_H_
#define GANTRY_TESTS_SERVER_SHARED_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "gantry/v1/gantry.grpc.pb.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "gtest/gtest.h"
#include "tests/server/server_process.h"

namespace gantry::testing {

// `Suite` provides `static const char* Name()` and `static std::string Config()`
// (the server's YAML).
template <typename Suite>
class SharedServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new ServerProcess(Suite::Name(), Suite::Config());
    ASSERT_FALSE(server_->address().empty()) << server_->Log();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    inference_ = v1::Inference::NewStub(channel_);
    models_ = v1::Models::NewStub(channel_);
  }

  static inline ServerProcess* server_ = nullptr;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Inference::Stub> inference_;
  std::unique_ptr<v1::Models::Stub> models_;
};

// The google.rpc.ErrorInfo reason in a status's details ("" when none).
inline std::string ErrorReasonOf(const grpc::Status& status) {
  google::rpc::Status details;
  if (!details.ParseFromString(status.error_details())) return "";
  for (const auto& any : details.details()) {
    google::rpc::ErrorInfo info;
    if (any.UnpackTo(&info)) return info.domain() == "gantry.dev" ? info.reason() : "(domain " + info.domain() + ")";
  }
  return "";
}

}  // namespace gantry::testing

#endif  // GANTRY_TESTS_SERVER_SHARED_SERVER_H_
