#include "server/config.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gantry::server {
namespace {

using ::testing::HasSubstr;

TEST(ConfigTest, ParsesDefaultsAndModels) {
  auto config = ParseConfig(R"(
listen: 0.0.0.0:6000
drain_timeout_seconds: 5
defaults:
  max_batch: 16
  max_encode_tokens: 8192
  kv_cache_mib: 512
  idle_timeout_seconds: 300
  prefix_caching: false
models:
  - name: llama-8b
    path: models/llama
    device: cuda:1
    dtype: bfloat16
    max_context: 8192
    max_batch: 64
    max_encode_tokens: 4096
    prefix_caching: true
    special_tokens_in_content: true
  - name: demo
    path: /abs/demo
    resident: true
)", "/etc/gantry/gantry.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->listen, "0.0.0.0:6000");
  ASSERT_EQ(config->models.size(), 2u);
  const auto& llama = config->models[0];
  EXPECT_EQ(llama.path, "/etc/gantry/models/llama") << "relative to the config file";
  EXPECT_EQ(llama.device, "cuda:1");
  EXPECT_EQ(llama.engine.max_batch, 64);
  EXPECT_EQ(llama.kv_cache_bytes, 512ull << 20);
  EXPECT_EQ(llama.idle_timeout, absl::Seconds(300));
  EXPECT_EQ(config->models[1].engine.max_batch, 16) << "from defaults";
  EXPECT_EQ(llama.engine.max_encode_tokens, 4096);
  EXPECT_EQ(config->models[1].engine.max_encode_tokens, 8192) << "from defaults";
  EXPECT_EQ(config->models[1].engine.max_step_tokens, 2048) << "its own default, apart from the encoders'";
  EXPECT_TRUE(config->models[1].resident);
  EXPECT_TRUE(llama.engine.prefix_caching);
  EXPECT_TRUE(llama.engine.special_tokens_in_content);
  EXPECT_FALSE(config->models[1].engine.prefix_caching) << "from defaults";
  EXPECT_FALSE(config->models[1].engine.special_tokens_in_content) << "off unless asked";
}

TEST(ConfigTest, TensorParallelModels) {
  auto config = ParseConfig(R"(
models:
  - name: llama-70b
    path: /m/70b
    device: cuda
    tensor_parallel: 4
  - name: pinned
    path: /m/8b
    devices: [cuda:2, cuda:3]
)", "g.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->models[0].tensor_parallel, 4);
  EXPECT_TRUE(config->models[0].devices.empty()) << "placed by the registry";
  EXPECT_EQ(config->models[1].devices, (std::vector<std::string>{"cuda:2", "cuda:3"}));
  EXPECT_EQ(config->models[1].tensor_parallel, 2);
  EXPECT_EQ(config->models[1].device, "cuda:2");

  const std::vector<std::pair<std::string, std::string>> bad = {
      {"tensor_parallel: 0", "'tensor_parallel' must be in [1, 64], got 0"},
      {"tensor_parallel: two", "'tensor_parallel' must be a number of GPUs"},
      {"devices: cuda:0", "'devices' must list 1 to 64 devices"},
      {"devices: [cuda:0, cuda:0]", "'cuda:0' is listed twice"},
      {"devices: [cuda, cuda:1]", "devices: 'cuda' is not cpu or cuda:N"},
      {"devices: [cuda:0, cuda:1]\n    tensor_parallel: 4", "'tensor_parallel' 4 disagrees with the 2 'devices'"},
      {"devices: [cuda:0]\n    device: cuda:1", "give 'device' or 'devices', not both"},
  };
  for (const auto& [line, message] : bad) {
    auto parsed = ParseConfig("models:\n  - name: m\n    path: /m\n    " + line + "\n", "g.yaml");
    ASSERT_FALSE(parsed.ok()) << line;
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr(message)) << line;
  }
}

TEST(ConfigTest, HostCache) {
  auto config = ParseConfig(R"(
host_cache_mib: 32768
models:
  - name: big
    path: /m/big
    host_cache: false
  - name: small
    path: /m/small
)", "g.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->host_cache_bytes, 32768ull << 20);
  EXPECT_FALSE(config->models[0].host_cache);
  EXPECT_TRUE(config->models[1].host_cache) << "on unless opted out";
  EXPECT_EQ(ParseConfig("", "g.yaml")->host_cache_bytes, 0u) << "no host tier by default";

  for (const auto& [text, message] : std::vector<std::pair<std::string, std::string>>{
           {"host_cache_mib: -1", "'host_cache_mib' must be >= 0"},
           {"host_cache_mib: lots", "'host_cache_mib' must be a number of MiB"},
           {"host_cache_mib: 99999999999", "'host_cache_mib' must be at most"},
           {"models:\n  - name: m\n    path: /m\n    host_cache: maybe", "'host_cache' must be true or false"}}) {
    auto parsed = ParseConfig(text + "\n", "g.yaml");
    ASSERT_FALSE(parsed.ok()) << text;
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr(message)) << text;
  }
}

