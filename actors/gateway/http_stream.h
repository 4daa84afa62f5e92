#pragma once
/// The gateway's internals (not a public API): the byte stream of one HTTP connection,
/// plain TCP or TLS over TCP (server.tls), behind one type so that a session's logic is
/// written once. It is an Asio AsyncReadStream and AsyncWriteStream: Beast's HTTP reads
/// and writes and net::async_write take it as they take a beast::tcp_stream.
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>
#include <optional>
#include <utility>

namespace troupe::http {

/// One connection's stream: a beast::tcp_stream, or a beast::ssl_stream over one.
class http_stream {
 public:
  using executor_type = boost::beast::tcp_stream::executor_type;

  /// Takes over an accepted socket; TLS (server side) with `tls`'s settings when it is not null.
  http_stream(boost::asio::ip::tcp::socket&& socket, boost::asio::ssl::context* tls) {
    if (tls)
      tls_.emplace(std::move(socket), *tls);
    else
      plain_.emplace(std::move(socket));
  }

  /// True when the connection is TLS (the handshake comes first).
  bool is_tls() const { return tls_.has_value(); }
  /// The TCP stream under TLS, or the stream itself: its timeouts bound every read and write.
  boost::beast::tcp_stream& tcp() { return tls_ ? boost::beast::get_lowest_layer(*tls_) : *plain_; }
  /// The socket (peer address, cancel, shutdown).
  boost::asio::ip::tcp::socket& socket() { return tcp().socket(); }
  executor_type get_executor() { return tcp().get_executor(); }

  /// Reads some bytes (decrypted under TLS).
  template <class Buffers, class Handler>
  void async_read_some(const Buffers& buffers, Handler&& handler) {
    if (tls_)
      tls_->async_read_some(buffers, std::forward<Handler>(handler));
    else
      plain_->async_read_some(buffers, std::forward<Handler>(handler));
  }

  /// Writes some bytes (encrypted under TLS).
  template <class Buffers, class Handler>
  void async_write_some(const Buffers& buffers, Handler&& handler) {
    if (tls_)
      tls_->async_write_some(buffers, std::forward<Handler>(handler));
    else
      plain_->async_write_some(buffers, std::forward<Handler>(handler));
  }

  /// The server side of the TLS handshake (TLS streams only); bounded by the TCP stream's
  /// expiry, so a client that says nothing is dropped.
  template <class Handler>
  void async_handshake(Handler&& handler) {
    tls_->async_handshake(boost::asio::ssl::stream_base::server, std::forward<Handler>(handler));
  }

  /// Shuts the socket down both ways and closes it (no TLS close_notify: the HTTP message
  /// framing, Content-Length or the last chunk, already told the client where the answer ends).
  void close() {
    boost::beast::error_code ignored;
    socket().shutdown(boost::asio::ip::tcp::socket::shutdown_both, ignored);
    tcp().close();
  }

 private:
  std::optional<boost::beast::tcp_stream> plain_;
  std::optional<boost::beast::ssl_stream<boost::beast::tcp_stream>> tls_;
};

}  // namespace troupe::http
