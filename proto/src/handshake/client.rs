//! The client side: writing the upgrade request and validating the
//! server's response.

use crate::deflate::{CLIENT_OFFER, validate_response};

use super::Negotiated;
use super::error::{ApiMisuse, ResponseError};
use super::extension::parse_extensions;
use super::http::{
    HeadLimits, Progress, Single, check_extra_headers, collect_headers, has_token, is_token,
    list_elements, single, values, with_header_storage, write_extra_headers, write_header,
};
use super::key::ClientKey;

/// Headers the request sets itself, refused as extra headers.
const REQUEST_RESERVED: [&str; 9] = [
    "Host",
    "Upgrade",
    "Connection",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Extensions",
    "Content-Length",
    "Transfer-Encoding",
];

/// A client's side of one handshake: what it asks for, and the check of
/// what the server answered.
///
/// Build it with [`ClientHandshake::new`], adjust the public fields, call
/// [`write_request`](Self::write_request), send the bytes, then feed what
/// comes back to [`parse_response`](Self::parse_response).
#[derive(Clone, Debug)]
pub struct ClientHandshake<'a> {
    /// The `Host` header: host name or address, with `:port` if not the
    /// scheme's default.
    pub host: &'a str,
    /// The request target: path and query, starting with `/`.
    pub target: &'a str,
    /// This connection's key, from [`generate_key`](super::generate_key).
    pub key: ClientKey,
    /// Subprotocols to offer, in order of preference (such as
    /// `shardcast.v1`); empty to offer none.
    pub subprotocols: &'a [&'a str],
    /// Whether to offer permessage-deflate. Default: true.
    pub offer_deflate: bool,
    /// More request headers, such as `Origin` or `Authorization`.
    pub extra_headers: &'a [(&'a str, &'a str)],
    /// Limits on the response head. Default: [`HeadLimits::default`].
    pub limits: HeadLimits,
}

impl<'a> ClientHandshake<'a> {
    /// A handshake for `host` and `target` with `key`, offering
    /// permessage-deflate and no subprotocol.
    pub fn new(host: &'a str, target: &'a str, key: ClientKey) -> Self {
        ClientHandshake {
            host,
            target,
            key,
            subprotocols: &[],
            offer_deflate: true,
            extra_headers: &[],
            limits: HeadLimits::default(),
        }
    }

