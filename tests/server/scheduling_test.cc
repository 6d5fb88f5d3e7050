// Integration: several models under one memory budget in the real server.
// Three copies of the demo model each cost about 17 MiB (1.2 MB of weights
// plus a 16 MiB KV pool); the CPU budget of 40 MiB holds two.
#include <grpcpp/grpcpp.h>

#include <thread>

#include "absl/strings/ascii.h"
#include "gantry/v1/gantry.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/server_process.h"

namespace gantry {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

class SchedulingTest : public ::testing::Test {
 protected:
  void Start(const std::string& name, const std::string& extra_model_keys, const std::string& extra_top_level = "") {
    const std::string demo = std::string(GANTRY_SOURCE_DIR) + "/models/demo";
    std::string config = extra_top_level +
                         "drain_timeout_seconds: 1\nmemory_budget_mib:\n  cpu: 40\ndefaults:\n  kv_cache_mib: 16\nmodels:\n";
    for (const char* model : {"a", "b", "c"}) {
      config += std::string("  - name: ") + model + "\n    path: " + demo + "\n" + extra_model_keys;
    }
    server_ = std::make_unique<testing::ServerProcess>(name, config);
    ASSERT_FALSE(server_->address().empty()) << server_->Log();
    channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    inference_ = v1::Inference::NewStub(channel_);
    models_ = v1::Models::NewStub(channel_);
  }

  static v1::GenerateRequest Request(const std::string& model, uint32_t max_tokens) {
    v1::GenerateRequest request;
    request.set_model(model);
    request.set_text("The budget holds two models");
    request.mutable_parameters()->set_max_tokens(max_tokens);
    request.mutable_parameters()->set_temperature(0);
    request.mutable_parameters()->set_ignore_eos(true);
    return request;
  }

  struct Result {
    std::vector<uint32_t> tokens;
    grpc::Status status;
  };
  Result Generate(const v1::GenerateRequest& request) {
    grpc::ClientContext context;
    auto reader = inference_->Generate(&context, request);
    Result result;
    v1::GenerateResponse response;
    while (reader->Read(&response)) {
      result.tokens.insert(result.tokens.end(), response.token_ids().begin(), response.token_ids().end());
    }
    result.status = reader->Finish();
    return result;
  }

  v1::ListModelsResponse List() {
    grpc::ClientContext context;
    v1::ListModelsResponse list;
    EXPECT_TRUE(models_->List(&context, {}, &list).ok());
    return list;
  }
  // Every GPU has a budget too; these models use the CPU's.
  v1::DeviceBudget CpuBudget() {
    const v1::ListModelsResponse list = List();
    for (const auto& budget : list.budgets()) {
      if (budget.device() == "cpu") return budget;
    }
    ADD_FAILURE() << "no cpu budget";
    return {};
  }
  // The models' states as "a:ready b:unloaded c:ready".
  std::string States() {
    std::string out;
    const v1::ListModelsResponse list = List();
    for (const auto& m : list.models()) {
      std::string state = v1::ModelState_Name(m.state());
      state = absl::AsciiStrToLower(state.substr(std::string("MODEL_STATE_").size()));
      out += (out.empty() ? "" : " ") + m.name() + ":" + state;
    }
    return out;
  }

  std::unique_ptr<testing::ServerProcess> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Inference::Stub> inference_;
  std::unique_ptr<v1::Models::Stub> models_;
};

TEST_F(SchedulingTest, TheThirdModelEvictsTheLeastRecentlyUsedAndStreamsCarryOn) {
  Start("budget_test", "");
  if (HasFatalFailure()) return;
  EXPECT_EQ(States(), "a:unloaded b:unloaded c:unloaded");
  const Result reference = Generate(Request("a", 1000));
  ASSERT_TRUE(reference.status.ok()) << reference.status.error_message();
  ASSERT_TRUE(Generate(Request("b", 1)).status.ok());
  EXPECT_EQ(States(), "a:ready b:ready c:unloaded");
  v1::DeviceBudget cpu = CpuBudget();
  EXPECT_EQ(cpu.total_bytes(), 40u << 20);
  const uint64_t cost = List().models(0).cost_bytes();
  EXPECT_GT(cost, 16u << 20);
  EXPECT_EQ(cpu.used_bytes(), 2 * cost);

  // a is the least recently used: c takes its place.
  ASSERT_TRUE(Generate(Request("c", 1)).status.ok());
  EXPECT_EQ(States(), "a:unloaded b:ready c:ready");

  // A long stream on b; meanwhile a comes back. b is in use, so c (idle) goes
  // even though b was used before it.
  grpc::ClientContext b_context;
  auto b_stream = inference_->Generate(&b_context, Request("b", 1000));
  v1::GenerateResponse first;
  ASSERT_TRUE(b_stream->Read(&first));
  Result b_result;
  b_result.tokens.assign(first.token_ids().begin(), first.token_ids().end());
  ASSERT_TRUE(Generate(Request("a", 1)).status.ok());
  EXPECT_EQ(States(), "a:ready b:ready c:unloaded");

  // With a and b both in use, nothing can make room for c.
  grpc::ClientContext a_context;
  auto a_stream = inference_->Generate(&a_context, Request("a", 1000));
  v1::GenerateResponse a_first;
  ASSERT_TRUE(a_stream->Read(&a_first));
  Result refused = Generate(Request("c", 1));
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.status.error_message(), HasSubstr("model \"c\" needs " + std::to_string(cost) + " bytes on cpu"));
  EXPECT_THAT(refused.status.error_message(), HasSubstr("in use"));
  a_context.TryCancel();
  while (a_stream->Read(&a_first)) {
  }
  (void)a_stream->Finish();