// A fake /proc/meminfo, /proc/self/cgroup and /sys/fs/cgroup under a temp dir.
class HostMemoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = ::testing::TempDir() + "host_memory_XXXXXX";
    ASSERT_NE(mkdtemp(root_.data()), nullptr);
    Write("meminfo", "MemTotal: 100000000 kB\nMemFree: 1 kB\nMemAvailable: 1048576 kB\n");  // 1 GiB
  }
  void Write(const std::string& path, const std::string& text) {
    for (size_t at = path.find('/'); at != std::string::npos; at = path.find('/', at + 1)) {
      mkdir((root_ + "/" + path.substr(0, at)).c_str(), 0755);
    }
    std::ofstream(root_ + "/" + path) << text;
  }
  uint64_t Available() {
    return HostAvailableBytesFrom(root_ + "/meminfo", root_ + "/self_cgroup", root_ + "/cgroup");
  }
  std::string root_;
};

TEST_F(HostMemoryTest, MemAvailableWithoutALimit) {
  Write("self_cgroup", "0::/\n");
  EXPECT_EQ(Available(), 1ull << 30);
  Write("cgroup/memory.max", "max\n");  // cgroup v2: no limit
  EXPECT_EQ(Available(), 1ull << 30);
}

TEST_F(HostMemoryTest, ACgroupV2LimitOnTheProcessOrAboveIt) {
  Write("self_cgroup", "0::/system.slice/gantry.service\n");
  Write("cgroup/system.slice/gantry.service/memory.max", "max\n");
  Write("cgroup/system.slice/memory.max", "536870912\n");      // 512 MiB above the process
  Write("cgroup/system.slice/memory.current", "134217728\n");  // 128 MiB used
  EXPECT_EQ(Available(), 384ull << 20);
  Write("cgroup/system.slice/gantry.service/memory.max", "268435456\n");  // 256 MiB on the unit itself
  Write("cgroup/system.slice/gantry.service/memory.current", "200000000\n");
  EXPECT_EQ(Available(), 268435456ull - 200000000ull);
}

TEST_F(HostMemoryTest, ACgroupV1Limit) {
  Write("self_cgroup", "12:pids:/docker/abc\n9:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n");
  Write("cgroup/memory/docker/abc/memory.limit_in_bytes", "9223372036854771712\n");  // v1's "no limit"
  EXPECT_EQ(Available(), 1ull << 30);
  Write("cgroup/memory/docker/abc/memory.limit_in_bytes", "314572800\n");  // 300 MiB
  Write("cgroup/memory/docker/abc/memory.usage_in_bytes", "419430400\n");  // over it already
  EXPECT_EQ(Available(), 0u);
}

TEST_F(HostMemoryTest, NoMeminfoIsZero) {
  unlink((root_ + "/meminfo").c_str());
  EXPECT_EQ(Available(), 0u);
}

TEST(ConfigTest, MemoryBudgets) {
  auto config = ParseConfig(R"(
memory_budget_mib:
  cuda:0: 70000
  cpu: 16000
gpu_memory_reserve_mib: 1024
unload_grace_seconds: 3
)", "g.yaml");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->memory_budget_bytes.at("cuda:0"), 70000ull << 20);
  EXPECT_EQ(config->memory_budget_bytes.at("cpu"), 16000ull << 20);
  EXPECT_EQ(config->gpu_memory_reserve_bytes, 1024ull << 20);
  EXPECT_EQ(config->unload_grace_seconds, 3);
  auto defaults = ParseConfig("listen: 127.0.0.1:1\n", "g.yaml");
  ASSERT_TRUE(defaults.ok());
  EXPECT_TRUE(defaults->memory_budget_bytes.empty()) << "GPUs get theirs from their memory at start-up";
  EXPECT_EQ(defaults->gpu_memory_reserve_bytes, 2048ull << 20);
}

