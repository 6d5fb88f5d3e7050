// Server configuration: a YAML file (yaml-cpp) whose keys are checked
// strictly (an unknown key or an invalid value stops start-up naming the key
// and its line), then command-line flags on top.
//
//   listen: 127.0.0.1:50051        # address:port for gRPC
//   drain_timeout_seconds: 30      # SIGTERM: time streams get to finish
//   allow_cpu_fallback: false      # run cuda models on the CPU when no GPU is usable
//   metrics_listen: 127.0.0.1:9464 # Prometheus /metrics; "" turns it off
//   metrics_tls:                   # /metrics over HTTPS (same keys as tls below)
//     cert_file: metrics.crt
//     key_file: metrics.key
//     client_ca_file: ca.crt       #   optional: require client certificates it signed
//   gpu_sample_seconds: 2          # how often GPU sensors are read (NVML)
//   memory_budget_mib:             # bytes models may take per device; default: each GPU's
//     cuda:0: 70000                #   memory less gpu_memory_reserve_mib, the CPU unlimited
//     cpu: 16000
//   gpu_memory_reserve_mib: 2048   # kept free on each GPU (activations, CUDA context)
//   unload_grace_seconds: 10       # a forced unload cancels running requests after this
//   auth:                          # bearer tokens (README, "Security"); none: no authentication
//     api_tokens_file: tokens      #   one per line: generate, chat, tokenize, read model states
//     admin_tokens_file: admin     #   also Models.Load / Unload
//   tls:                           # gRPC over TLS
//     cert_file: server.crt
//     key_file: server.key
//     client_ca_file: ca.crt       #   optional: require client certificates it signed
//   defaults:                      # for every model that does not set its own
//     max_batch: 32
//     max_step_tokens: 2048
//     max_encode_tokens: 16384     # embedding / rerank encoders: padded tokens per step
//     max_queue: 256
//     kv_cache_mib: 256
//     idle_timeout_seconds: 0      # 0 = never unload for idleness
//     prefix_caching: true         # reuse the KV cache of prompts' shared prefixes
//     special_tokens_in_content: false  # true: "<|im_start|>" in a message is the special token
//   models:
//     - name: demo                 # [A-Za-z0-9._-]+, unique
//       path: ../models/demo       # relative to this file
//       device: cpu                # cpu, cuda:N, or cuda for the GPU with the most free budget
//       dtype: float32             # optional: float32, bfloat16, float16
//       max_context: 2048          # optional: tokens, <= the model's
//       resident: true             # load at start-up, never unload for idleness
//       tool_parser: hermes        # optional: tool-call format (hermes, llama3_json, mistral,
//                                  #   deepseek_v3); default: detected from the chat template
//       reasoning_parser: qwen3    # optional: <think> reasoning (qwen3, deepseek_r1, none); default: detected
//       (and any key of `defaults`)
#ifndef GANTRY_SERVER_CONFIG_H_
#define GANTRY_SERVER_CONFIG_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "scheduler/model_registry.h"
#include "server/auth.h"

namespace gantry::server {

// gRPC (tls) or /metrics (metrics_tls) over TLS when cert_file is set;
// client certificates signed by client_ca_file are then required when that
// is set too.
struct TlsConfig {
  std::string cert_file, key_file, client_ca_file;
};

struct ServerConfig {
  std::string listen = "127.0.0.1:50051";
  double drain_timeout_seconds = 30;
  bool allow_cpu_fallback = false;
  std::string metrics_listen = "127.0.0.1:9464";
  double gpu_sample_seconds = 2;
  std::map<std::string, uint64_t> memory_budget_bytes;  // device -> bytes
  uint64_t gpu_memory_reserve_bytes = 2048ull << 20;
  double unload_grace_seconds = 10;
  uint64_t host_cache_bytes = 0;  // the host tier of evicted models' weights (0: none)
  std::vector<scheduler::ModelSpec> models;
  AuthConfig auth;
  TlsConfig tls;
  TlsConfig metrics_tls;
};

// Host memory this process may still take, in bytes: MemAvailable from
// /proc/meminfo, and within a memory cgroup (a container, a systemd unit with
// MemoryMax) the tightest of its limits less what it already uses, for
// cgroup v2 and v1. 0 when /proc/meminfo cannot be read.
uint64_t HostAvailableBytes();
// The same from other files (tests): `meminfo` as /proc/meminfo, `self_cgroup`
// as /proc/self/cgroup, `cgroup_root` as /sys/fs/cgroup.
uint64_t HostAvailableBytesFrom(const std::string& meminfo, const std::string& self_cgroup,
                                const std::string& cgroup_root);

// `path` names the file in errors and anchors relative model paths.
absl::StatusOr<ServerConfig> ParseConfig(const std::string& yaml_text, const std::string& path);
absl::StatusOr<ServerConfig> LoadConfig(const std::string& path);

// A model given on the command line: NAME=PATH[,device=D][,dtype=T].
absl::StatusOr<scheduler::ModelSpec> ParseModelFlag(const std::string& flag);

}  // namespace gantry::server

#endif  // GANTRY_SERVER_CONFIG_H_