  // b's stream went on through all of it, token for token.
  v1::GenerateResponse response;
  while (b_stream->Read(&response)) {
    b_result.tokens.insert(b_result.tokens.end(), response.token_ids().begin(), response.token_ids().end());
  }
  grpc::Status b_status = b_stream->Finish();
  EXPECT_TRUE(b_status.ok()) << b_status.error_message();
  EXPECT_EQ(b_result.tokens, reference.tokens);
  EXPECT_EQ(server_->Terminate(15s), 0) << server_->Log();
  EXPECT_THAT(server_->Log(), HasSubstr("memory budget cpu: 40.0 MiB"));
}

TEST_F(SchedulingTest, IdleModelsAreUnloadedAfterTheirTimeout) {
  Start("idle_test", "    idle_timeout_seconds: 1\n");
  if (HasFatalFailure()) return;
  ASSERT_TRUE(Generate(Request("a", 1)).status.ok());
  EXPECT_EQ(States(), "a:ready b:unloaded c:unloaded");
  EXPECT_EQ(List().models(0).idle_timeout_seconds(), 1.0);
  // The server checks every second: a goes within about two.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (States() != "a:unloaded b:unloaded c:unloaded" && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(States(), "a:unloaded b:unloaded c:unloaded");
  EXPECT_EQ(CpuBudget().used_bytes(), 0u);
  // And the next request loads it again.
  ASSERT_TRUE(Generate(Request("a", 1)).status.ok());
  EXPECT_EQ(States(), "a:ready b:unloaded c:unloaded");
  EXPECT_EQ(server_->Terminate(15s), 0) << server_->Log();
}

// The host tier end to end: an evicted model's weights wait in host memory
// (Models.List says "host"), it comes back from there with the same tokens,
// and Models.Load with wait: false answers before the load is done. The
// tier's memory is reserved at start-up (not pinned: no GPU here).
TEST_F(SchedulingTest, EvictedModelsComeBackFromTheHostTierAndLoadCanPrefetch) {
  Start("host_tier_test", "", "host_cache_mib: 64\n");
  if (HasFatalFailure()) return;
  const Result reference = Generate(Request("a", 20));
  ASSERT_TRUE(reference.status.ok()) << reference.status.error_message();
  ASSERT_TRUE(Generate(Request("b", 1)).status.ok());
  ASSERT_TRUE(Generate(Request("c", 1)).status.ok());  // evicts a
  EXPECT_EQ(States(), "a:unloaded b:ready c:ready");
  EXPECT_EQ(List().models(0).weights_at(), "host");
  EXPECT_EQ(List().models(1).weights_at(), "cpu");

  const Result again = Generate(Request("a", 20));  // evicts b; a from the host tier
  ASSERT_TRUE(again.status.ok()) << again.status.error_message();
  EXPECT_EQ(again.tokens, reference.tokens);
  EXPECT_THAT(server_->Log(), ::testing::HasSubstr("GB of weights from the host tier"));
  // The tier's memory was reserved at start-up (a background thread).
  EXPECT_THAT(server_->Log(), ::testing::HasSubstr("host tier: 64.0 MiB reserved in"));

  grpc::ClientContext context;
  v1::LoadModelRequest load;
  load.set_name("b");
  load.set_wait(false);
  v1::ModelStatus status;
  ASSERT_TRUE(models_->Load(&context, load, &status).ok());
  EXPECT_TRUE(status.state() == v1::MODEL_STATE_LOADING || status.state() == v1::MODEL_STATE_READY)
      << v1::ModelState_Name(status.state());
  ASSERT_TRUE(Generate(Request("b", 1)).status.ok());  // waits for that load if it still runs
}


}  // namespace
}  // namespace gantry
