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
    pub fn parse_response(
        &self,
        buf: &[u8],
    ) -> Result<Progress<Negotiated<'a>>, ResponseError> {
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
