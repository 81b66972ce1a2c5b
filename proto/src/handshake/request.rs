//! The server side: parsing and validating a client's upgrade request.

use crate::deflate::{DeflateConfig, accept_offers};

use super::error::RequestError;
use super::extension::{Extension, ExtensionSyntaxError, parse_extensions};
use super::http::{
    HeadLimits, Header, Progress, Single, collect_headers, has_token, list_elements, single,
    values, with_header_storage,
};
use super::key::{accept_key, is_valid_client_key};
use super::response::Accept;

/// A valid WebSocket upgrade request, borrowed from the bytes it was parsed
/// from.
///
/// Everything the engine needs before deciding to accept is here: target,
/// headers, `Origin`, `Host`, and what the client offers. The engine runs
/// its checks (auth, origin, connection limits) and then calls
/// [`accept`](Self::accept) or refuses with
/// [`write_rejection`](super::write_rejection).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpgradeRequest<'b> {
    method: &'b str,
    target: &'b str,
    host: &'b str,
    key: &'b [u8],
    headers: Vec<Header<'b>>,
}

/// Parses and validates an upgrade request from the bytes received so far.
///
/// Call it with everything received on the connection, each time more
/// arrives, until it returns [`Progress::Done`]; `head_len` then says where
/// the WebSocket stream begins (a client may send frames right behind its
/// request). Bytes past [`HeadLimits::max_head_bytes`] are never examined.
///
/// The one allocation is the list of header positions (no header bytes
/// are copied), made once the head is complete.
///
/// Each call parses from the start of `buf`: a peer trickling its head a
/// byte at a time costs one parse per byte, each at most
/// [`HeadLimits::max_head_bytes`] long. The byte limit and the engine's
/// handshake timeout bound that work.
///
/// # Errors
///
/// A [`RequestError`] whose [`status`](RequestError::status) is the HTTP
/// status to answer with, and whose
/// [`write_response`](RequestError::write_response) writes that answer.
pub fn parse_request<'b>(
    buf: &'b [u8],
    limits: &HeadLimits,
) -> Result<Progress<UpgradeRequest<'b>>, RequestError> {
    let window = buf.get(..limits.max_head_bytes).unwrap_or(buf);
    let parsed = with_header_storage(limits.max_headers, |storage| {
        let mut request = httparse::Request::new(storage);
        match request.parse(window) {
            Ok(httparse::Status::Complete(head_len)) => Ok(Some((
                head_len,
                request.method.unwrap_or_default(),
                request.path.unwrap_or_default(),
                request.version.unwrap_or_default(),
                collect_headers(request.headers),
            ))),
            Ok(httparse::Status::Partial) => Ok(None),
            Err(httparse::Error::TooManyHeaders) => Err(RequestError::TooManyHeaders {
                max: limits.max_headers,
            }),
            Err(error) => Err(RequestError::Malformed(error)),
        }
    })?;
    let Some((head_len, method, target, version, headers)) = parsed else {
        if window.len() >= limits.max_head_bytes {
            return Err(RequestError::HeadTooLarge {
                max: limits.max_head_bytes,
            });
        }
        return Ok(Progress::NeedMore);
    };
    let request = validate(method, target, version, headers)?;
    Ok(Progress::Done {
        value: request,
        head_len,
    })
}

