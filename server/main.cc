// gantry-server: the gRPC service over the model registry.
//
//   gantry-server --config gantry.yaml
//   gantry-server --model demo=models/demo --listen 127.0.0.1:50051
//
// Prints "gantry-server listening on ADDRESS" once it accepts requests.
// SIGTERM / SIGINT: stop accepting, let streams finish within the drain
// timeout, cancel the rest, exit 0.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "runtime/device_warm_up.h"
#include "runtime/host_tier_memory.h"
#include "runtime/model_runner.h"
#include "scheduler/memory_budget.h"
#include "scheduler/model_loader.h"
#include "scheduler/model_registry.h"
#include "server/config.h"
#include "grpc/health/v1/health.pb.h"
#include "proto/request_error_interceptor.h"
#include "server/inference_service.h"
#include "server/limits.h"
#include "server/gpu_monitor.h"
#include "server/metrics.h"
#include "server/metrics_http.h"
#include "server/models_service.h"

ABSL_FLAG(std::string, config, "", "YAML configuration file (see server/config.h)");
ABSL_FLAG(std::string, listen, "", "address:port to serve on; overrides the config (default 127.0.0.1:50051)");
ABSL_FLAG(std::string, model, "", "serve one more model: NAME=PATH[,device=D][,dtype=T]");
ABSL_FLAG(double, drain_timeout_seconds, -1, "time streams get to finish after SIGTERM; overrides the config");
ABSL_FLAG(bool, allow_cpu_fallback, false, "run models configured for CUDA on the CPU when no GPU is usable");
ABSL_FLAG(std::string, metrics_listen, "-",
          "address:port for Prometheus /metrics; overrides the config (\"\" turns it off)");

