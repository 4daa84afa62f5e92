#pragma once
// The process-level tests' view of a head's HTTP gateway: its port from the head's log,
// one HTTP exchange, and a metric's value in a /metrics text.
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdint>
#include <regex>
#include <string>

namespace troupe::test::chaos {

/// One HTTP exchange with the gateway.
struct http_reply {
  int status = 0;
  std::string body;
};

/// Sends `method target` (with a JSON `body` when not empty, and "Authorization: Bearer
/// <bearer>" when `bearer` is not empty) to 127.0.0.1:`port`.
inline http_reply http_call(uint16_t port, boost::beast::http::verb method, const std::string& target,
                            const std::string& body = "", const std::string& bearer = "") {
  namespace beast = boost::beast;
  namespace bhttp = boost::beast::http;
  namespace net = boost::asio;
  net::io_context ioc;
  beast::tcp_stream s(ioc);
  s.connect(net::ip::tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  s.expires_after(std::chrono::seconds(30));
  bhttp::request<bhttp::string_body> req{method, target, 11};
  req.set(bhttp::field::host, "127.0.0.1");
  if (!body.empty()) req.set(bhttp::field::content_type, "application/json");
  if (!bearer.empty()) req.set(bhttp::field::authorization, "Bearer " + bearer);
  req.body() = body;
  req.prepare_payload();
  bhttp::write(s, req);
  beast::flat_buffer buf;
  bhttp::response<bhttp::string_body> res;
  bhttp::read(s, buf, res);
  return {static_cast<int>(res.result_int()), res.body()};
}

/// The body of GET `target` on the gateway at 127.0.0.1:`port`.
inline std::string http_get(uint16_t port, const std::string& target) {
  return http_call(port, boost::beast::http::verb::get, target).body;
}

/// The gateway's port from the head's "http: listening on HOST:PORT" line (0 = none).
inline uint16_t gateway_port(const std::string& log) {
  std::smatch m;
  if (!std::regex_search(log, m, std::regex(R"(http: listening on [0-9.]+:(\d+))"))) return 0;
  return static_cast<uint16_t>(std::stoi(m[1]));
}

/// The value of `series` (name and labels, as rendered) in a /metrics text; -1 when absent.
inline double metric_value(const std::string& text, const std::string& series) {
  const auto at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + series.size() + 2));
}

}  // namespace troupe::test::chaos
