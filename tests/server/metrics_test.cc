// Integration: a real Prometheus (Debian's `prometheus`, installed by
// tools/setup.sh) scrapes a running gantry-server every second while the test
// sends requests; then every PromQL query of the Grafana dashboard must return
// data through Prometheus's HTTP API, and `promtool check metrics` must accept
// a scrape. GPU and CUDA-allocator queries are only required where a GPU is.
#include <grpcpp/grpcpp.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <atomic>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/str_replace.h"
#include "gantry/v1/gantry.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"
#include "runtime/model_runner.h"
#include "server/metrics_http.h"
#include "tests/http/raw_client.h"
#include "tests/server/metrics_scrape.h"
#include "tests/server/models_client.h"
#include "tests/server/server_process.h"

namespace gantry {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;
using testing::HostPort;
using testing::ScrapeValue;

// A port nobody listens on now (bound, read, released).
int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// "http://127.0.0.1:PORT/metrics" -> ("127.0.0.1", PORT)

class PrometheusProcess {
 public:
  PrometheusProcess(const std::string& target, int port) : port_(port) {
    dir_ = ::testing::TempDir() + "/prometheus_" + std::to_string(getpid());
    std::system(("rm -rf " + dir_ + " && mkdir -p " + dir_).c_str());
    std::ofstream(dir_ + "/prometheus.yml") << "global:\n  scrape_interval: 1s\n"
                                            << "scrape_configs:\n  - job_name: gantry-server\n"
                                            << "    static_configs:\n      - targets: ['" << target << "']\n";
    pid_ = fork();
    if (pid_ == 0) {
      FILE* log = std::fopen((dir_ + "/prometheus.log").c_str(), "w");
      if (log) {
        dup2(fileno(log), STDOUT_FILENO);
        dup2(fileno(log), STDERR_FILENO);
      }
      const std::string config = "--config.file=" + dir_ + "/prometheus.yml";
      const std::string storage = "--storage.tsdb.path=" + dir_ + "/data";
      const std::string listen = "--web.listen-address=127.0.0.1:" + std::to_string(port);
      execlp("prometheus", "prometheus", config.c_str(), storage.c_str(), listen.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  ~PrometheusProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
  }
  // Runs an instant query; the "result" array, or null on failure.
  nlohmann::json Query(const std::string& promql) {
    httplib::Client client("127.0.0.1", port_);
    client.set_read_timeout(10, 0);
    auto response = client.Get("/api/v1/query", httplib::Params{{"query", promql}}, httplib::Headers{});
    if (!response || response->status != 200) return nullptr;
    auto body = nlohmann::json::parse(response->body, nullptr, false);
    if (body.is_discarded() || body.value("status", "") != "success") return nullptr;
    return body["data"]["result"];
  }
  std::string Log() const {
    std::ifstream in(dir_ + "/prometheus.log");
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }

 private:
  std::string dir_;
  int port_;
  pid_t pid_ = -1;
};

void CollectExprs(const nlohmann::json& node, std::vector<std::string>* out) {
  if (node.is_object()) {
    for (const auto& [key, value] : node.items()) {
      if (key == "expr" && value.is_string()) out->push_back(value.get<std::string>());
      CollectExprs(value, out);
    }
  } else if (node.is_array()) {
    for (const auto& value : node) CollectExprs(value, out);
  }
}

std::string RunShell(const std::string& command) {
  FILE* pipe = popen(command.c_str(), "r");
  std::string out;
  char buffer[512];
  while (pipe && std::fgets(buffer, sizeof(buffer), pipe)) out += buffer;
  if (pipe) out += "\nexit " + std::to_string(WEXITSTATUS(pclose(pipe)));
  return out;
}

TEST(MetricsTest, PrometheusScrapesAndEveryDashboardQueryReturnsData) {
  ASSERT_EQ(std::system("command -v prometheus > /dev/null && command -v promtool > /dev/null"), 0)
      << "prometheus and promtool are needed (Debian package prometheus; tools/setup.sh installs it)";
  const std::string root = GANTRY_SOURCE_DIR;
  const char* device_env = std::getenv("GANTRY_TEST_DEVICE");
  const std::string device = device_env ? device_env : "cpu";
  testing::ServerProcess server(
      "metrics_test", "memory_budget_mib:\n  cpu: 1024\ndefaults:\n  kv_cache_mib: 16\nmodels:\n"
                      "  - name: demo\n    path: " + root + "/models/demo\n    resident: true\n    device: " + device +
                      "\n  - name: llama\n    path: " + root + "/tests/models/llama\n    device: " + device + "\n");
  ASSERT_FALSE(server.address().empty()) << server.Log();
  ASSERT_FALSE(server.metrics_url().empty()) << "no metrics line on stdout";
  const auto [host, metrics_port] = HostPort(server.metrics_url());

  // promtool on a real scrape.
  httplib::Client scrape(host, metrics_port);
  auto body = scrape.Get("/metrics");
  ASSERT_TRUE(body && body->status == 200);
  const std::string scrape_file = ::testing::TempDir() + "/gantry_scrape.txt";
  std::ofstream(scrape_file) << body->body;
  EXPECT_THAT(RunShell("promtool check metrics < " + scrape_file + " 2>&1"), HasSubstr("exit 0"));

  PrometheusProcess prometheus(host + ":" + std::to_string(metrics_port), FreePort());
  auto channel = grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials());
  auto inference = v1::Inference::NewStub(channel);
  auto models = v1::Models::NewStub(channel);
  auto generate = [&](const std::string& model, uint32_t max_tokens, float temperature) {
    v1::GenerateRequest request;
    request.set_model(model);
    if (model == "llama") {  // the fixture has no tokenizer
      for (uint32_t id : {1, 5, 9}) request.mutable_token_ids()->add_ids(id);
    } else {
      request.set_text("metrics");
    }
    request.mutable_parameters()->set_max_tokens(max_tokens);
    request.mutable_parameters()->set_temperature(temperature);
    grpc::ClientContext context;
    auto reader = inference->Generate(&context, request);
    v1::GenerateResponse response;
    while (reader->Read(&response)) {
    }
    return reader->Finish();
  };
  // About eight seconds of traffic over several scrapes: streams on both
  // models, concurrent batches, errors, an explicit unload and reload.
  const auto until = std::chrono::steady_clock::now() + 8s;
  int round = 0;
  while (std::chrono::steady_clock::now() < until) {
    std::vector<std::thread> clients;
    for (int i = 0; i < 4; ++i) clients.emplace_back([&] { EXPECT_TRUE(generate("demo", 40, 0.7f).ok()); });
    EXPECT_TRUE(generate("llama", 20, 0).ok());
    EXPECT_EQ(generate("nope", 1, 0).error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_EQ(generate("demo", 1, -1).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    for (auto& c : clients) c.join();
    v1::ModelStatus status;
    if (round++ % 3 == 0) EXPECT_TRUE(testing::UnloadModel(*models, "llama", &status).ok());
  }
  // Let Prometheus take a scrape after the last request.
  std::this_thread::sleep_for(2500ms);
  auto up = prometheus.Query("up");
  ASSERT_TRUE(up.is_array() && !up.empty()) << prometheus.Log();
  EXPECT_EQ(up[0]["value"][1], "1") << prometheus.Log();

  std::ifstream file(root + "/deploy/grafana/dashboards/gantry.json");
  const nlohmann::json dashboard = nlohmann::json::parse(file);
  std::vector<std::string> exprs;
  CollectExprs(dashboard, &exprs);
  ASSERT_GE(exprs.size(), 30u);
  const bool gpu = runtime::CudaDeviceCount() > 0;
  int checked = 0;
  for (const std::string& expr : exprs) {
    const bool needs_gpu = expr.find("gantry_gpu_") != std::string::npos ||
                           expr.find("gantry_cuda_allocator_") != std::string::npos;
    if (needs_gpu && !gpu) continue;  // absent without NVML and CUDA, by design
    const std::string promql = absl::StrReplaceAll(expr, {{"$__rate_interval", "1m"}});
    nlohmann::json result = prometheus.Query(promql);
    ASSERT_TRUE(result.is_array()) << "query failed: " << promql;
    EXPECT_FALSE(result.empty()) << "no data: " << promql;
    ++checked;
  }
  EXPECT_GE(checked, gpu ? 36 : 28);
  // Counters agree with what was sent.
  auto not_found = prometheus.Query("gantry_requests_total{model=\"_unknown\",code=\"NOT_FOUND\"}");
  ASSERT_TRUE(not_found.is_array() && !not_found.empty());
  EXPECT_EQ(std::stoi(not_found[0]["value"][1].get<std::string>()), round);
  auto requested = prometheus.Query("gantry_model_unloads_total{model=\"llama\",reason=\"requested\"}");
  ASSERT_TRUE(requested.is_array() && !requested.empty());
  EXPECT_EQ(std::stoi(requested[0]["value"][1].get<std::string>()), (round + 2) / 3);
  // The last load's rate: the fixture's weight bytes over its load time.
  auto rate = prometheus.Query("gantry_model_load_bytes_per_second{model=\"llama\"}");
  ASSERT_TRUE(rate.is_array() && !rate.empty()) << prometheus.Log();
  EXPECT_GT(std::stod(rate[0]["value"][1].get<std::string>()), 0.0);
  EXPECT_THAT(server.Log(), HasSubstr("GB of weights from disk ("));
  EXPECT_EQ(server.Terminate(15s), 0) << server.Log();
}


// memory.used, memory.total (MiB), temperature.gpu (C), power.draw (W) of GPU 0.
std::vector<double> NvidiaSmi() {
  std::string out =
      RunShell("nvidia-smi --id=0 --query-gpu=memory.used,memory.total,temperature.gpu,power.draw "
               "--format=csv,noheader,nounits");
  std::vector<double> values;
  std::istringstream fields(out.substr(0, out.find('\n')));
  for (std::string field; std::getline(fields, field, ',');) values.push_back(std::stod(field));
  return values;
}

TEST(GpuMetricsTest, LiveAndAgreeWithNvidiaSmi) {
  if (runtime::CudaDeviceCount() == 0) GTEST_SKIP() << "no GPU";
  const std::string root = GANTRY_SOURCE_DIR;
  testing::ServerProcess server("gpu_metrics_test",
                                "gpu_sample_seconds: 0.2\nmodels:\n  - name: big\n    path: " + root +
                                    "/tests/models/llama\n    device: cuda:0\n    kv_cache_mib: 4096\n");
  ASSERT_FALSE(server.address().empty()) << server.Log();
  const auto [host, port] = HostPort(server.metrics_url());
  httplib::Client client(host, port);
  const std::string gpu0 = "gpu=\"0\"";
  auto used = [&] { return ScrapeValue(client, "gantry_gpu_memory_used_bytes", gpu0).value_or(-1) / (1 << 20); };

  // The GPU series are there before any model touches the GPU and agree with
  // nvidia-smi; then loading the model (its 4 GiB KV pool) raises them.
  for (int i = 0; i < 100 && !ScrapeValue(client, "gantry_gpu_memory_used_bytes", gpu0); ++i) {
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(ScrapeValue(client, "gantry_gpu_memory_used_bytes", gpu0).has_value()) << server.Log();
  const double before = used();
  EXPECT_NEAR(before, NvidiaSmi().at(0), 64.0);
  EXPECT_EQ(ScrapeValue(client, "gantry_cuda_allocator_reserved_bytes", "cuda:0"), 0.0) << "nothing on the GPU yet";
  auto channel = grpc::CreateChannel(server.address(), grpc::InsecureChannelCredentials());
  auto models = v1::Models::NewStub(channel);
  v1::ModelStatus status;
  ASSERT_TRUE(testing::LoadModel(*models, "big", &status).ok());
  std::this_thread::sleep_for(500ms);  // a few sampling periods
  const double loaded = used();
  EXPECT_GT(loaded, before + 4000);
  EXPECT_GT(ScrapeValue(client, "gantry_cuda_allocator_reserved_bytes", "cuda:0").value_or(0), 4e9);

  // Agrees with nvidia-smi read now.
  const std::vector<double> smi = NvidiaSmi();
  ASSERT_EQ(smi.size(), 4u);
  const double total = ScrapeValue(client, "gantry_gpu_memory_total_bytes", gpu0).value_or(-1) / (1 << 20);
  EXPECT_NEAR(total, smi[1], 1.0);
  EXPECT_NEAR(used(), smi[0], 64.0);
  EXPECT_NEAR(ScrapeValue(client, "gantry_gpu_temperature_celsius", gpu0).value_or(-1), smi[2], 3.0);
  EXPECT_NEAR(ScrapeValue(client, "gantry_gpu_power_watts", gpu0).value_or(-1), smi[3], 0.25 * smi[3] + 20);
  std::printf("nvidia-smi: used %.0f MiB of %.0f, %.0f C, %.0f W; gantry: used %.0f MiB of %.0f\n", smi[0], smi[1],
              smi[2], smi[3], used(), total);

  // ...utilization rises under load...
  auto inference = v1::Inference::NewStub(channel);
  double busiest = 0;
  std::atomic<bool> done{false};
  std::vector<std::thread> clients;
  for (int i = 0; i < 8; ++i) {
    clients.emplace_back([&] {
      while (!done) {  // 200-token requests (the fixture's context is 256) until the sampling ends
        v1::GenerateRequest request;
        request.set_model("big");
        for (uint32_t id : {1, 5, 9}) request.mutable_token_ids()->add_ids(id);
        request.mutable_parameters()->set_max_tokens(200);
        request.mutable_parameters()->set_ignore_eos(true);
        grpc::ClientContext context;
        auto reader = inference->Generate(&context, request);
        v1::GenerateResponse response;
        while (reader->Read(&response)) {
        }
        grpc::Status status = reader->Finish();
        EXPECT_TRUE(status.ok()) << status.error_message();
      }
    });
  }
  for (int i = 0; i < 30; ++i) {
    std::this_thread::sleep_for(100ms);
    busiest = std::max(busiest, ScrapeValue(client, "gantry_gpu_utilization_ratio", gpu0).value_or(0));
  }
  done = true;
  for (auto& c : clients) c.join();
  EXPECT_GT(busiest, 0.05);
  std::printf("memory before load %.0f MiB, loaded %.0f MiB, peak utilization under load %.2f\n", before, loaded,
              busiest);

  // ...and falls when the model is unloaded.
  ASSERT_TRUE(testing::UnloadModel(*models, "big", &status).ok());
  std::this_thread::sleep_for(500ms);
  EXPECT_LT(used(), loaded - 3500) << "the 4 GiB KV pool goes back to the driver";
  std::printf("after unload %.0f MiB\n", used());
  EXPECT_EQ(server.Terminate(15s), 0) << server.Log();
}

TEST(GpuMetricsTest, WithoutNvmlTheServerSaysSoAndRuns) {
  if (runtime::CudaDeviceCount() > 0) GTEST_SKIP() << "a GPU is present";
  testing::ServerProcess server("no_nvml_test", "models:\n  - name: demo\n    path: " +
                                                    std::string(GANTRY_SOURCE_DIR) + "/models/demo\n");
  ASSERT_FALSE(server.address().empty()) << server.Log();
  EXPECT_THAT(server.Log(), HasSubstr("GPU metrics off: cannot load libnvidia-ml.so.1"));
  const auto [host, port] = HostPort(server.metrics_url());
  httplib::Client client(host, port);
  auto response = client.Get("/metrics");
  ASSERT_TRUE(response && response->status == 200);
  EXPECT_THAT(response->body, ::testing::Not(HasSubstr("gantry_gpu_")));
  EXPECT_THAT(response->body, HasSubstr("gantry_model_state{model=\"demo\",state=\"unloaded\"} 1"));
  EXPECT_EQ(server.Terminate(15s), 0);
}

// A collector that throws (as LibTorch's allocator stats did before the first
// CUDA tensor) gives a 500 that names the error; the endpoint keeps serving.
class ThrowingCollectable : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override {
    if (throw_) throw std::runtime_error("allocator not initialized");
    return {};
  }
  std::atomic<bool> throw_{true};
};

TEST(MetricsHttpTest, SlowConnectionsDoNotHoldUpScrapes) {
  auto collectable = std::make_shared<ThrowingCollectable>();
  collectable->throw_ = false;
  auto started = server::MetricsHttpServer::Start("127.0.0.1:0", {collectable});
  ASSERT_TRUE(started.ok()) << started.status();
  const auto [host, port] = HostPort((*started)->url());
  // Issue 13: 8 connections trickling their headers took every cpp-httplib
  // thread, and Prometheus's scrapes timed out.
  std::vector<std::unique_ptr<testing::RawClient>> slow;
  for (int i = 0; i < 40; ++i) {
    slow.push_back(std::make_unique<testing::RawClient>(port));
    ASSERT_TRUE(slow.back()->Send("GET /metrics HTTP/1.1\r\nX-Slow: "));
  }
  httplib::Client client(host, port);
  client.set_read_timeout(2, 0);
  const auto start = std::chrono::steady_clock::now();
  auto response = client.Get("/metrics");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 1.0);
}

TEST(MetricsHttpTest, AFailingCollectorIsA500ThatNamesIt) {
  auto collectable = std::make_shared<ThrowingCollectable>();
  auto started = server::MetricsHttpServer::Start("127.0.0.1:0", {collectable});
  ASSERT_TRUE(started.ok()) << started.status();
  const auto [host, port] = HostPort((*started)->url());
  httplib::Client client(host, port);
  auto response = client.Get("/metrics");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 500);
  EXPECT_THAT(response->body, HasSubstr("scrape failed: allocator not initialized"));
  collectable->throw_ = false;
  response = client.Get("/metrics");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
}

}  // namespace
}  // namespace gantry
