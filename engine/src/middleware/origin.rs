//! [`OriginAllowlist`]: refuses browsers on pages of other sites.

use std::net::SocketAddr;

use shardcast_proto::handshake::UpgradeRequest;

use super::{Identity, UpgradeLayer};
use crate::handler::Rejection;

/// Refuses upgrades whose `Origin` is not on a list: the defence against
/// cross-site WebSocket hijacking, where a page of another site opens a
/// socket that the browser sends the user's cookies with.
///
/// An entry is `scheme://host[:port]`, as browsers write the header:
/// scheme and host compare case-insensitively, and a default port (80 for
/// `http` and `ws`, 443 for `https` and `wss`) is the same as none. An
/// entry `scheme://*.example.com` allows every subdomain of `example.com`
/// at any depth, with that scheme and port, but not `example.com` itself
/// (list it too if it should connect).
///
/// Only browsers send `Origin`, and any other client can send whatever it
/// likes, so this keeps other sites' pages out, not other programs.
/// Requests without an `Origin` are allowed by default for that reason;
/// [`allow_missing(false)`](Self::allow_missing) refuses them. The opaque
/// origin `null` (sandboxed frames, `file:` pages) never matches.
///
/// A refusal is `403 Forbidden` with a one-line body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginAllowlist {
    allowed: Vec<Allowed>,
    allow_missing: bool,
}

/// One entry of the list, split once so that a check allocates nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Allowed {
    scheme: Box<str>,
    /// The host, or for a wildcard the domain after `*.`.
    host: Box<str>,
    /// Whether `host` is a domain whose subdomains are allowed.
    wildcard: bool,
    /// The port, `None` for the scheme's default.
    port: Option<u16>,
}

/// Why an entry of an [`OriginAllowlist`] was refused; each carries the
/// entry as given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OriginError {
    /// No `scheme://`, or a scheme with characters a scheme cannot have.
    #[error("origin `{0}` does not start with scheme://")]
    Scheme(String),
    /// An empty host, an empty label, or characters a host cannot have.
    #[error("origin `{0}` has an invalid host")]
    Host(String),
    /// A port that is not a number from 0 to 65535.
    #[error("origin `{0}` has an invalid port")]
    Port(String),
    /// A path, query, fragment or user name after the host: an origin has
    /// none.
    #[error("origin `{0}` has more than scheme://host[:port]")]
    NotAnOrigin(String),
    /// A `*` anywhere but as the whole first label.
    #[error("origin `{0}` has a wildcard that is not `*.` before a domain")]
    Wildcard(String),
}

/// The constructor of the error for an origin that is malformed in a way.
type Malformed = fn(String) -> OriginError;

/// An origin split into its parts, borrowed from the text.
#[derive(Debug, PartialEq, Eq)]
struct Parts<'a> {
    scheme: &'a [u8],
    host: &'a [u8],
    port: Option<u16>,
}

impl OriginAllowlist {
    /// An empty list: requests without `Origin` pass, every origin is
    /// refused until one is [allowed](Self::allow).
    #[must_use]
    pub fn new() -> OriginAllowlist {
        OriginAllowlist {
            allowed: Vec::new(),
            allow_missing: true,
        }
    }

    /// Adds `origin`: `scheme://host[:port]`, or `scheme://*.domain[:port]`
    /// for every subdomain of `domain`.
    ///
    /// # Errors
    /// An [`OriginError`] if `origin` is not of that form.
    pub fn allow(mut self, origin: &str) -> Result<OriginAllowlist, OriginError> {
        let error = |malformed: Malformed| malformed(origin.to_owned());
        let (wildcard, text) = match origin.split_once("://*.") {
            Some((scheme, domain)) => (true, [scheme, "://", domain].concat()),
            None => (false, origin.to_owned()),
        };
        let parts = split(text.as_bytes()).map_err(error)?;
        if parts.host.contains(&b'*') {
            return Err(error(OriginError::Wildcard));
        }
        // ASCII (`split` checked every byte), so nothing is lost.
        let lowercase = |bytes: &[u8]| String::from_utf8_lossy(bytes).to_ascii_lowercase();
        self.allowed.push(Allowed {
            scheme: lowercase(parts.scheme).into(),
            host: lowercase(parts.host).into(),
            wildcard,
            port: parts.port,
        });
        Ok(self)
    }

    /// Whether requests without an `Origin` header (clients other than
    /// browsers) pass; they do by default.
    #[must_use]
    pub fn allow_missing(mut self, allowed: bool) -> OriginAllowlist {
        self.allow_missing = allowed;
        self
    }