/// Applies RFC 6455 §4.2.1 to a complete request head.
fn validate<'b>(
    method: &'b str,
    target: &'b str,
    version: u8,
    headers: Vec<Header<'b>>,
) -> Result<UpgradeRequest<'b>, RequestError> {
    if method != "GET" {
        return Err(RequestError::MethodNotAllowed);
    }
    if version != 1 {
        return Err(RequestError::Http10);
    }
    let host = match single(&headers, "Host") {
        Single::Missing => return Err(RequestError::MissingHost),
        Single::Repeated => return Err(RequestError::DuplicateHeader("Host")),
        Single::One(host) => std::str::from_utf8(host).map_err(|_| RequestError::InvalidHost)?,
    };
    if host.is_empty() {
        return Err(RequestError::InvalidHost);
    }
    if !has_token(values(&headers, "Upgrade"), "websocket") {
        return Err(RequestError::NotWebSocketUpgrade);
    }
    if !has_token(values(&headers, "Connection"), "upgrade") {
        return Err(RequestError::NotConnectionUpgrade);
    }
    match single(&headers, "Sec-WebSocket-Version") {
        Single::Missing => return Err(RequestError::MissingVersion),
        Single::Repeated => return Err(RequestError::DuplicateHeader("Sec-WebSocket-Version")),
        Single::One(b"13") => {}
        Single::One(_) => return Err(RequestError::UnsupportedVersion),
    }
    let key = match single(&headers, "Sec-WebSocket-Key") {
        Single::Missing => return Err(RequestError::MissingKey),
        Single::Repeated => return Err(RequestError::DuplicateHeader("Sec-WebSocket-Key")),
        Single::One(key) if is_valid_client_key(key) => key,
        Single::One(_) => return Err(RequestError::InvalidKey),
    };
    Ok(UpgradeRequest {
        method,
        target,
        host,
        key,
        headers,
    })
}