TEST(ConfigTest, ErrorsNameKeyAndLine) {
  struct Case {
    std::string yaml, message;
  };
  for (const Case& c : std::vector<Case>{
           {"listen: x:1\nport: 5\n", "g.yaml:2: unknown key 'port' in the top level"},
           {"models:\n  - name: a\n    path: p\n    max_batch: many\n", "g.yaml:4: 'max_batch' must be a positive integer, got 'many'"},
           {"models:\n  - name: a\n    path: p\n    max_batch: 0\n", "g.yaml:4: 'max_batch' must be a positive integer, got 0"},
           {"models:\n  - name: a\n    path: p\n    max_encode_tokens: -5\n",
            "g.yaml:4: 'max_encode_tokens' must be a positive integer, got -5"},
           {"models:\n  - name: a\n    path: p\n    device: tpu\n", "g.yaml:4: device must be cpu, cuda or cuda:N, got 'tpu'"},
           {"models:\n  - name: a\n    path: p\n    dtype: int4\n", "g.yaml:4: dtype must be float32, bfloat16 or float16"},
           {"models:\n  - name: a\n", "g.yaml:2: models[0] needs 'name' and 'path'"},
           {"models:\n  - {name: a, path: p}\n  - {name: a, path: q}\n", "g.yaml:3: model name 'a' appears twice"},
           {"models:\n  - name: 'a b'\n    path: p\n", "'name' must match [A-Za-z0-9._-]+"},
           {"defaults:\n  idle_timeout_seconds: -1\n", "g.yaml:2: 'idle_timeout_seconds' must be a number of seconds >= 0"},
           // Issue 13: NaN, infinities, negative graces and MiB overflows were accepted.
           {"defaults:\n  idle_timeout_seconds: .nan\n", "g.yaml:2: 'idle_timeout_seconds' must be a number of seconds >= 0"},
           {"gpu_sample_seconds: .NaN\n", "g.yaml:1: 'gpu_sample_seconds' must be a number of seconds > 0"},
           {"drain_timeout_seconds: .inf\n", "g.yaml:1: 'drain_timeout_seconds' must be a number of seconds >= 0"},
           {"unload_grace_seconds: -3\n", "g.yaml:1: 'unload_grace_seconds' must be a number of seconds >= 0"},
           {"defaults:\n  kv_cache_mib: 99999999999999\n", "g.yaml:2: 'kv_cache_mib' must be at most 16777216 MiB"},
           {"memory_budget_mib:\n  cpu: 99999999999999\n", "g.yaml:2: 'memory_budget_mib' must be at most 16777216 MiB"},
           {"gpu_memory_reserve_mib: 99999999999999\n", "g.yaml:1: 'gpu_memory_reserve_mib' must be at most"},
           {"listen: [1, 2\n", "g.yaml:2: YAML syntax error"},
           {"memory_budget_mib: 100\n", "g.yaml:1: 'memory_budget_mib' must map devices to MiB"},
           {"memory_budget_mib:\n  gpu0: 100\n", "g.yaml:2: memory_budget_mib: 'gpu0' is not cpu or cuda:N"},
           {"memory_budget_mib:\n  cuda: 100\n", "g.yaml:2: memory_budget_mib: 'cuda' is not cpu or cuda:N"},
           {"memory_budget_mib:\n  cuda:0: lots\n", "g.yaml:2: memory_budget_mib: 'cuda:0' must be a positive number of MiB"},
           {"memory_budget_mib:\n  cpu: 0\n", "memory_budget_mib: 'cpu' must be a positive number of MiB"},
           {"gpu_memory_reserve_mib: -5\n", "g.yaml:1: 'gpu_memory_reserve_mib' must be >= 0"},
           {"unload_grace_seconds: soon\n", "g.yaml:1: 'unload_grace_seconds' must be a number of seconds"},
           {"metrics_listen: 9464\n", "g.yaml:1: 'metrics_listen' must be address:port"},
           {"gpu_sample_seconds: 0\n", "g.yaml:1: 'gpu_sample_seconds' must be a number of seconds > 0"},
       }) {
    auto config = ParseConfig(c.yaml, "g.yaml");
    ASSERT_FALSE(config.ok()) << c.yaml.substr(0, 200);
    EXPECT_THAT(config.status().message(), HasSubstr(c.message)) << c.yaml;
  }
}

TEST(ConfigTest, NodesOfTheWrongKindAreErrorsNotExceptions) {
  // Found by tests/fuzz: a mapping as a key threw out of ParseConfig.
  for (const char* yaml : {"? {a: 1}\n: 2\n", "auth:\n  ? [x]\n  : y\n", "models:\n  - {? [1]: 2}\n"}) {
    auto config = ParseConfig(yaml, "g.yaml");
    ASSERT_FALSE(config.ok()) << yaml;
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(config.status().message(), HasSubstr("g.yaml:")) << yaml;
  }
}

TEST(ConfigTest, CatalogueSizeIsCapped) {
  std::string yaml = "models:\n";
  for (int i = 0; i < 257; ++i) yaml += "  - {name: m" + std::to_string(i) + ", path: p}\n";
  auto config = ParseConfig(yaml, "g.yaml");
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(), HasSubstr("'models' lists 257 models; at most 256"));
}

TEST(ConfigTest, ModelFlag) {
  auto spec = ParseModelFlag("demo=models/demo,device=cuda:0,dtype=bfloat16");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->name, "demo");
  EXPECT_EQ(spec->path, "models/demo");
  EXPECT_EQ(spec->device, "cuda:0");
  EXPECT_EQ(spec->dtype, "bfloat16");
  EXPECT_THAT(ParseModelFlag("demo").status().message(), HasSubstr("NAME=PATH"));
  EXPECT_THAT(ParseModelFlag("a=b,colour=red").status().message(), HasSubstr("option 'colour' is unknown"));
}

}  // namespace
}  // namespace gantry::server
