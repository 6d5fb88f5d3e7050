// Integration: gantry-server and gantry-adapter on loopback, driven by the
// official OpenAI SDK from npm (openai_sdk_test.mjs, run with node --test).
#include <sys/wait.h>

#include <cstdio>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/server_process.h"

namespace gantry {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

std::string RunCommand(const std::string& command, int* exit_code) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  std::string out;
  char buffer[1024];
  while (pipe && std::fgets(buffer, sizeof(buffer), pipe)) out += buffer;
  const int status = pipe ? pclose(pipe) : -1;
  *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

TEST(AdapterTest, OpenAiSdkAgainstTheRealServices) {
  const std::string root = GANTRY_SOURCE_DIR;
  ASSERT_EQ(std::system(("test -d " + root + "/tests/adapter/node_modules/openai").c_str()), 0)
      << "run tools/setup.sh (npm ci in tests/adapter) first";
  testing::ServerProcess server("adapter_upstream", "defaults:\n  kv_cache_mib: 64\nmodels:\n  - name: demo\n    path: " +
                                                        root + "/models/demo\n    resident: true\n    max_context: 2048\n"
                                                        "  - name: broken\n    path: " + root + "/models/does-not-exist\n");
  ASSERT_FALSE(server.address().empty()) << server.Log();
  testing::ServerProcess adapter("adapter", GANTRY_ADAPTER_BINARY,
                                 {"--listen", "127.0.0.1:0", "--upstream", server.address(), "--api_keys",
                                  "sk-test-1,sk-test-2"});
  ASSERT_FALSE(adapter.address().empty()) << adapter.Log();
  int exit_code = 0;
  const std::string output = RunCommand("cd " + root + "/tests/adapter && GANTRY_ADAPTER_URL=http://" +
                                            adapter.address() + "/v1 GANTRY_API_KEY=sk-test-2 GANTRY_METRICS_URL=" +
                                            server.metrics_url() + " node --test openai_sdk_test.mjs",
                                        &exit_code);
  EXPECT_EQ(exit_code, 0) << output << "\nadapter log:\n" << adapter.Log();
  EXPECT_THAT(output, HasSubstr("# fail 0"));
  std::printf("%s\n", output.substr(output.rfind("# tests")).c_str());
  EXPECT_EQ(adapter.Terminate(10s), 0) << adapter.Log();
  EXPECT_EQ(server.Terminate(15s), 0);
}

TEST(AdapterTest, HealthFollowsTheUpstream) {
  // No server at the upstream address: /health says so with 503; the adapter runs on.
  testing::ServerProcess adapter("adapter_health", GANTRY_ADAPTER_BINARY,
                                 {"--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1"});
  ASSERT_FALSE(adapter.address().empty()) << adapter.Log();
  int exit_code = 0;
  std::string out = RunCommand("curl -s -w ' %{http_code}' http://" + adapter.address() + "/health", &exit_code);
  EXPECT_THAT(out, HasSubstr("\"upstream_status\":\"UNREACHABLE\""));
  EXPECT_THAT(out, HasSubstr(" 503"));
  EXPECT_THAT(out, ::testing::Not(HasSubstr("127.0.0.1"))) << "issue 13: /health showed the upstream address";
  out = RunCommand("curl -s -w ' %{http_code}' http://" + adapter.address() +
                       "/v1/chat/completions -d '{\"model\":\"demo\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}'",
                   &exit_code);
  EXPECT_THAT(out, HasSubstr(" 503"));
  EXPECT_THAT(out, HasSubstr("\"type\":\"server_error\""));
  // A short message and a request id; the transport's details go to the log.
  EXPECT_THAT(out, HasSubstr("request id req-"));
  EXPECT_THAT(out, ::testing::Not(HasSubstr("127.0.0.1")));
  // The adapter's own metrics count both, and promtool accepts them.
  const std::string scrape = ::testing::TempDir() + "/adapter_scrape.txt";
  RunCommand("curl -s -o " + scrape + " http://" + adapter.address() + "/metrics", &exit_code);
  out = RunCommand("cat " + scrape, &exit_code);
  EXPECT_THAT(out, HasSubstr("gantry_adapter_requests_total{route=\"/health\",status=\"503\"} 1"));
  EXPECT_THAT(out, HasSubstr("gantry_adapter_requests_total{route=\"/v1/chat/completions\",status=\"503\"} 1"));
  EXPECT_THAT(out, HasSubstr("gantry_adapter_request_duration_seconds_count{route=\"/v1/chat/completions\"} 1"));
  RunCommand("promtool check metrics < " + scrape, &exit_code);
  EXPECT_EQ(exit_code, 0);
  EXPECT_EQ(adapter.Terminate(10s), 0) << adapter.Log();
}

TEST(AdapterTest, BadConfigStopsStartUpNamingTheLine) {
  const std::string path = ::testing::TempDir() + "/bad_adapter.yaml";
  std::ofstream(path) << "listen: 127.0.0.1:0\nupstrem: x\n";
  int exit_code = 0;
  std::string out = RunCommand(std::string(GANTRY_ADAPTER_BINARY) + " --config " + path, &exit_code);
  EXPECT_EQ(exit_code, 1);
  EXPECT_THAT(out, HasSubstr("bad_adapter.yaml:2: unknown key 'upstrem'"));
}

TEST(AdapterTest, PortInUseIsAStartUpError) {
  testing::ServerProcess first("adapter_first", GANTRY_ADAPTER_BINARY,
                               {"--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1"});
  ASSERT_FALSE(first.address().empty()) << first.Log();
  int exit_code = 0;
  const std::string out = RunCommand(std::string(GANTRY_ADAPTER_BINARY) + " --listen " + first.address() +
                                         " --upstream 127.0.0.1:1",
                                     &exit_code);
  EXPECT_EQ(exit_code, 1);
  EXPECT_THAT(out, HasSubstr("cannot listen on " + first.address() + ": address in use"));
  EXPECT_EQ(first.Terminate(10s), 0) << first.Log();
}

}  // namespace
}  // namespace gantry