    /// Appends the upgrade request to `out`.
    ///
    /// Fails, writing nothing, if the host, target, a subprotocol or an
    /// extra header cannot be sent as is.
    pub fn write_request(&self, out: &mut Vec<u8>) -> Result<(), ApiMisuse> {
        let visible = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
        if !visible(self.host) {
            return Err(ApiMisuse::InvalidHost);
        }
        if !visible(self.target) || !self.target.starts_with('/') {
            return Err(ApiMisuse::InvalidTarget);
        }
        if let Some(index) = self.subprotocols.iter().position(|p| !is_token(p)) {
            return Err(ApiMisuse::InvalidSubprotocol { index });
        }
        check_extra_headers(self.extra_headers, &REQUEST_RESERVED)?;

        out.extend_from_slice(b"GET ");
        out.extend_from_slice(self.target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        write_header(out, "Host", self.host.as_bytes());
        out.extend_from_slice(b"Upgrade: websocket\r\nConnection: Upgrade\r\n");
        write_header(out, "Sec-WebSocket-Key", self.key.as_str().as_bytes());
        out.extend_from_slice(b"Sec-WebSocket-Version: 13\r\n");
        if let Some((first, rest)) = self.subprotocols.split_first() {
            out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
            out.extend_from_slice(first.as_bytes());
            for protocol in rest {
                out.extend_from_slice(b", ");
                out.extend_from_slice(protocol.as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
        if self.offer_deflate {
            write_header(out, "Sec-WebSocket-Extensions", CLIENT_OFFER.as_bytes());
        }
        write_extra_headers(out, self.extra_headers);
        out.extend_from_slice(b"\r\n");
        Ok(())
    }

    /// Parses and validates the server's response from the bytes received
    /// so far.
    ///
    /// Call it with everything received, each time more arrives, until it
    /// returns [`Progress::Done`]; `head_len` then says where the WebSocket
    /// stream begins (a server may send frames in the same read as its
    /// 101).
    ///
    /// # Errors
    ///
    /// A [`ResponseError`]; the connection must then be dropped
    /// (RFC 6455 §4.1).
    pub fn parse_response(&self, buf: &[u8]) -> Result<Progress<Negotiated<'a>>, ResponseError> {
        let window = buf.get(..self.limits.max_head_bytes).unwrap_or(buf);
        with_header_storage(self.limits.max_headers, |storage| {
            let mut response = httparse::Response::new(storage);
            let head_len = match response.parse(window) {
                Ok(httparse::Status::Complete(head_len)) => head_len,
                Ok(httparse::Status::Partial) if window.len() >= self.limits.max_head_bytes => {
                    return Err(ResponseError::HeadTooLarge {
                        max: self.limits.max_head_bytes,
                    });
                }
                Ok(httparse::Status::Partial) => return Ok(Progress::NeedMore),
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(ResponseError::TooManyHeaders {
                        max: self.limits.max_headers,
                    });
                }
                Err(error) => return Err(ResponseError::Malformed(error)),
            };
            if response.version != Some(1) {
                return Err(ResponseError::Http10);
            }
            let status = response.code.unwrap_or_default();
            if status != 101 {
                return Err(ResponseError::UnexpectedStatus(status));
            }
            let negotiated = self.validate(response.headers)?;
            Ok(Progress::Done {
                value: negotiated,
                head_len,
            })
        })
    }

    /// Applies RFC 6455 §4.1 (the client's checks) to a 101 response.
    fn validate(&self, headers: &[httparse::Header<'_>]) -> Result<Negotiated<'a>, ResponseError> {
        let headers = collect_headers(headers);
        if !has_token(values(&headers, "Upgrade"), "websocket") {
            return Err(ResponseError::NotWebSocketUpgrade);
        }
        if !has_token(values(&headers, "Connection"), "upgrade") {
            return Err(ResponseError::NotConnectionUpgrade);
        }
        match single(&headers, "Sec-WebSocket-Accept") {
            Single::Missing => return Err(ResponseError::MissingAccept),
            Single::Repeated => return Err(ResponseError::DuplicateHeader("Sec-WebSocket-Accept")),
            Single::One(accept) if accept == self.key.expected_accept().as_bytes() => {}
            Single::One(_) => return Err(ResponseError::AcceptMismatch),
        }
        let mut chosen = list_elements(values(&headers, "Sec-WebSocket-Protocol"));
        let subprotocol = match (chosen.next(), chosen.next()) {
            (None, _) => None,
            (Some(_), Some(_)) => return Err(ResponseError::MultipleSubprotocols),
            (Some(protocol), None) => Some(
                self.subprotocols
                    .iter()
                    .copied()
                    .find(|ours| ours.as_bytes() == protocol)
                    .ok_or(ResponseError::UnofferedSubprotocol)?,
            ),
        };
        let extensions = parse_extensions(values(&headers, "Sec-WebSocket-Extensions"));
        let deflate = validate_response(self.offer_deflate, extensions)?;
        Ok(Negotiated {
            subprotocol,
            deflate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deflate::DeflateParams;
    use crate::handshake::generate_key;

    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
    const PROTOCOLS: &[&str] = &["shardcast.v1", "chat"];

    fn handshake() -> ClientHandshake<'static> {
        let mut handshake = ClientHandshake::new(
            "example.com:8080",
            "/ws?x=1",
            generate_key(*b"the sample nonce"),
        );
        handshake.subprotocols = PROTOCOLS;
        handshake
    }

    /// A 101 response with the header starting with `name` replaced by
    /// `line` (removed if empty, added if absent).
    fn response_with(name: &str, line: &str) -> Vec<u8> {
        let mut lines = vec![
            "HTTP/1.1 101 Switching Protocols".to_owned(),
            "Upgrade: websocket".to_owned(),
            "Connection: Upgrade".to_owned(),
            format!("Sec-WebSocket-Accept: {ACCEPT}"),
        ];
        lines.retain(|l| !l.starts_with(name));
        if !line.is_empty() {
            lines.push(line.to_owned());
        }
        let mut out = lines.join("\r\n");
        out.push_str("\r\n\r\n");
        out.into_bytes()
    }

    fn done(
        result: Result<Progress<Negotiated<'static>>, ResponseError>,
    ) -> (Negotiated<'static>, usize) {
        match result {
            Ok(Progress::Done { value, head_len }) => (value, head_len),
            other => panic!("expected a completed handshake, got {other:?}"),
        }
    }

    #[test]
    fn request_carries_key_version_protocols_deflate_offer_and_extras() {
        let mut handshake = handshake();
        handshake.extra_headers = &[("Origin", "https://example.com")];
        let mut out = Vec::new();
        handshake.write_request(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /ws?x=1 HTTP/1.1\r\n\
             Host: example.com:8080\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: shardcast.v1, chat\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; server_no_context_takeover\r\n\
             Origin: https://example.com\r\n\
             \r\n"
        );
    }

    #[test]
    fn request_without_protocols_or_deflate_omits_their_headers() {
        let mut handshake = handshake();
        handshake.subprotocols = &[];
        handshake.offer_deflate = false;
        let mut out = Vec::new();
        handshake.write_request(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("Sec-WebSocket-Protocol"));
        assert!(!text.contains("Sec-WebSocket-Extensions"));
    }

    #[test]
    fn request_with_unsendable_arguments_writes_nothing() {
        let mut out = Vec::new();
        let mut bad = handshake();
        bad.host = "a b";
        assert_eq!(bad.write_request(&mut out), Err(ApiMisuse::InvalidHost));
        let mut bad = handshake();
        bad.target = "ws";
        assert_eq!(bad.write_request(&mut out), Err(ApiMisuse::InvalidTarget));
        let mut bad = handshake();
        bad.target = "/a\r\nX: y";
        assert_eq!(bad.write_request(&mut out), Err(ApiMisuse::InvalidTarget));
        let mut bad = handshake();
        bad.subprotocols = &["ok", "not ok"];
        assert_eq!(
            bad.write_request(&mut out),
            Err(ApiMisuse::InvalidSubprotocol { index: 1 })
        );
        let mut bad = handshake();
        bad.extra_headers = &[("Sec-WebSocket-Key", "x")];
        assert_eq!(
            bad.write_request(&mut out),
            Err(ApiMisuse::ReservedHeader { index: 0 })
        );
        assert!(out.is_empty());
    }

    #[test]
    fn valid_response_completes_without_protocol_or_compression() {
        let buf = response_with("X", "");
        let (negotiated, head_len) = done(handshake().parse_response(&buf));
        assert_eq!(head_len, buf.len());
        assert_eq!(negotiated.subprotocol, None);
        assert_eq!(negotiated.deflate, None);
    }

    #[test]
    fn response_arriving_byte_by_byte_needs_more_until_complete() {
        let buf = response_with("Sec-WebSocket-Protocol", "Sec-WebSocket-Protocol: chat");
        let handshake = handshake();
        for end in 0..buf.len() {
            assert_eq!(
                handshake.parse_response(&buf[..end]),
                Ok(Progress::NeedMore),
                "{end}"
            );
        }
        let (negotiated, _) = done(handshake.parse_response(&buf));
        assert_eq!(negotiated.subprotocol, Some("chat"));
    }

    #[test]
    fn frames_after_the_101_are_not_consumed() {
        let mut buf = response_with("X", "");
        let head_len = buf.len();
        buf.extend_from_slice(b"\x81\x05hello");
        let (_, consumed) = done(handshake().parse_response(&buf));
        assert_eq!(consumed, head_len);
    }

    #[test]
    fn status_other_than_101_is_an_error_carrying_the_status() {
        let buf = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            handshake().parse_response(buf),
            Err(ResponseError::UnexpectedStatus(403))
        );
    }

    #[test]
    fn http_1_0_response_is_an_error() {
        let mut buf = response_with("X", "");
        buf[7] = b'0';
        assert_eq!(handshake().parse_response(&buf), Err(ResponseError::Http10));
    }

    #[test]
    fn response_without_upgrade_websocket_is_an_error() {
        assert_eq!(
            handshake().parse_response(&response_with("Upgrade", "Upgrade: h2c")),
            Err(ResponseError::NotWebSocketUpgrade)
        );
    }

    #[test]
    fn response_without_connection_upgrade_is_an_error() {
        assert_eq!(
            handshake().parse_response(&response_with("Connection", "")),
            Err(ResponseError::NotConnectionUpgrade)
        );
    }

    #[test]
    fn response_accept_key_must_match_ours() {
        assert_eq!(
            handshake().parse_response(&response_with("Sec-WebSocket-Accept", "")),
            Err(ResponseError::MissingAccept)
        );
        assert_eq!(
            handshake().parse_response(&response_with(
                "Sec-WebSocket-Accept",
                "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA="
            )),
            Err(ResponseError::AcceptMismatch)
        );
        assert_eq!(
            handshake().parse_response(&response_with(
                "X",
                &format!("sec-websocket-accept: {ACCEPT}")
            )),
            Err(ResponseError::DuplicateHeader("Sec-WebSocket-Accept"))
        );
    }

    #[test]
    fn response_subprotocol_must_be_one_we_offered() {
        assert_eq!(
            handshake().parse_response(&response_with("X", "Sec-WebSocket-Protocol: mqtt")),
            Err(ResponseError::UnofferedSubprotocol)
        );
        let mut none_offered = handshake();
        none_offered.subprotocols = &[];
        assert_eq!(
            none_offered.parse_response(&response_with("X", "Sec-WebSocket-Protocol: chat")),
            Err(ResponseError::UnofferedSubprotocol)
        );
        assert_eq!(
            handshake().parse_response(&response_with(
                "X",
                "Sec-WebSocket-Protocol: chat, shardcast.v1"
            )),
            Err(ResponseError::MultipleSubprotocols)
        );
    }

    #[test]
    fn response_extensions_must_be_ones_we_offered() {
        assert_eq!(
            handshake().parse_response(&response_with("X", "Sec-WebSocket-Extensions: x-foo")),
            Err(ResponseError::Extension(
                crate::deflate::DeflateResponseError::UnofferedExtension
            ))
        );
        let mut no_deflate = handshake();
        no_deflate.offer_deflate = false;
        assert_eq!(
            no_deflate.parse_response(&response_with(
                "X",
                "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover"
            )),
            Err(ResponseError::Extension(
                crate::deflate::DeflateResponseError::UnofferedExtension
            ))
        );
    }

    #[test]
    fn response_deflate_with_small_client_window_fails_clearly() {
        let result = handshake().parse_response(&response_with(
            "X",
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_max_window_bits=9",
        ));
        let error = result.unwrap_err();
        assert_eq!(
            error,
            ResponseError::Extension(crate::deflate::DeflateResponseError::ClientWindowTooSmall(
                9
            ))
        );
        assert!(error.to_string().contains("9 bits"), "{error}");
    }

    #[test]
    fn response_deflate_acceptance_gives_codec_parameters() {
        let buf = response_with(
            "X",
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        );
        let (negotiated, _) = done(handshake().parse_response(&buf));
        assert_eq!(
            negotiated.deflate,
            Some(DeflateParams {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                server_max_window_bits: 15,
                client_max_window_bits: 15,
            })
        );
    }

    #[test]
    fn response_head_limits_apply() {
        let mut small = handshake();
        small.limits.max_head_bytes = 64;
        assert_eq!(
            small.parse_response(&response_with("X", "")),
            Err(ResponseError::HeadTooLarge { max: 64 })
        );
        let mut few = handshake();
        few.limits.max_headers = 2;
        assert_eq!(
            few.parse_response(&response_with("X", "")),
            Err(ResponseError::TooManyHeaders { max: 2 })
        );
        assert!(matches!(
            handshake().parse_response(b"HTTP/1.1 abc\r\n\r\n"),
            Err(ResponseError::Malformed(_))
        ));
    }
}