    /// Whether `origin`, the header's value, is on the list.
    fn allows(&self, origin: &[u8]) -> bool {
        // A `*` in a request is a character no browser sends, not a wildcard.
        let Ok(parts) = split(origin) else {
            return false;
        };
        !parts.host.contains(&b'*') && self.allowed.iter().any(|allowed| allowed.matches(&parts))
    }
}

impl Default for OriginAllowlist {
    /// The same as [`OriginAllowlist::new`].
    fn default() -> OriginAllowlist {
        OriginAllowlist::new()
    }
}

impl UpgradeLayer for OriginAllowlist {
    fn check(
        &mut self,
        request: &UpgradeRequest<'_>,
        _: SocketAddr,
        _: &mut Identity,
    ) -> Result<(), Rejection> {
        match request.origin() {
            None if self.allow_missing => Ok(()),
            None => Err(Rejection::new(403, "Forbidden").with_body(&b"Origin required"[..])),
            Some(origin) if self.allows(origin) => Ok(()),
            Some(_) => Err(Rejection::new(403, "Forbidden").with_body(&b"origin not allowed"[..])),
        }
    }
}

impl Allowed {
    fn matches(&self, origin: &Parts<'_>) -> bool {
        if !origin.scheme.eq_ignore_ascii_case(self.scheme.as_bytes()) || origin.port != self.port {
            return false;
        }
        let domain = self.host.as_bytes();
        if !self.wildcard {
            return origin.host.eq_ignore_ascii_case(domain);
        }
        // At least one label, then a dot, then the domain.
        origin.host.len() > domain.len() + 1 && {
            let (subdomain, rest) = origin.host.split_at(origin.host.len() - domain.len());
            subdomain.ends_with(b".") && rest.eq_ignore_ascii_case(domain)
        }
    }
}

/// Splits `scheme://host[:port]`, dropping a default port; brackets stay
/// on an IPv6 host. A `*` passes as a host character (for the caller to
/// judge).
fn split(origin: &[u8]) -> Result<Parts<'_>, Malformed> {
    let separator = origin
        .windows(3)
        .position(|window| window == b"://")
        .ok_or(OriginError::Scheme as Malformed)?;
    let (scheme, authority) = (&origin[..separator], &origin[separator + 3..]);
    let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok {
        return Err(OriginError::Scheme);
    }
    if authority
        .iter()
        .any(|&b| matches!(b, b'/' | b'?' | b'#' | b'@') || !b.is_ascii_graphic())
    {
        return Err(OriginError::NotAnOrigin);
    }
    let (host, port) = match authority.iter().rposition(|&b| b == b':') {
        Some(colon) if !authority.starts_with(b"[") || authority[..colon].ends_with(b"]") => {
            (&authority[..colon], Some(&authority[colon + 1..]))
        }
        _ => (authority, None),
    };
    let host_ok = if let Some(inner) = host.strip_prefix(b"[") {
        inner.strip_suffix(b"]").is_some_and(|address| {
            !address.is_empty()
                && address
                    .iter()
                    .all(|&b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        })
    } else {
        host.split(|&b| b == b'.').all(|label| {
            !label.is_empty()
                && label
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'*'))
        })
    };
    if !host_ok {
        return Err(OriginError::Host);
    }
    let port = match port {
        None => None,
        Some(digits) => Some(parse_port(digits).ok_or(OriginError::Port as Malformed)?),
    };
    let is = |name: &[u8]| scheme.eq_ignore_ascii_case(name);
    let default_port = if is(b"http") || is(b"ws") {
        Some(80)
    } else if is(b"https") || is(b"wss") {
        Some(443)
    } else {
        None
    };
    Ok(Parts {
        scheme,
        host,
        port: port.filter(|&port| Some(port) != default_port),
    })
}

