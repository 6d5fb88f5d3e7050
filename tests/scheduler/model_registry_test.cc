// ModelRegistry with a fake loader (FakeRunner models), fixed costs and a
// fake clock. Where a test needs another thread to be inside a load or an
// unload, it waits on a notification the fake raises there: no sleeps.
#include "scheduler/model_registry.h"

#include <atomic>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/encoder_config.h"
#include "runtime/encoder_runner.h"
#include "scheduler/memory_budget.h"
#include "tests/scheduler/fake_runner.h"

namespace gantry::scheduler {
namespace {

using ::gantry::testing::FakeHostWeights;
using ::gantry::testing::FakeRunner;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// A FakeRunner whose steps wait for `gate`: keeps a request running.
class GatedRunner : public FakeRunner {
 public:
  GatedRunner(absl::Notification* gate, absl::Notification* stepping) : FakeRunner(64), gate_(gate), stepping_(stepping) {}
  absl::StatusOr<runtime::StepResult> Step(absl::Span<const runtime::StepSequence> items) override {
    if (!stepping_->HasBeenNotified()) stepping_->Notify();
    gate_->WaitForNotification();
    return FakeRunner::Step(items);
  }

 private:
  absl::Notification* gate_;
  absl::Notification* stepping_;
};

// A FakeRunner that never finishes a prompt: its requests run until cancelled.
class StallingRunner : public FakeRunner {
 public:
  StallingRunner() : FakeRunner(64) {}
  absl::StatusOr<runtime::StepResult> Step(absl::Span<const runtime::StepSequence> items) override {
    runtime::StepResult result;
    for (const auto& item : items) {
      runtime::SequenceStepResult r;
      r.id = item.id;
      result.sequences.push_back(r);
    }
    return result;
  }
};

class ModelRegistryTest : public ::testing::Test {
 protected:
  ModelSpec Spec(const std::string& name, uint64_t cost, bool resident = false,
                 absl::Duration idle = absl::ZeroDuration()) {
    costs_[name] = cost;
    ModelSpec spec;
    spec.name = name;
    spec.path = "/models/" + name;
    spec.resident = resident;
    spec.idle_timeout = idle;
    return spec;
  }

  void Make(std::vector<ModelSpec> specs, std::map<std::string, uint64_t> budgets = {},
            std::vector<std::string> gpus = {}, uint64_t host_cache_bytes = 0) {
    RegistryOptions options;
    options.host_cache_bytes = host_cache_bytes;
    options.budgets = std::move(budgets);
    options.gpus = std::move(gpus);
    options.unload_grace = absl::ZeroDuration();
    registry_ = std::make_unique<ModelRegistry>(
        std::move(specs),
        [this](const ModelSpec& spec) -> absl::StatusOr<LoadedModel> {
          {
            std::lock_guard<std::mutex> lock(mutex_);
            loads_[spec.name] += 1;
            placed_[spec.name] = spec.device;
            placed_all_[spec.name] = spec.devices;
          }
          if (loading_) loading_->Notify();
          if (release_load_) release_load_->WaitForNotification();
          if (fail_next_.exchange(false)) return absl::InternalError("weights file is truncated");
          LoadedModel model;
          if (gate_ && spec.name == gated_model_) {
            model.runner = std::make_unique<GatedRunner>(gate_, stepping_);
          } else if (spec.name == stalled_model_) {
            model.runner = std::make_unique<StallingRunner>();
          } else {
            auto runner = std::make_unique<FakeRunner>(64);
            runner->host_weight_bytes = host_bytes_;
            runner->host_name = absl::StrCat(spec.name, "#", loads_[spec.name]);
            if (spec.host_weights) {
              runner->set_weights_source("host");
              std::lock_guard<std::mutex> lock(mutex_);
              host_given_[spec.name] = static_cast<const FakeHostWeights&>(*spec.host_weights).model;
            }
            model.runner = std::move(runner);
          }
          return model;
        },
        [this](const ModelSpec& spec) -> absl::StatusOr<uint64_t> { return costs_.at(spec.name); }, options, &clock_);
  }

