// Reading gantry-server's /metrics as Prometheus would, for the tests.
#ifndef GANTRY_TESTS_SERVER_METRICS_SCRAPE_H_
#define GANTRY_TESTS_SERVER_METRICS_SCRAPE_H_

#include <httplib.h>

#include <optional>
#include <sstream>
#include <string>
#include <utility>

namespace gantry::testing {

// "http://host:port/metrics" -> {host, port}.
inline std::pair<std::string, int> HostPort(const std::string& url) {
  std::string rest = url.substr(url.find("//") + 2);
  rest = rest.substr(0, rest.find('/'));
  return {rest.substr(0, rest.rfind(':')), std::stoi(rest.substr(rest.rfind(':') + 1))};
}

// The value of the first sample of `metric` whose labels contain every one of
// `labels` (each such as `code="OK"`).
inline std::optional<double> ScrapeValue(httplib::Client& client, const std::string& metric,
                                         std::initializer_list<std::string> labels) {
  auto response = client.Get("/metrics");
  if (!response || response->status != 200) return std::nullopt;
  std::istringstream lines(response->body);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(metric + "{", 0) != 0) continue;
    bool all = true;
    for (const auto& label : labels) all = all && line.find(label) != std::string::npos;
    if (all) return std::stod(line.substr(line.rfind(' ') + 1));
  }
  return std::nullopt;
}

inline std::optional<double> ScrapeValue(httplib::Client& client, const std::string& metric, const std::string& label) {
  return ScrapeValue(client, metric, {label});
}

}  // namespace gantry::testing

#endif  // GANTRY_TESTS_SERVER_METRICS_SCRAPE_H_