impl<'b> UpgradeRequest<'b> {
    /// The request method (always `GET` once validated; here for logs).
    pub fn method(&self) -> &'b str {
        self.method
    }

    /// The request target as sent: path and query.
    pub fn target(&self) -> &'b str {
        self.target
    }

    /// The target's path: everything before the first `?`.
    pub fn path(&self) -> &'b str {
        self.target
            .split_once('?')
            .map_or(self.target, |(path, _)| path)
    }

    /// The target's query, after the first `?`, still percent-encoded;
    /// `None` without a `?`.
    pub fn query(&self) -> Option<&'b str> {
        self.target.split_once('?').map(|(_, query)| query)
    }

    /// Every header, in the order received, repeated ones included.
    pub fn headers(&self) -> &[Header<'b>] {
        &self.headers
    }

    /// The value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        values(&self.headers, name).next()
    }

    /// The values of every header called `name` (case-insensitive), in
    /// order, for headers that may repeat.
    pub fn header_all<'h>(&'h self, name: &'h str) -> impl Iterator<Item = &'b [u8]> + 'h {
        values(&self.headers, name)
    }

    /// The `Host` header (required, exactly one).
    pub fn host(&self) -> &'b str {
        self.host
    }

    /// The `Origin` header browsers send, for the engine's origin check;
    /// `None` from clients that send none (most non-browser clients).
    pub fn origin(&self) -> Option<&'b [u8]> {
        self.header("Origin")
    }

    /// The `Sec-WebSocket-Key`, already checked to be base64 of 16 bytes.
    pub fn key(&self) -> &'b [u8] {
        self.key
    }

    /// The subprotocols offered in `Sec-WebSocket-Protocol`, in the
    /// client's order, across all lines of the header.
    pub fn subprotocols(&self) -> impl Iterator<Item = &'b str> + '_ {
        list_elements(values(&self.headers, "Sec-WebSocket-Protocol"))
            .filter_map(|p| std::str::from_utf8(p).ok())
    }

    /// The extensions offered in `Sec-WebSocket-Extensions`, in the
    /// client's order, across all lines of the header. A malformed line
    /// yields one error and the following lines are still read.
    pub fn extensions(
        &self,
    ) -> impl Iterator<Item = Result<Extension<'b>, ExtensionSyntaxError>> + '_ {
        parse_extensions(values(&self.headers, "Sec-WebSocket-Extensions"))
    }

    /// Accepts the upgrade: computes the accept key, picks the subprotocol
    /// and negotiates permessage-deflate. Write the result with
    /// [`Accept::write_response`].
    ///
    /// `subprotocols` is the server's list in order of preference: the
    /// first one the client offered is chosen; if none was offered the
    /// connection runs without one (raw mode), which is not an error.
    pub fn accept<'p>(&self, subprotocols: &[&'p str], deflate: &DeflateConfig) -> Accept<'p> {
        let subprotocol = subprotocols
            .iter()
            .copied()
            .find(|ours| self.subprotocols().any(|offered| offered == *ours));
        let deflate = if deflate.enabled {
            accept_offers(self.extensions())
        } else {
            None
        };
        Accept {
            key: accept_key(self.key),
            subprotocol,
            deflate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::Negotiated;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    /// The headers of a valid request, one per line.
    fn valid_headers() -> Vec<String> {
        [
            "Host: example.com",
            "Upgrade: websocket",
            "Connection: Upgrade",
            &format!("Sec-WebSocket-Key: {KEY}"),
            "Sec-WebSocket-Version: 13",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    fn head(request_line: &str, headers: &[String]) -> Vec<u8> {
        let mut out = format!("{request_line}\r\n");
        for header in headers {
            out.push_str(header);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.into_bytes()
    }

    /// A valid request with the header starting with `name` replaced by
    /// `line` (or removed if `line` is empty, or added if absent).
    fn with_header(name: &str, line: &str) -> Vec<u8> {
        let mut headers = valid_headers();
        headers.retain(|h| !h.starts_with(name));
        if !line.is_empty() {
            headers.push(line.to_owned());
        }
        head("GET /chat HTTP/1.1", &headers)
    }

    fn parse(buf: &[u8]) -> Result<Progress<UpgradeRequest<'_>>, RequestError> {
        parse_request(buf, &HeadLimits::default())
    }

    fn parse_done(buf: &[u8]) -> (UpgradeRequest<'_>, usize) {
        match parse(buf) {
            Ok(Progress::Done { value, head_len }) => (value, head_len),
            other => panic!("expected a parsed request, got {other:?}"),
        }
    }

    fn parse_err(buf: &[u8]) -> RequestError {
        match parse(buf) {
            Err(error) => error,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    fn response_of(error: &RequestError) -> String {
        let mut out = Vec::new();
        error.write_response(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn valid_request_exposes_target_host_key_and_headers() {
        let buf = head("GET /chat?room=1&x HTTP/1.1", &valid_headers());
        let (request, head_len) = parse_done(&buf);
        assert_eq!(head_len, buf.len());
        assert_eq!(request.method(), "GET");
        assert_eq!(request.target(), "/chat?room=1&x");
        assert_eq!(request.path(), "/chat");
        assert_eq!(request.query(), Some("room=1&x"));
        assert_eq!(request.host(), "example.com");
        assert_eq!(request.key(), KEY.as_bytes());
        assert_eq!(request.origin(), None);
        assert_eq!(request.headers().len(), 5);
        assert_eq!(request.headers()[0].name, "Host");
        assert_eq!(request.headers()[0].value_str(), Some("example.com"));
    }

    #[test]
    fn target_without_question_mark_has_no_query() {
        let buf = with_header("Origin", "");
        let (request, _) = parse_done(&buf);
        assert_eq!(request.path(), "/chat");
        assert_eq!(request.query(), None);
    }

    #[test]
    fn byte_by_byte_arrival_needs_more_until_complete_then_matches_whole() {
        let buf = with_header("Origin", "Origin: https://example.com");
        for end in 0..buf.len() {
            assert_eq!(parse(&buf[..end]), Ok(Progress::NeedMore), "prefix {end}");
        }
        assert_eq!(parse(&buf), parse(&buf.clone()));
        let (request, head_len) = parse_done(&buf);
        assert_eq!(head_len, buf.len());
        assert_eq!(request.origin(), Some(&b"https://example.com"[..]));
    }

    #[test]
    fn bytes_after_the_head_are_not_consumed() {
        let mut buf = with_header("Origin", "");
        let head_len = buf.len();
        buf.extend_from_slice(&[0x81, 0x85, 1, 2, 3, 4, b'h']);
        let (_, consumed) = parse_done(&buf);
        assert_eq!(consumed, head_len);
    }

    #[test]
    fn header_names_and_tokens_are_case_insensitive() {
        let headers = [
            "hOST: example.com",
            "upgrade: WebSocket",
            "CONNECTION: keep-alive,UPGRADE",
            &format!("sec-websocket-key: {KEY}"),
            "SEC-WEBSOCKET-VERSION: 13",
            "ORIGIN: https://a",
        ]
        .map(str::to_owned);
        let buf = head("GET / HTTP/1.1", &headers);
        let (request, _) = parse_done(&buf);
        assert_eq!(request.header("origin"), Some(&b"https://a"[..]));
        assert_eq!(request.origin(), Some(&b"https://a"[..]));
    }

    #[test]
    fn repeated_headers_are_all_visible_in_order() {
        let mut headers = valid_headers();
        headers.push("X-Tag: one".to_owned());
        headers.push("x-tag: two".to_owned());
        let buf = head("GET / HTTP/1.1", &headers);
        let (request, _) = parse_done(&buf);
        let tags: Vec<&[u8]> = request.header_all("X-TAG").collect();
        assert_eq!(tags, [&b"one"[..], b"two"]);
        assert_eq!(request.header("x-tag"), Some(&b"one"[..]));
    }

    #[test]
    fn connection_token_list_tolerates_whitespace_and_other_tokens() {
        let buf = with_header("Connection", "Connection:  keep-alive ,\tUpgrade  ");
        parse_done(&buf);
        let mut headers = valid_headers();
        headers.retain(|h| !h.starts_with("Connection"));
        headers.push("Connection: keep-alive".to_owned());
        headers.push("Connection: upgrade".to_owned());
        parse_done(&head("GET / HTTP/1.1", &headers));
    }

    #[test]
    fn method_other_than_get_gets_405_with_allow_get() {
        let buf = head("POST /chat HTTP/1.1", &valid_headers());
        let error = parse_err(&buf);
        assert_eq!(error, RequestError::MethodNotAllowed);
        assert_eq!(error.status(), 405);
        let response = response_of(&error);
        assert!(response.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(response.contains("\r\nAllow: GET\r\n"));
    }

    #[test]
    fn http_1_0_request_gets_400() {
        let error = parse_err(&head("GET /chat HTTP/1.0", &valid_headers()));
        assert_eq!(error, RequestError::Http10);
        assert_eq!(error.status(), 400);
    }

    #[test]
    fn garbage_gets_400_malformed() {
        let error = parse_err(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03");
        assert!(matches!(error, RequestError::Malformed(_)), "{error:?}");
        assert_eq!(error.status(), 400);
        let error = parse_err(b"GET /chat HTTP/2.0\r\n\r\n");
        assert!(matches!(error, RequestError::Malformed(_)), "{error:?}");
    }

    #[test]
    fn missing_host_gets_400() {
        let error = parse_err(&with_header("Host", ""));
        assert_eq!(error, RequestError::MissingHost);
        assert_eq!(error.status(), 400);
    }

    #[test]
    fn repeated_host_gets_400() {
        let mut headers = valid_headers();
        headers.push("Host: other.example".to_owned());
        let error = parse_err(&head("GET / HTTP/1.1", &headers));
        assert_eq!(error, RequestError::DuplicateHeader("Host"));
        assert_eq!(error.status(), 400);
    }

    #[test]
    fn empty_or_non_utf8_host_gets_400() {
        assert_eq!(
            parse_err(&with_header("Host", "Host: ")),
            RequestError::InvalidHost
        );
        let mut buf = with_header("Host", "Host: caf\u{e9}");
        // Replace the two UTF-8 bytes of é by a lone Latin-1 byte.
        let at = buf
            .windows(2)
            .position(|w| w == "\u{e9}".as_bytes())
            .unwrap();
        buf.splice(at..at + 2, [0xe9]);
        assert_eq!(parse_err(&buf), RequestError::InvalidHost);
    }

    #[test]
    fn upgrade_without_websocket_token_gets_400() {
        for line in ["", "Upgrade: h2c", "Upgrade: websockets"] {
            let error = parse_err(&with_header("Upgrade", line));
            assert_eq!(error, RequestError::NotWebSocketUpgrade, "{line:?}");
            assert_eq!(error.status(), 400);
        }
        parse_done(&with_header("Upgrade", "Upgrade: h2c, WEBSOCKET"));
    }

    #[test]
    fn connection_without_upgrade_token_gets_400() {
        for line in ["", "Connection: keep-alive", "Connection: upgraded"] {
            let error = parse_err(&with_header("Connection", line));
            assert_eq!(error, RequestError::NotConnectionUpgrade, "{line:?}");
            assert_eq!(error.status(), 400);
        }
    }

    #[test]
    fn version_other_than_13_gets_426_with_supported_version() {
        for line in ["Sec-WebSocket-Version: 8", "Sec-WebSocket-Version: 13, 8"] {
            let error = parse_err(&with_header("Sec-WebSocket-Version", line));
            assert_eq!(error, RequestError::UnsupportedVersion, "{line:?}");
            assert_eq!(error.status(), 426);
            let response = response_of(&error);
            assert!(response.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
            assert!(response.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        }
    }

    #[test]
    fn missing_version_gets_426_with_supported_version() {
        let error = parse_err(&with_header("Sec-WebSocket-Version", ""));
        assert_eq!(error, RequestError::MissingVersion);
        assert!(response_of(&error).contains("\r\nSec-WebSocket-Version: 13\r\n"));
    }

    #[test]
    fn repeated_version_gets_400() {
        let mut headers = valid_headers();
        headers.push("Sec-WebSocket-Version: 13".to_owned());
        let error = parse_err(&head("GET / HTTP/1.1", &headers));
        assert_eq!(
            error,
            RequestError::DuplicateHeader("Sec-WebSocket-Version")
        );
        assert_eq!(error.status(), 400);
    }

    #[test]
    fn missing_key_gets_400() {
        let error = parse_err(&with_header("Sec-WebSocket-Key", ""));
        assert_eq!(error, RequestError::MissingKey);
        assert_eq!(error.status(), 400);
    }

    #[test]
    fn key_not_base64_of_16_bytes_gets_400() {
        for key in [
            "",
            "abc",
            "dGhlIHNhbXBsZSBub25jZQ",
            "AAAAAAAAAAAAAAAAAAAAAAAA",
            "dGhlIHNhbXBsZSBub25jZQ=="[..23].as_ref(),
        ] {
            let error = parse_err(&with_header(
                "Sec-WebSocket-Key",
                &format!("Sec-WebSocket-Key: {key}"),
            ));
            assert_eq!(error, RequestError::InvalidKey, "{key:?}");
            assert_eq!(error.status(), 400);
        }
    }

    #[test]
    fn repeated_key_gets_400() {
        let mut headers = valid_headers();
        headers.push(format!("Sec-WebSocket-Key: {KEY}"));
        let error = parse_err(&head("GET / HTTP/1.1", &headers));
        assert_eq!(error, RequestError::DuplicateHeader("Sec-WebSocket-Key"));
    }

    #[test]
    fn head_over_the_byte_limit_gets_431_even_before_it_ends() {
        let limits = HeadLimits {
            max_head_bytes: 256,
            ..HeadLimits::default()
        };
        let big = with_header("X-Pad", &format!("X-Pad: {}", "a".repeat(300)));
        let error = parse_request(&big, &limits).unwrap_err();
        assert_eq!(error, RequestError::HeadTooLarge { max: 256 });
        assert_eq!(error.status(), 431);
        // A partial head that already fills the limit is refused at once.
        assert_eq!(
            parse_request(&big[..256], &limits),
            Err(RequestError::HeadTooLarge { max: 256 })
        );
        assert_eq!(parse_request(&big[..255], &limits), Ok(Progress::NeedMore));
        assert!(
            response_of(&error).starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n")
        );
    }

    #[test]
    fn head_exactly_at_the_byte_limit_is_accepted_with_trailing_bytes() {
        let buf = with_header("Origin", "");
        let limits = HeadLimits {
            max_head_bytes: buf.len(),
            ..HeadLimits::default()
        };
        let mut with_frame = buf.clone();
        with_frame.extend_from_slice(b"\x81\x80abcd");
        match parse_request(&with_frame, &limits) {
            Ok(Progress::Done { head_len, .. }) => assert_eq!(head_len, buf.len()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn more_headers_than_the_count_limit_get_431() {
        let mut headers = valid_headers();
        for i in 0..60 {
            headers.push(format!("X-H{i}: v"));
        }
        let buf = head("GET / HTTP/1.1", &headers);
        let error = parse_err(&buf);
        assert_eq!(error, RequestError::TooManyHeaders { max: 64 });
        assert_eq!(error.status(), 431);
        // A larger limit than the stack array accepts it.
        let limits = HeadLimits {
            max_headers: 100,
            ..HeadLimits::default()
        };
        assert!(matches!(
            parse_request(&buf, &limits),
            Ok(Progress::Done { .. })
        ));
    }

    #[test]
    fn error_response_has_length_and_close() {
        let response = response_of(&RequestError::MissingKey);
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(head.contains(&format!("\r\nContent-Length: {}", body.len())));
        assert!(head.contains("\r\nConnection: close"));
        assert!(head.contains("\r\nContent-Type: text/plain; charset=utf-8"));
        assert!(!body.is_empty());
    }

    #[test]
    fn subprotocol_is_the_first_of_the_servers_list_the_client_offered() {
        let mut headers = valid_headers();
        headers.push("Sec-WebSocket-Protocol: chat, json".to_owned());
        headers.push("sec-websocket-protocol: shardcast.v1".to_owned());
        let buf = head("GET / HTTP/1.1", &headers);
        let (request, _) = parse_done(&buf);
        let offered: Vec<&str> = request.subprotocols().collect();
        assert_eq!(offered, ["chat", "json", "shardcast.v1"]);
        let accept = request.accept(&["mqtt", "shardcast.v1", "chat"], &DeflateConfig::default());
        assert_eq!(accept.negotiated().subprotocol, Some("shardcast.v1"));
    }

    #[test]
    fn no_common_subprotocol_means_raw_mode_not_an_error() {
        let buf = with_header("Sec-WebSocket-Protocol", "Sec-WebSocket-Protocol: chat");
        let (request, _) = parse_done(&buf);
        let accept = request.accept(&["shardcast.v1"], &DeflateConfig::default());
        assert_eq!(
            accept.negotiated(),
            Negotiated {
                subprotocol: None,
                deflate: None
            }
        );
        let mut out = Vec::new();
        accept.write_response(&[], &mut out).unwrap();
        assert!(
            !String::from_utf8(out)
                .unwrap()
                .contains("Sec-WebSocket-Protocol")
        );
    }

    #[test]
    fn accept_response_carries_accept_key_protocol_extension_and_extras() {
        let mut headers = valid_headers();
        headers.push("Sec-WebSocket-Protocol: shardcast.v1".to_owned());
        headers.push(
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits".to_owned(),
        );
        let buf = head("GET / HTTP/1.1", &headers);
        let (request, _) = parse_done(&buf);
        let accept = request.accept(&["shardcast.v1"], &DeflateConfig::default());
        let mut out = Vec::new();
        accept
            .write_response(&[("Set-Cookie", "sid=1; HttpOnly")], &mut out)
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
             Sec-WebSocket-Protocol: shardcast.v1\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n\
             Set-Cookie: sid=1; HttpOnly\r\n\
             \r\n"
        );
    }

    #[test]
    fn accept_response_refuses_extra_headers_it_sets_itself() {
        let buf = with_header("Origin", "");
        let (request, _) = parse_done(&buf);
        let accept = request.accept(&[], &DeflateConfig::default());
        let mut out = Vec::new();
        assert_eq!(
            accept.write_response(&[("sec-websocket-accept", "x")], &mut out),
            Err(crate::handshake::ApiMisuse::ReservedHeader { index: 0 })
        );
        assert!(out.is_empty());
    }

    #[test]
    fn disabled_deflate_ignores_offers() {
        let buf = with_header(
            "Sec-WebSocket-Extensions",
            "Sec-WebSocket-Extensions: permessage-deflate",
        );
        let (request, _) = parse_done(&buf);
        let config = DeflateConfig { enabled: false };
        assert_eq!(request.accept(&[], &config).negotiated().deflate, None);
        assert!(
            request
                .accept(&[], &DeflateConfig::default())
                .negotiated()
                .deflate
                .is_some()
        );
    }

    #[test]
    fn offered_extensions_are_visible_across_header_lines() {
        let mut headers = valid_headers();
        headers.push(
            "Sec-WebSocket-Extensions: x-foo, permessage-deflate; client_max_window_bits"
                .to_owned(),
        );
        headers.push("Sec-WebSocket-Extensions: permessage-deflate".to_owned());
        let buf = head("GET / HTTP/1.1", &headers);
        let (request, _) = parse_done(&buf);
        let names: Vec<&str> = request.extensions().map(|e| e.unwrap().name()).collect();
        assert_eq!(names, ["x-foo", "permessage-deflate", "permessage-deflate"]);
    }
}