namespace {

using gantry::scheduler::ModelState;

// A thread joined when it goes out of scope.
struct JoinedThread {
  std::thread thread;
  ~JoinedThread() {
    if (thread.joinable()) thread.join();
  }
};

// Warms every GPU up for the dtypes its models may load in (a model without
// one: bfloat16), a thread per GPU, so the first load onto each pays for its
// weights alone (runtime/device_warm_up.h). A failure is logged: that GPU's
// first load pays instead.
void WarmUpGpus(const gantry::server::ServerConfig& config, const std::vector<std::string>& gpus) {
  std::set<std::string> dtypes;
  for (const auto& spec : config.models) {
    if (spec.device != "cpu") dtypes.insert(spec.dtype.empty() ? "bfloat16" : spec.dtype);
  }
  if (dtypes.empty()) return;
  std::vector<std::thread> threads;
  for (const std::string& gpu : gpus) {
    threads.emplace_back([&dtypes, gpu] {
      for (const std::string& dtype : dtypes) {
        auto seconds = gantry::runtime::WarmUpDevice(gpu, dtype);
        if (seconds.ok()) {
          spdlog::info("{}: warmed up for {} loads in {:.2f} s", gpu, dtype, *seconds);
        } else {
          spdlog::warn("{}: warm-up failed ({}); its first {} load pays for it", gpu,
                       std::string(seconds.status().message()), dtype);
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
}

absl::Status CheckDevices(gantry::server::ServerConfig* config) {
  spdlog::info("build: {}", gantry::runtime::DescribeBuild());
  const auto gpus = gantry::runtime::DescribeCudaDevices();
  if (gpus.empty()) spdlog::info("no CUDA device is usable");
  for (const auto& gpu : gpus) {
    spdlog::info("cuda:{}: {}, {:.1f} GiB, compute capability {}.{}", gpu.index, gpu.name,
                 gpu.total_memory / double(1ull << 30), gpu.major, gpu.minor);
  }
  for (auto& spec : config->models) {
    if (spec.device == "cpu") continue;
    if (gpus.empty()) {
      if (!config->allow_cpu_fallback) {
        return absl::FailedPreconditionError(absl::StrCat(
            "model ", spec.name, " is configured for ", spec.device, " but no CUDA device is usable (",
            gantry::runtime::DescribeBuild(), "); set allow_cpu_fallback: true to run it on the CPU"));
      }
      spdlog::warn("model {}: no CUDA device, running on the CPU (allow_cpu_fallback)", spec.name);
      spec.device = "cpu";
      spec.devices.clear();  // tensor-parallel ranks become CPU threads
      if (spec.dtype == "float16") spec.dtype = "float32";
      continue;
    }
    const int index = spec.device == "cuda" ? 0 : std::stoi(spec.device.substr(5));
    const int ranks = std::max<int32_t>(1, spec.tensor_parallel);
    int last = spec.device == "cuda" ? ranks - 1 : index + ranks - 1;
    for (const std::string& device : spec.devices) last = std::max(last, std::stoi(device.substr(5)));
    if (last >= static_cast<int>(gpus.size())) {
      return absl::FailedPreconditionError(absl::StrCat(
          "model ", spec.name, " is configured for ", spec.device,
          ranks > 1 ? absl::StrCat(" with tensor_parallel ", ranks) : std::string(), " but only ", gpus.size(),
          " CUDA device(s) exist"));
    }
  }
  return absl::OkStatus();
}

// SIGTERM/SIGINT handling through a self-pipe: a handler runs in whichever
// thread the kernel picks (LibTorch and gRPC start threads before main, so a
// signal mask set in main cannot cover them all); it only writes a byte.
int g_signal_pipe[2] = {-1, -1};

void OnSignal(int signal_number) {
  const char byte = static_cast<char>(signal_number);
  [[maybe_unused]] ssize_t written = write(g_signal_pipe[1], &byte, 1);
}

absl::Status InstallSignalHandlers() {
  if (pipe(g_signal_pipe) != 0) return absl::InternalError("cannot create the signal pipe");
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  if (sigaction(SIGTERM, &action, nullptr) != 0 || sigaction(SIGINT, &action, nullptr) != 0) {
    return absl::InternalError("cannot install the SIGTERM/SIGINT handlers");
  }
  return absl::OkStatus();
}

int WaitForSignal() {
  char byte = 0;
  while (read(g_signal_pipe[0], &byte, 1) < 0 && errno == EINTR) {
  }
  return byte;
}

// Logs state changes and keeps per-model health in step; passes loads,
// unloads and steps on to the metrics (model states are read at scrape).
class ServerObserver : public gantry::scheduler::SchedulerObserver {
 public:
  ServerObserver(grpc::HealthCheckServiceInterface* health, gantry::server::Metrics* metrics)
      : health_(health), metrics_(metrics) {}
  void OnStateChange(const std::string& model, ModelState state) override {
    spdlog::info("model {}: {}", model, gantry::scheduler::ModelStateName(state));
    health_->SetServingStatus(model, state != ModelState::kFailed && state != ModelState::kUnloading);
  }
  void OnLoad(const std::string& model, absl::Duration took, bool ok) override { metrics_->OnLoad(model, took, ok); }
  // A successful load's one log line (failures are logged where they are answered).
  void OnLoadSource(const std::string& model, const std::string& source, uint64_t weight_bytes,
                    absl::Duration took) override {
    metrics_->OnLoadSource(model, source, weight_bytes, took);
    const double rate = gantry::server::Metrics::LoadRate(weight_bytes, took);
    spdlog::info("model {}: loaded in {:.2f} s, {:.2f} GB of weights from {} ({:.2f} GB/s)", model,
                 absl::ToDoubleSeconds(took), weight_bytes / 1e9, source == "host" ? "the host tier" : source,
                 rate / 1e9);
  }
  void OnUnload(const std::string& model, gantry::scheduler::UnloadReason reason) override {
    spdlog::info("model {}: unloaded ({})", model, gantry::scheduler::UnloadReasonName(reason));
    metrics_->OnUnload(model, reason);
  }
  void OnStep(const std::string& model, const gantry::scheduler::StepReport& report) override {
    metrics_->OnStep(model, report);
  }

 private:
  grpc::HealthCheckServiceInterface* health_;
  gantry::server::Metrics* metrics_;
};

int Fail(const absl::Status& status) {
  spdlog::critical("{}", std::string(status.message()));
  return 1;
}

}  // namespace

// gRPC credentials from the tls section: insecure without a certificate.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(const gantry::server::TlsConfig& tls) {
  if (tls.cert_file.empty()) return grpc::InsecureServerCredentials();
  auto read = [](const std::string& path, std::string* out) -> absl::Status {
    std::ifstream in(path, std::ios::binary);
    if (!in) return absl::InvalidArgumentError(absl::StrCat("tls: ", path, " cannot be read"));
    out->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    return absl::OkStatus();
  };
  grpc::SslServerCredentialsOptions options;
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  if (auto s = read(tls.cert_file, &pair.cert_chain); !s.ok()) return s;
  if (auto s = read(tls.key_file, &pair.private_key); !s.ok()) return s;
  options.pem_key_cert_pairs.push_back(std::move(pair));
  if (!tls.client_ca_file.empty()) {
    if (auto s = read(tls.client_ca_file, &options.pem_root_certs); !s.ok()) return s;
    options.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  spdlog::info("gRPC over TLS{}", tls.client_ca_file.empty() ? "" : ", client certificates required");
  return grpc::SslServerCredentials(options);
}

int main(int argc, char** argv) {
  // Logs go to stderr; stdout carries only the "listening on" line.
  spdlog::set_default_logger(spdlog::stderr_color_mt("gantry"));
  if (auto s = InstallSignalHandlers(); !s.ok()) return Fail(s);
  absl::SetProgramUsageMessage("gantry-server --config FILE | --model NAME=PATH [--listen ADDRESS]");
  absl::ParseCommandLine(argc, argv);
  gantry::server::ServerConfig config;
  if (!absl::GetFlag(FLAGS_config).empty()) {
    auto loaded = gantry::server::LoadConfig(absl::GetFlag(FLAGS_config));
    if (!loaded.ok()) return Fail(loaded.status());
    config = *std::move(loaded);
  }
  if (!absl::GetFlag(FLAGS_listen).empty()) config.listen = absl::GetFlag(FLAGS_listen);
  if (absl::GetFlag(FLAGS_drain_timeout_seconds) >= 0) config.drain_timeout_seconds = absl::GetFlag(FLAGS_drain_timeout_seconds);
  config.allow_cpu_fallback |= absl::GetFlag(FLAGS_allow_cpu_fallback);
  if (absl::GetFlag(FLAGS_metrics_listen) != "-") config.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  if (!absl::GetFlag(FLAGS_model).empty()) {
    auto spec = gantry::server::ParseModelFlag(absl::GetFlag(FLAGS_model));
    if (!spec.ok()) return Fail(spec.status());
    spec->kv_cache_bytes = 256ull << 20;
    config.models.push_back(*std::move(spec));
  }
  if (config.models.empty()) {
    return Fail(absl::InvalidArgumentError("no models to serve: give --config FILE or --model NAME=PATH"));
  }
  if (auto s = CheckDevices(&config); !s.ok()) return Fail(s);

  gantry::scheduler::RegistryOptions options;
  options.budgets = config.memory_budget_bytes;
  for (const auto& gpu : gantry::runtime::DescribeCudaDevices()) {
    const std::string device = absl::StrCat("cuda:", gpu.index);
    options.gpus.push_back(device);
    if (!options.budgets.count(device)) {
      options.budgets[device] = gpu.total_memory - std::min(gpu.total_memory, config.gpu_memory_reserve_bytes);
    }
  }
  for (const auto& [device, bytes] : options.budgets) {
    spdlog::info("memory budget {}: {:.1f} MiB", device, bytes / double(1ull << 20));
  }
  options.unload_grace = absl::Seconds(config.unload_grace_seconds);
  JoinedThread host_reservation;  // joined on every return, early ones included
  if (config.host_cache_bytes > 0) {
    // The tier must never push the machine into swap: its whole budget has
    // to fit what the host has available now, beside everything else.
    const uint64_t available = gantry::server::HostAvailableBytes();
    if (config.host_cache_bytes > available) {
      return Fail(absl::FailedPreconditionError(absl::StrCat(
          "host_cache_mib ", config.host_cache_bytes >> 20, " exceeds the host's available memory (",
          available >> 20,
          " MiB: MemAvailable in /proc/meminfo, or the memory cgroup's limit less its usage); lower it or set "
          "0 to turn the host tier off")));
    }
    options.host_cache_bytes = config.host_cache_bytes;
    spdlog::info("host tier: {:.1f} MiB for evicted models' weights", config.host_cache_bytes / double(1ull << 20));
    // Faulting in and pinning takes seconds: in the background, so serving
    // starts at once (copies before it is ready pin fresh memory).
    host_reservation.thread = std::thread([bytes = config.host_cache_bytes] {
      const auto start = std::chrono::steady_clock::now();
      if (absl::Status s = gantry::runtime::ReserveHostTierMemory(bytes); !s.ok()) {
        spdlog::warn("host tier: reserving {:.1f} MiB failed ({}); evicted models' weights go to fresh memory",
                     bytes / double(1ull << 20), std::string(s.message()));
        return;
      }
      const gantry::runtime::HostArena* arena = gantry::runtime::HostTierArena();
      spdlog::info("host tier: {:.1f} MiB reserved{} in {:.1f} s", bytes / double(1ull << 20),
                   arena->pinned() ? " and pinned" : "",
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    });
  }
  // Tokens and certificates first: a bad file stops start-up before any
  // model loads or any thread starts.
  auto auth = gantry::server::Authorizer::Create(config.auth);
  if (!auth.ok()) return Fail(auth.status());
  if (auth->enabled()) {
    spdlog::info("gRPC authentication: {} API token(s), {} admin token(s)", auth->num_api_tokens(),
                 auth->num_admin_tokens());
  } else {
    spdlog::warn("gRPC authentication is off (no tokens configured): anyone who reaches {} can use and "
                 "administer the server",
                 config.listen);
  }
  auto credentials = ServerCredentials(config.tls);
  if (!credentials.ok()) return Fail(credentials.status());
  WarmUpGpus(config, options.gpus);
  gantry::scheduler::ModelRegistry registry(config.models, gantry::scheduler::LoadModelFolder,
                                            gantry::scheduler::EstimateModelBytes, options,
                                            gantry::scheduler::RealClock::Get());
  registry.StartIdleMonitor(absl::Seconds(1));

  // Metrics: GPU sensors (when NVML is there), scheduler events, requests.
  std::unique_ptr<gantry::server::GpuMonitor> gpus;
  if (auto opened = gantry::server::GpuMonitor::Open(); opened.ok()) {
    gpus = *std::move(opened);
    gpus->Start(absl::Seconds(config.gpu_sample_seconds));
  } else {
    spdlog::info("GPU metrics off: {}", std::string(opened.status().message()));
  }
  gantry::server::Metrics metrics(&registry, gpus.get());
  std::unique_ptr<gantry::server::MetricsHttpServer> metrics_http;
  if (!config.metrics_listen.empty()) {
    auto started = gantry::server::MetricsHttpServer::Start(config.metrics_listen, metrics.Collectables(),
                                                            config.metrics_tls);
    if (!started.ok()) return Fail(started.status());
    metrics_http = *std::move(started);
    // Before the "listening on" line: launchers read both from stdout.
    std::printf("gantry-server metrics on %s\n", metrics_http->url().c_str());
    std::fflush(stdout);
  }
  gantry::server::InferenceService inference(&registry, &metrics, &*auth);
  gantry::server::ModelsService models(&registry, &*auth);

  grpc::EnableDefaultHealthCheckService(true);
  // gRPC's built-in health service carries no protobuf descriptor; linking
  // ours (and naming it here, so the linker keeps it) lets reflection
  // describe grpc.health.v1.Health, as grpcurl needs.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  // gRPC sets SO_REUSEPORT by default, so a second server on the same port
  // would start and take a share of the calls; a port in use must fail.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(config.listen, *credentials, &port);
  builder.SetMaxReceiveMessageSize(gantry::kMaxMessageBytes);
  builder.SetMaxSendMessageSize(gantry::kMaxMessageBytes);
  builder.RegisterService(&inference);
  builder.RegisterService(&models);
  // INVALID_ARGUMENT naming the field for a request that does not parse
  // (e.g. invalid UTF-8), where gRPC would send a bare INTERNAL/UNIMPLEMENTED.
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(gantry::proto::NewRequestErrorInterceptorFactory());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return Fail(
        absl::UnavailableError(absl::StrCat("cannot listen on ", config.listen, ": address in use or not local")));
  }
  // Health: the server as a whole, and each model by name (NOT_SERVING while
  // failed or unloading; an unloaded model is served by loading it).
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  for (const auto& name : registry.Names()) health->SetServingStatus(name, true);
  ServerObserver observer(health, &metrics);
  registry.SetObserver(&observer);
  for (const auto& spec : config.models) {
    if (!spec.resident) continue;
    if (auto s = registry.Load(spec.name); !s.ok()) spdlog::error("{}", std::string(s.message()));
  }
  health->SetServingStatus("", true);
  const std::string host = config.listen.substr(0, config.listen.rfind(':'));
  std::printf("gantry-server listening on %s:%d\n", host.c_str(), port);
  std::fflush(stdout);
  spdlog::info("serving {} model(s) on {}:{}", config.models.size(), host, port);

  const int signal_number = WaitForSignal();
  spdlog::info("signal {}: draining for up to {} s", signal_number, config.drain_timeout_seconds);
  health->SetServingStatus("", false);
  // gRPC stops taking calls at once and waits for those in flight; the
  // engines let running requests finish for the drain time, then end them
  // with their final message (finish_reason CANCELLED), which the calls
  // write before they close. The gRPC deadline is only a backstop.
  std::thread grpc_shutdown([&] {
    server->Shutdown(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(static_cast<int64_t>(config.drain_timeout_seconds * 1000) + 10000));
  });
  registry.Shutdown(absl::Seconds(config.drain_timeout_seconds));
  grpc_shutdown.join();
  spdlog::info("stopped");
  return 0;
}
