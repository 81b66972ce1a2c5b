//! The server side: parsing and validating a client's upgrade request.

use crate::deflate::{DeflateConfig, accept_offers};

use super::error::RequestError;
use super::extension::{Extension, ExtensionSyntaxError, parse_extensions};
use super::http::{
    Header, HeadLimits, Progress, Single, collect_headers, has_token, list_elements, single,
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
