//! Writing the server's answer: the 101 that accepts an upgrade, or an HTTP
//! error response that refuses it.

use std::io::Write;

use crate::deflate::DeflateAcceptance;

use super::Negotiated;
use super::error::ApiMisuse;
use super::http::{check_extra_headers, write_extra_headers, write_header};
use super::key::AcceptKey;

/// Headers the 101 response sets itself, refused as extra headers.
const ACCEPT_RESERVED: [&str; 7] = [
    "Upgrade",
    "Connection",
    "Sec-WebSocket-Accept",
    "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Extensions",
    "Content-Length",
    "Transfer-Encoding",
];

/// Headers a rejection sets itself, refused as extra headers.
const REJECT_RESERVED: [&str; 3] = ["Content-Length", "Connection", "Transfer-Encoding"];

/// A server's decision to accept an upgrade request, with what was
/// negotiated; made by [`UpgradeRequest::accept`](super::UpgradeRequest::accept).
///
/// Owns everything it needs (the accept key is computed, the subprotocol
/// borrows from the server's own list), so the request buffer may be reused
/// before the response is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accept<'p> {
    pub(crate) key: AcceptKey,
    pub(crate) subprotocol: Option<&'p str>,
    pub(crate) deflate: Option<DeflateAcceptance>,
}

impl<'p> Accept<'p> {
    /// What the connection runs with once the 101 is sent: the chosen
    /// subprotocol (`None` means raw mode) and the permessage-deflate
    /// parameters for the codec (`None` means no compression).
    pub fn negotiated(&self) -> Negotiated<'p> {
        Negotiated {
            subprotocol: self.subprotocol,
            deflate: self.deflate.map(|d| d.params),
        }
    }

    /// The `Sec-WebSocket-Accept` value the response carries.
    pub fn accept_key(&self) -> &AcceptKey {
        &self.key
    }

    /// Appends the `101 Switching Protocols` response to `out`: `Upgrade`,
    /// `Connection`, `Sec-WebSocket-Accept`, the chosen subprotocol and
    /// extension if any, then `extra_headers` (such as `Set-Cookie`).
    ///
    /// Fails, writing nothing, if an extra header is malformed or is one of
    /// the headers this response sets itself.
    pub fn write_response(
        &self,
        extra_headers: &[(&str, &str)],
        out: &mut Vec<u8>,
    ) -> Result<(), ApiMisuse> {
        check_extra_headers(extra_headers, &ACCEPT_RESERVED)?;
        out.extend_from_slice(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
        );
        write_header(out, "Sec-WebSocket-Accept", self.key.as_bytes());
        if let Some(protocol) = self.subprotocol {
            write_header(out, "Sec-WebSocket-Protocol", protocol.as_bytes());
        }
        if let Some(deflate) = &self.deflate {
            out.extend_from_slice(b"Sec-WebSocket-Extensions: ");
            deflate.write_response_value(out);
            out.extend_from_slice(b"\r\n");
        }
        write_extra_headers(out, extra_headers);
        out.extend_from_slice(b"\r\n");
        Ok(())
    }
}

/// Appends a complete response that refuses the upgrade with any status:
/// 401 or 403 after an auth or origin check, 503 when the server is full,
/// a 3xx redirect to another node.
///
/// Writes the status line with `reason`, `extra_headers` (such as
/// `WWW-Authenticate`, `Retry-After`, `Content-Type`), `Content-Length`,
/// `Connection: close` and `body`. The caller writes it and closes the
/// connection.
///
/// Fails, writing nothing, if `status` is not 200-599, `reason` has control
/// characters, or an extra header is malformed or is `Content-Length`,
/// `Connection` or `Transfer-Encoding`.
pub fn write_rejection(
    status: u16,
    reason: &str,
    extra_headers: &[(&str, &str)],
    body: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), ApiMisuse> {
    if !(200..=599).contains(&status) {
        return Err(ApiMisuse::InvalidStatus(status));
    }
    if reason
        .bytes()
        .any(|b| b != b'\t' && !(b' '..=b'~').contains(&b))
    {
        return Err(ApiMisuse::InvalidReason);
    }
    check_extra_headers(extra_headers, &REJECT_RESERVED)?;
    write_plain_response(out, status, reason, body, |out| {
        write_extra_headers(out, extra_headers);
    });
    Ok(())
}

/// Appends a status line, the headers `headers` writes, `Content-Length`,
/// `Connection: close`, and `body`. Arguments are already checked.
pub(crate) fn write_plain_response(
    out: &mut Vec<u8>,
    status: u16,
    reason: &str,
    body: &[u8],
    headers: impl FnOnce(&mut Vec<u8>),
) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "HTTP/1.1 {status} {reason}\r\n");
    headers(out);
    let _ = write!(
        out,
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_carries_status_headers_length_and_body() {
        let mut out = Vec::new();
        write_rejection(
            503,
            "Service Unavailable",
            &[("Retry-After", "5"), ("Content-Type", "text/plain")],
            b"full",
            &mut out,
        )
        .unwrap();
        assert_eq!(
            out,
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Type: text/plain\r\n\
              Content-Length: 4\r\nConnection: close\r\n\r\nfull"
        );
    }

    #[test]
    fn rejection_with_invalid_arguments_writes_nothing() {
        let mut out = Vec::new();
        assert_eq!(
            write_rejection(101, "Switching", &[], b"", &mut out),
            Err(ApiMisuse::InvalidStatus(101))
        );
        assert_eq!(
            write_rejection(600, "x", &[], b"", &mut out),
            Err(ApiMisuse::InvalidStatus(600))
        );
        assert_eq!(
            write_rejection(403, "No\r\nX: y", &[], b"", &mut out),
            Err(ApiMisuse::InvalidReason)
        );
        assert_eq!(
            write_rejection(
                403,
                "Forbidden",
                &[("Connection", "keep-alive")],
                b"",
                &mut out
            ),
            Err(ApiMisuse::ReservedHeader { index: 0 })
        );
        assert!(out.is_empty());
    }
}