/// A port of 1 to 5 decimal digits, at most 65535.
fn parse_port(digits: &[u8]) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::test_request::{PEER, parse, request};

    fn list(origins: &[&str]) -> OriginAllowlist {
        origins
            .iter()
            .try_fold(OriginAllowlist::new(), |list, origin| list.allow(origin))
            .unwrap()
    }

    /// The outcome of `list` checking a real request with `header` lines.
    fn check(list: &mut OriginAllowlist, header: &[&str]) -> Result<(), Rejection> {
        let buf = request(header);
        list.check(&parse(&buf), PEER, &mut Identity::default())
    }

    fn passes(list: &mut OriginAllowlist, origin: &str) -> bool {
        check(list, &[&format!("Origin: {origin}")]).is_ok()
    }

    #[test]
    fn exact_origins_pass_and_others_get_403_with_a_body() {
        let mut list = list(&["https://example.com", "http://localhost:3000"]);
        assert!(passes(&mut list, "https://example.com"));
        assert!(passes(&mut list, "http://localhost:3000"));
        let refusal = check(&mut list, &["Origin: https://evil.test"]).unwrap_err();
        assert_eq!(refusal.status(), 403);
        assert_eq!(refusal.reason(), "Forbidden");
        assert_eq!(refusal.body(), b"origin not allowed");
        assert!(!passes(&mut list, "http://example.com"), "another scheme");
        assert!(!passes(&mut list, "http://localhost:3001"), "another port");
        assert!(!passes(&mut list, "http://localhost"), "no port");
        assert!(!passes(&mut list, "https://example.com.evil.test"));
        assert!(!passes(&mut list, "https://www.example.com"));
    }

    #[test]
    fn scheme_and_host_compare_case_insensitively_both_ways() {
        let mut list = list(&["HTTPS://Example.COM"]);
        assert!(passes(&mut list, "https://example.com"));
        assert!(passes(&mut list, "hTTps://EXAMPLE.com"));
    }

    #[test]
    fn a_default_port_is_the_same_as_none() {
        let mut list = list(&["https://example.com:443", "http://plain.test"]);
        assert!(passes(&mut list, "https://example.com"));
        assert!(passes(&mut list, "https://example.com:443"));
        assert!(passes(&mut list, "http://plain.test:80"));
        assert!(!passes(&mut list, "https://example.com:8443"));
        assert!(!passes(&mut list, "https://plain.test:80"));
    }

    #[test]
    fn a_wildcard_allows_subdomains_at_any_depth_but_not_the_domain() {
        let mut list = list(&["https://*.example.com"]);
        assert!(passes(&mut list, "https://app.example.com"));
        assert!(passes(&mut list, "https://a.b.EXAMPLE.com"));
        assert!(!passes(&mut list, "https://example.com"));
        assert!(!passes(&mut list, "https://evilexample.com"));
        assert!(!passes(&mut list, "https://app.example.com.evil.test"));
        assert!(!passes(&mut list, "http://app.example.com"));
        assert!(!passes(&mut list, "https://app.example.com:8443"));
        assert!(
            !passes(&mut list, "https://*.example.com"),
            "a literal * is no wildcard"
        );
    }

    #[test]
    fn requests_without_origin_pass_unless_told_otherwise() {
        let mut open = list(&["https://example.com"]);
        assert_eq!(check(&mut open, &[]), Ok(()));
        let mut strict = list(&["https://example.com"]).allow_missing(false);
        let refusal = check(&mut strict, &[]).unwrap_err();
        assert_eq!(refusal.status(), 403);
        assert_eq!(refusal.body(), b"Origin required");
        assert!(passes(&mut strict, "https://example.com"));
    }

    #[test]
    fn null_and_malformed_origins_never_pass() {
        let mut list = list(&["https://example.com"]);
        for origin in [
            "null",
            "https://example.com/",
            "https://user@example.com",
            "https://example.com:",
            "https://example.com:99999",
            "example.com",
            "https://",
            "https://example..com",
        ] {
            assert!(!passes(&mut list, origin), "{origin}");
        }
    }

    #[test]
    fn ipv6_hosts_keep_their_brackets_and_ports() {
        let mut list = list(&["http://[::1]:8080", "http://[2001:db8::1]"]);
        assert!(passes(&mut list, "http://[::1]:8080"));
        assert!(passes(&mut list, "http://[2001:DB8::1]:80"));
        assert!(!passes(&mut list, "http://[::1]"));
    }

    #[test]
    fn malformed_entries_are_refused_with_the_reason() {
        let cases: [(&str, Malformed); 9] = [
            ("example.com", OriginError::Scheme),
            ("1http://example.com", OriginError::Scheme),
            ("https://", OriginError::Host),
            ("https://exa mple.com", OriginError::NotAnOrigin),
            ("https://example.com/app", OriginError::NotAnOrigin),
            ("https://example.com:https", OriginError::Port),
            ("https://*example.com", OriginError::Wildcard),
            ("https://app.*.example.com", OriginError::Wildcard),
            ("https://[::1", OriginError::Host),
        ];
        for (origin, malformed) in cases {
            assert_eq!(
                OriginAllowlist::new().allow(origin).unwrap_err(),
                malformed(origin.to_owned()),
                "{origin}"
            );
        }
    }

    #[test]
    fn the_error_names_the_entry() {
        let error = OriginAllowlist::new().allow("example.com").unwrap_err();
        assert_eq!(
            error.to_string(),
            "origin `example.com` does not start with scheme://"
        );
    }
}