  ModelState State(const std::string& name) { return registry_->Get(name)->state; }
  int Loads(const std::string& name) {
    std::lock_guard<std::mutex> lock(mutex_);
    return loads_[name];
  }

  FakeClock clock_;
  std::map<std::string, uint64_t> costs_;
  std::mutex mutex_;
  std::map<std::string, int> loads_;
  std::map<std::string, std::string> placed_;
  std::map<std::string, std::vector<std::string>> placed_all_;  // the loader's devices (tensor-parallel)
  uint64_t host_bytes_ = 0;                          // each fake model's host copy size (0: none)
  std::map<std::string, std::string> host_given_;    // the host weights each model's last load got
  std::atomic<bool> fail_next_{false};
  absl::Notification* loading_ = nullptr;
  absl::Notification* release_load_ = nullptr;
  absl::Notification* gate_ = nullptr;
  absl::Notification* stepping_ = nullptr;
  std::string gated_model_;
  std::string stalled_model_;
  std::unique_ptr<ModelRegistry> registry_;
};

TEST_F(ModelRegistryTest, UnknownModelIsNotFound) {
  Make({Spec("a", 1)});
  auto lease = registry_->Acquire("nope");
  EXPECT_EQ(lease.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(lease.status().message(), HasSubstr("\"nope\" is not in the catalogue"));
}

TEST_F(ModelRegistryTest, LoadsOnFirstRequestAndCoalescesConcurrentRequests) {
  absl::Notification loading, release;
  loading_ = &loading;
  release_load_ = &release;
  Make({Spec("a", 1)});
  EXPECT_EQ(State("a"), ModelState::kUnloaded);
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i) {
    clients.emplace_back([&] {
      if (registry_->Acquire("a").ok()) ok += 1;
    });
  }
  loading.WaitForNotification();
  EXPECT_EQ(State("a"), ModelState::kLoading);
  release.Notify();
  for (auto& c : clients) c.join();
  EXPECT_EQ(ok.load(), 8);
  EXPECT_EQ(Loads("a"), 1) << "one load however many requests";
  EXPECT_EQ(State("a"), ModelState::kReady);
  EXPECT_EQ(registry_->Counters().loads, 1);
}

TEST_F(ModelRegistryTest, IdleModelIsEvictedAtExactlyItsTimeout) {
  Make({Spec("a", 1, false, absl::Seconds(60)), Spec("never", 1)});
  ASSERT_TRUE(registry_->Load("a").ok());
  ASSERT_TRUE(registry_->Load("never").ok());
  clock_.Advance(absl::Seconds(60) - absl::Nanoseconds(1));
  EXPECT_THAT(registry_->EvictIdle(), IsEmpty());
  EXPECT_EQ(State("a"), ModelState::kReady);
  clock_.Advance(absl::Nanoseconds(1));
  EXPECT_THAT(registry_->EvictIdle(), ElementsAre("a"));
  EXPECT_EQ(State("a"), ModelState::kUnloaded);
  EXPECT_EQ(registry_->Counters().evictions_idle, 1);
  clock_.Advance(absl::Hours(1000));
  EXPECT_THAT(registry_->EvictIdle(), IsEmpty()) << "idle_timeout 0 means never";
  EXPECT_EQ(State("never"), ModelState::kReady);
}

TEST_F(ModelRegistryTest, IdleTimerCountsFromTheLastUse) {
  Make({Spec("a", 1, false, absl::Seconds(60))});
  {
    auto lease = registry_->Acquire("a");
    ASSERT_TRUE(lease.ok());
    clock_.Advance(absl::Seconds(100));
    EXPECT_THAT(registry_->EvictIdle(), IsEmpty()) << "a model in use is never idle";
  }  // released at t=100
  clock_.Advance(absl::Seconds(59));
  EXPECT_THAT(registry_->EvictIdle(), IsEmpty());
  clock_.Advance(absl::Seconds(1));
  EXPECT_THAT(registry_->EvictIdle(), ElementsAre("a"));
}

TEST_F(ModelRegistryTest, LeastRecentlyUsedIdleModelIsEvictedToMakeRoom) {
  Make({Spec("a", 100), Spec("b", 100), Spec("c", 100)}, {{"cpu", 250}});
  ASSERT_TRUE(registry_->Load("a").ok());
  clock_.Advance(absl::Seconds(1));
  ASSERT_TRUE(registry_->Load("b").ok());
  clock_.Advance(absl::Seconds(1));
  ASSERT_TRUE(registry_->Load("a").ok());  // a is now the most recently used
  clock_.Advance(absl::Seconds(1));
  ASSERT_TRUE(registry_->Load("c").ok());
  EXPECT_EQ(State("a"), ModelState::kReady);
  EXPECT_EQ(State("b"), ModelState::kUnloaded);
  EXPECT_EQ(State("c"), ModelState::kReady);
  EXPECT_EQ(registry_->Counters().evictions_memory, 1);
  EXPECT_EQ(registry_->BudgetUse().at("cpu"), std::make_pair(uint64_t{200}, uint64_t{250}));
}

TEST_F(ModelRegistryTest, ResidentModelsAreNeverEvicted) {
  Make({Spec("resident", 100, true), Spec("b", 100), Spec("c", 100)}, {{"cpu", 200}});
  ASSERT_TRUE(registry_->Load("resident").ok());
  clock_.Advance(absl::Seconds(1));
  ASSERT_TRUE(registry_->Load("b").ok());
  clock_.Advance(absl::Seconds(1));
  ASSERT_TRUE(registry_->Load("c").ok());  // evicts b although resident is older
  EXPECT_EQ(State("resident"), ModelState::kReady);
  EXPECT_EQ(State("b"), ModelState::kUnloaded);
  // Neither idle eviction takes it.
  clock_.Advance(absl::Hours(1));
  EXPECT_THAT(registry_->EvictIdle(), IsEmpty());
}

TEST_F(ModelRegistryTest, ModelInUseIsNeverEvictedAndTheLoadIsRefusedWithTheNumbers) {
  Make({Spec("a", 100), Spec("b", 100), Spec("c", 100)}, {{"cpu", 200}});
  auto a = registry_->Acquire("a");
  auto b = registry_->Acquire("b");
  ASSERT_TRUE(a.ok() && b.ok());
  auto c = registry_->Acquire("c");
  ASSERT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(c.status().message(), HasSubstr("model \"c\" needs 100 bytes on cpu but 0 of 200 bytes are free"));
  EXPECT_THAT(c.status().message(), HasSubstr("a (100 bytes, in use)"));
  EXPECT_EQ(State("a"), ModelState::kReady);
  EXPECT_EQ(State("b"), ModelState::kReady);
  EXPECT_EQ(State("c"), ModelState::kUnloaded) << "a refused load leaves the model as it was";
  // Once b's request ends, b can go.
  b = absl::UnknownError("released");
  EXPECT_TRUE(registry_->Acquire("c").ok());
  EXPECT_EQ(State("b"), ModelState::kUnloaded);
  EXPECT_EQ(State("a"), ModelState::kReady);
}

TEST_F(ModelRegistryTest, AModelLargerThanTheBudgetIsRefused) {
  Make({Spec("huge", 1000)}, {{"cpu", 200}});
  auto lease = registry_->Acquire("huge");
  EXPECT_EQ(lease.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(lease.status().message(), HasSubstr("needs 1000 bytes on cpu but 200 of 200 bytes are free"));
}

TEST_F(ModelRegistryTest, FailedLoadIsReportedAndRetriedOnTheNextRequest) {
  Make({Spec("a", 1)});
  fail_next_ = true;
  auto first = registry_->Acquire("a");
  ASSERT_EQ(first.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(first.status().message(), HasSubstr("model \"a\" failed to load: weights file is truncated"));
  auto snapshot = registry_->Get("a");
  EXPECT_EQ(snapshot->state, ModelState::kFailed);
  EXPECT_EQ(snapshot->error, "weights file is truncated");
  EXPECT_EQ(registry_->BudgetUse().count("cpu"), 0u);
  auto second = registry_->Acquire("a");
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(State("a"), ModelState::kReady);
  EXPECT_EQ(registry_->Get("a")->error, "");
  EXPECT_EQ(Loads("a"), 2);
  EXPECT_EQ(registry_->Counters().load_failures, 1);
}

TEST_F(ModelRegistryTest, AFailedLoadFreesItsBudget) {
  Make({Spec("a", 150), Spec("b", 150)}, {{"cpu", 200}});
  fail_next_ = true;
  EXPECT_FALSE(registry_->Acquire("a").ok());
  EXPECT_TRUE(registry_->Acquire("b").ok()) << "a failed model holds no memory";
}

TEST_F(ModelRegistryTest, UnloadWaitsForRunningRequestsAndARequestMeanwhileReloads) {
  absl::Notification gate, stepping;
  gate_ = &gate;
  stepping_ = &stepping;
  gated_model_ = "a";
  Make({Spec("a", 1)});
  struct UnloadingObserver : SchedulerObserver {
    absl::Notification unloading;
    void OnStateChange(const std::string& name, ModelState state) override {
      if (name == "a" && state == ModelState::kUnloading && !unloading.HasBeenNotified()) unloading.Notify();
    }
  } observer;
  absl::Notification& unloading = observer.unloading;
  registry_->SetObserver(&observer);
  std::shared_ptr<RequestStream> stream;
  std::thread request([&] {
    auto lease = registry_->Acquire("a");
    ASSERT_TRUE(lease.ok());
    GenerationRequest r;
    r.prompt = {1, 2};
    r.max_tokens = 3;
    r.ignore_eos = true;
    stream = *(*lease)->Submit(r);
    StreamEvent event;
    while (stream->Pop(&event, absl::Seconds(30)) && !event.last()) {
    }
    EXPECT_EQ(event.reason, FinishReason::kLength) << "the unload let it finish";
  });
  stepping.WaitForNotification();  // the request is in a step
  std::thread unload([&] { EXPECT_TRUE(registry_->Unload("a", /*force=*/false).ok()); });
  unloading.WaitForNotification();
  EXPECT_EQ(State("a"), ModelState::kUnloading);
  std::thread again([&] {
    auto lease = registry_->Acquire("a");  // waits for the unload, then reloads
    EXPECT_TRUE(lease.ok()) << lease.status();
  });
  gate.Notify();
  request.join();
  unload.join();
  again.join();
  EXPECT_EQ(State("a"), ModelState::kReady);
  EXPECT_EQ(Loads("a"), 2);
  EXPECT_EQ(registry_->Counters().unloads, 1);
}

TEST_F(ModelRegistryTest, ForcedUnloadCancelsRunningRequests) {
  stalled_model_ = "a";  // its request would run forever
  Make({Spec("a", 1)});
  auto lease = registry_->Acquire("a");
  ASSERT_TRUE(lease.ok());
  GenerationRequest r;
  r.prompt = {1};
  r.max_tokens = 200;
  r.ignore_eos = true;
  auto stream = *(*lease)->Submit(r);
  ASSERT_TRUE(registry_->Unload("a", /*force=*/true).ok());  // grace 0
  StreamEvent event;
  while (stream->Pop(&event, absl::Seconds(30)) && !event.last()) {
  }
  EXPECT_EQ(event.reason, FinishReason::kCancelled);
  EXPECT_EQ(State("a"), ModelState::kUnloaded);
  // The old lease is void: releasing it does not touch the next load's count.
  ASSERT_TRUE(registry_->Load("a").ok());
  lease = absl::UnknownError("released");
  EXPECT_EQ(registry_->Get("a")->leases, 0);
  auto held = registry_->Acquire("a");
  EXPECT_EQ(registry_->Get("a")->leases, 1);
}

TEST_F(ModelRegistryTest, UnplacedGpuModelsGoWhereTheMostBudgetIsFree) {
  ModelSpec a = Spec("a", 100), b = Spec("b", 100), c = Spec("c", 100);
  a.device = b.device = c.device = "cuda";
  Make({a, b, c}, {{"cuda:0", 1000}, {"cuda:1", 1050}}, {"cuda:0", "cuda:1"});
  ASSERT_TRUE(registry_->Load("a").ok());
  ASSERT_TRUE(registry_->Load("b").ok());
  ASSERT_TRUE(registry_->Load("c").ok());
  EXPECT_EQ(placed_["a"], "cuda:1");  // 1050 free
  EXPECT_EQ(placed_["b"], "cuda:0");  // 1000 vs 950
  EXPECT_EQ(placed_["c"], "cuda:1");  // 900 vs 950
  EXPECT_EQ(registry_->Get("c")->device, "cuda:1");
}

TEST_F(ModelRegistryTest, BudgetsAreKeptPerDevice) {
  ModelSpec a = Spec("a", 100), b = Spec("b", 100);
  a.device = "cuda:0";
  b.device = "cuda:1";
  Make({a, b}, {{"cuda:0", 100}, {"cuda:1", 100}}, {"cuda:0", "cuda:1"});
  ASSERT_TRUE(registry_->Load("a").ok());
  ASSERT_TRUE(registry_->Load("b").ok());
  EXPECT_EQ(State("a"), ModelState::kReady) << "b's load evicts nothing on another GPU";
}

TEST_F(ModelRegistryTest, TensorParallelModelsTakeTheGpusWithTheMostRoomAndPayOnEach) {
  // t spans 2 of 3 GPUs; its cost (per GPU) counts on both.
  ModelSpec a = Spec("a", 300), t = Spec("t", 500);
  a.device = "cuda:1";
  t.device = "cuda";
  t.tensor_parallel = 2;
  Make({a, t}, {{"cuda:0", 1000}, {"cuda:1", 1000}, {"cuda:2", 1000}}, {"cuda:0", "cuda:1", "cuda:2"});
  ASSERT_TRUE(registry_->Load("a").ok());
  ASSERT_TRUE(registry_->Load("t").ok());
  EXPECT_EQ(placed_all_["t"], (std::vector<std::string>{"cuda:0", "cuda:2"})) << "cuda:1 has the least room";
  EXPECT_EQ(placed_["t"], "cuda:0");
  EXPECT_EQ(registry_->Get("t")->devices, (std::vector<std::string>{"cuda:0", "cuda:2"}));
  const auto use = registry_->BudgetUse();
  EXPECT_EQ(use.at("cuda:0").first, 500u);
  EXPECT_EQ(use.at("cuda:1").first, 300u);
  EXPECT_EQ(use.at("cuda:2").first, 500u);
}

TEST_F(ModelRegistryTest, TensorParallelLoadEvictsOnEveryGpuItNeeds) {
  ModelSpec a = Spec("a", 600), b = Spec("b", 600), t = Spec("t", 600);
  a.device = "cuda:0";
  b.device = "cuda:1";
  t.device = "cuda:0";
  t.tensor_parallel = 2;  // cuda:0 and cuda:1
  Make({a, b, t}, {{"cuda:0", 1000}, {"cuda:1", 1000}}, {"cuda:0", "cuda:1"});
  ASSERT_TRUE(registry_->Load("a").ok());
  ASSERT_TRUE(registry_->Load("b").ok());
  ASSERT_TRUE(registry_->Load("t").ok());
  EXPECT_EQ(State("a"), ModelState::kUnloaded);
  EXPECT_EQ(State("b"), ModelState::kUnloaded);
  EXPECT_EQ(placed_all_["t"], (std::vector<std::string>{"cuda:0", "cuda:1"}));

  // With a's lease held, t cannot make room on cuda:0: refused, naming the GPU.
  ASSERT_TRUE(registry_->Unload("t", false).ok());
  auto lease = registry_->Acquire("a");
  ASSERT_TRUE(lease.ok());
  auto refused = registry_->Acquire("t");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(refused.status().message()), ::testing::HasSubstr("on cuda:0"));
}

TEST_F(ModelRegistryTest, TensorParallelBeyondTheGpusIsALoadError) {
  ModelSpec t = Spec("t", 100);
  t.device = "cuda";
  t.tensor_parallel = 4;
  Make({t}, {}, {"cuda:0", "cuda:1"});
  auto lease = registry_->Acquire("t");
  ASSERT_FALSE(lease.ok());
  EXPECT_THAT(std::string(lease.status().message()), ::testing::HasSubstr("tensor_parallel 4 needs 4 GPUs; 2 are present"));
  EXPECT_EQ(Loads("t"), 0);
}

TEST_F(ModelRegistryTest, EvictedWeightsWaitInTheHostTierAndComeBackFromThere) {
  host_bytes_ = 400;
  ModelSpec a = Spec("a", 100), b = Spec("b", 100), c = Spec("c", 100);
  c.host_cache = false;  // opted out
  Make({a, b, c}, {{"cpu", 100}}, {}, /*host_cache_bytes=*/1000);
  EXPECT_EQ(registry_->Get("a")->weights_at, "disk");
  ASSERT_TRUE(registry_->Load("a").ok());
  EXPECT_EQ(registry_->Get("a")->weights_at, "cpu");
  clock_.Advance(absl::Seconds(1));
  ASSERT_TRUE(registry_->Load("b").ok());  // evicts a: its weights go to the host tier
  EXPECT_EQ(registry_->Get("a")->weights_at, "host");
  EXPECT_EQ(registry_->HostTierUse(), (std::pair<uint64_t, uint64_t>{400, 1000}));
  clock_.Advance(absl::Seconds(1));
  ASSERT_TRUE(registry_->Load("a").ok());  // evicts b (to the tier), loads a from it
  EXPECT_EQ(host_given_["a"], "a#1") << "the copy made when a left, not a fresh read";
  EXPECT_EQ(registry_->Counters().loads_from_host, 1);
  EXPECT_EQ(registry_->Counters().host_tier_copies, 2);
  EXPECT_EQ(registry_->Get("b")->weights_at, "host");

  // c opted out: evicting it keeps nothing.
  clock_.Advance(absl::Seconds(1));
  ASSERT_TRUE(registry_->Load("c").ok());
  clock_.Advance(absl::Seconds(1));
  ASSERT_TRUE(registry_->Load("b").ok());
  EXPECT_EQ(registry_->Get("c")->weights_at, "disk");
  EXPECT_EQ(host_given_.count("c"), 0u);
}

TEST_F(ModelRegistryTest, HostTierDropsTheLeastRecentlyUsedWeights) {
  host_bytes_ = 400;
  Make({Spec("a", 100), Spec("b", 100), Spec("c", 100)}, {{"cpu", 100}}, {}, /*host_cache_bytes=*/800);
  for (const char* name : {"a", "b", "c"}) {
    ASSERT_TRUE(registry_->Load(name).ok());
    clock_.Advance(absl::Seconds(1));
  }
  // a then b left the device; both fit (800). Bringing a back and letting c
  // go puts c in: b, used longest ago, drops out.
  ASSERT_TRUE(registry_->Load("a").ok());
  EXPECT_EQ(registry_->Get("c")->weights_at, "host");
  EXPECT_EQ(registry_->Get("b")->weights_at, "disk");
  EXPECT_EQ(registry_->Get("a")->weights_at, "cpu");
}

TEST_F(ModelRegistryTest, StartLoadReturnsAtOnceAndRequestsWaitForThatLoad) {
  absl::Notification loading, release;
  loading_ = &loading;
  release_load_ = &release;
  Make({Spec("a", 100)});
  ASSERT_TRUE(registry_->StartLoad("a").ok());  // returns while the load is held
  loading.WaitForNotification();
  EXPECT_EQ(State("a"), ModelState::kLoading);
  EXPECT_TRUE(registry_->StartLoad("a").ok()) << "already loading: nothing new";
  EXPECT_EQ(registry_->StartLoad("nope").code(), absl::StatusCode::kNotFound);
  std::thread request([&] { EXPECT_TRUE(registry_->Acquire("a").ok()); });
  release.Notify();
  request.join();
  EXPECT_EQ(Loads("a"), 1) << "the request waited for the prefetch's load";
  EXPECT_EQ(State("a"), ModelState::kReady);
  release_load_ = nullptr;
  loading_ = nullptr;
}

TEST_F(ModelRegistryTest, ConcurrentRequestsForModelsThatDoNotAllFit) {
  // Three models, room for two: clients hammer all three; every request is
  // either served or refused with RESOURCE_EXHAUSTED, and the budget holds.
  Make({Spec("a", 100), Spec("b", 100), Spec("c", 100)}, {{"cpu", 200}});
  std::vector<std::thread> clients;
  std::atomic<int> served{0}, refused{0};
  for (int i = 0; i < 12; ++i) {
    clients.emplace_back([&, i] {
      const std::string name(1, static_cast<char>('a' + i % 3));
      for (int k = 0; k < 10; ++k) {
        auto lease = registry_->Acquire(name);
        if (lease.ok()) {
          GenerationRequest r;
          r.prompt = {1, 2};
          r.max_tokens = 2;
          auto stream = (*lease)->Submit(r);
          if (stream.ok()) {
            StreamEvent event;
            while ((*stream)->Pop(&event, absl::Seconds(30)) && !event.last()) {
            }
          }
          served += 1;
        } else {
          EXPECT_EQ(lease.status().code(), absl::StatusCode::kResourceExhausted) << lease.status();
          refused += 1;
        }
        EXPECT_LE(registry_->BudgetUse().at("cpu").first, 200u);
      }
    });
  }
  for (auto& c : clients) c.join();
  EXPECT_EQ(served + refused, 120);
  EXPECT_GT(served.load(), 0);
}

// Records what the registry and its engines report.
class RecordingObserver : public SchedulerObserver {
 public:
  void OnStateChange(const std::string& model, ModelState state) override {
    Add(model + " " + ModelStateName(state));
  }
  void OnLoad(const std::string& model, absl::Duration took, bool ok) override {
    Add(model + (ok ? " load ok" : " load failed"));
  }
  void OnUnload(const std::string& model, UnloadReason reason) override {
    Add(model + " unload " + UnloadReasonName(reason));
  }
  void OnStep(const std::string& model, const StepReport& report) override {
    std::lock_guard<std::mutex> lock(mutex_);
    steps_ += 1;
    prompt_tokens_ += report.prompt_tokens;
    decode_tokens_ += report.decode_tokens;
  }
  std::vector<std::string> events() {
    std::lock_guard<std::mutex> lock(mutex_);
    return events_;
  }
  int64_t prompt_tokens() {
    std::lock_guard<std::mutex> lock(mutex_);
    return prompt_tokens_;
  }
  int64_t decode_tokens() {
    std::lock_guard<std::mutex> lock(mutex_);
    return decode_tokens_;
  }

 private:
  void Add(std::string event) {
    std::lock_guard<std::mutex> lock(mutex_);
    events_.push_back(std::move(event));
  }
  std::mutex mutex_;
  std::vector<std::string> events_;
  int64_t steps_ = 0, prompt_tokens_ = 0, decode_tokens_ = 0;
};

TEST_F(ModelRegistryTest, ObserverHearsLoadsUnloadsWithReasonsAndSteps) {
  Make({Spec("a", 100, false, absl::Seconds(5)), Spec("b", 100), Spec("c", 100)}, {{"cpu", 200}});
  RecordingObserver observer;
  registry_->SetObserver(&observer);
  fail_next_ = true;
  EXPECT_FALSE(registry_->Load("a").ok());
  {
    auto a = registry_->Acquire("a");
    ASSERT_TRUE(a.ok());
    GenerationRequest r;
    r.prompt = {1, 2, 3};
    r.max_tokens = 4;
    r.ignore_eos = true;
    auto stream = *(*a)->Submit(r);
    StreamEvent event;
    while (stream->Pop(&event, absl::Seconds(30)) && !event.last()) {
    }
  }
  clock_.Advance(absl::Seconds(1));
  ASSERT_TRUE(registry_->Load("b").ok());
  ASSERT_TRUE(registry_->Load("c").ok());  // evicts a: memory
  ASSERT_TRUE(registry_->Unload("b", false).ok());
  ASSERT_TRUE(registry_->Load("a").ok());
  clock_.Advance(absl::Seconds(5));
  registry_->EvictIdle();  // a: idle
  EXPECT_THAT(observer.events(),
              ElementsAre("a loading", "a load failed", "a failed", "a loading", "a load ok", "a ready", "b loading",
                          "b load ok", "b ready", "a unloading", "a unload memory", "a unloaded", "c loading",
                          "c load ok", "c ready", "b unloading", "b unload requested", "b unloaded", "a loading",
                          "a load ok", "a ready", "a unloading", "a unload idle", "a unloaded"));
  EXPECT_EQ(observer.prompt_tokens(), 3);
  EXPECT_EQ(observer.decode_tokens(), 3) << "4 tokens: the first comes from the prompt step";
}

TEST(MemoryBudgetTest, EstimatesWeightsInTheRunDtypePlusTheKvPool) {
  ModelSpec spec;
  spec.path = std::string(GANTRY_TEST_MODELS) + "/llama";
  spec.kv_cache_bytes = 1 << 20;
  spec.dtype = "float32";
  auto f32 = EstimateModelBytes(spec);
  ASSERT_TRUE(f32.ok()) << f32.status();
  spec.dtype = "bfloat16";
  auto bf16 = EstimateModelBytes(spec);
  ASSERT_TRUE(bf16.ok()) << bf16.status();
  EXPECT_EQ(*f32 - (1 << 20), 2 * (*bf16 - (1 << 20)));
  spec.path = "/nonexistent";
  EXPECT_FALSE(EstimateModelBytes(spec).ok());
}

TEST(MemoryBudgetTest, EncodersChargeOneStepOfMaxEncodeTokensInsteadOfAKvPool) {
  ModelSpec spec;
  spec.path = std::string(GANTRY_TEST_MODELS) + "/bert_embed";
  spec.dtype = "float32";
  spec.kv_cache_bytes = 1ull << 30;  // not an encoder's
  spec.engine.max_encode_tokens = 100;
  auto small = EstimateModelBytes(spec);
  ASSERT_TRUE(small.ok()) << small.status();
  spec.engine.max_encode_tokens = 300;
  spec.engine.max_step_tokens = 1;  // not an encoder's either
  auto large = EstimateModelBytes(spec);
  ASSERT_TRUE(large.ok()) << large.status();
  auto config = runtime::LoadEncoderConfig(spec.path);
  ASSERT_TRUE(config.ok()) << config.status();
  // 200 more tokens of six hidden-wide and two intermediate-wide float32 rows.
  EXPECT_EQ(*large - *small, 200u * (6 * config->hidden_size + 2 * config->intermediate_size) * 4);
  EXPECT_LT(*small, spec.kv_cache_bytes);
}

TEST(MemoryBudgetTest, SixteenBitEncodersOnAGpuChargeTheProductsWorkspace) {
  ModelSpec spec;
  spec.path = std::string(GANTRY_TEST_MODELS) + "/bert_embed";
  spec.dtype = "bfloat16";
  auto cpu = EstimateModelBytes(spec);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  spec.device = "cuda:0";  // estimated from the headers: no GPU needed
  auto gpu = EstimateModelBytes(spec);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  EXPECT_EQ(*gpu - *cpu, runtime::kEncoderLtGemmWorkspaceBytes);
  spec.dtype = "float32";  // LtGemm takes 16-bit products only
  auto gpu_f32 = EstimateModelBytes(spec);
  spec.device = "cpu";
  auto cpu_f32 = EstimateModelBytes(spec);
  ASSERT_TRUE(gpu_f32.ok() && cpu_f32.ok());
  EXPECT_EQ(*gpu_f32, *cpu_f32);
}

}  // namespace
}  // namespace gantry::scheduler
