//! Where the client connects: a `ws://` URL, split into what the TCP
//! connection and the upgrade request need.

use crate::error::Error;

/// A parsed `ws://HOST[:PORT][/PATH]` URL.
///
/// The host is resolved at every connection attempt, so a name that moves
/// to another address is followed across reconnections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// What `TcpStream::connect` takes: `host:port`, IPv6 in brackets.
    pub(crate) authority: String,
    /// The `Host` header: the URL's authority as written.
    pub(crate) host: String,
    /// The request target: path and query, `/` when the URL has none.
    pub(crate) target: String,
}

impl Endpoint {
    /// Parses `url`. Only `ws://` is accepted: the client has no TLS.
    pub(crate) fn parse(url: &str) -> Result<Endpoint, Error> {
        let invalid = |reason| Error::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        if url.starts_with("wss://") {
            return Err(invalid("wss:// needs TLS, which this client does not do"));
        }
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| invalid("the scheme must be ws://"))?;
        let (host, target) = match rest.find(['/', '?']) {
            Some(at) if rest.as_bytes()[at] == b'?' => (&rest[..at], format!("/{}", &rest[at..])),
            Some(at) => (&rest[..at], rest[at..].to_owned()),
            None => (rest, "/".to_owned()),
        };
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        if host.contains('@') {
            return Err(invalid("user information in the URL is not supported"));
        }
        if !host
            .bytes()
            .chain(target.bytes())
            .all(|b| b.is_ascii_graphic())
        {
            return Err(invalid(
                "the host and path must be visible ASCII (percent-encode the rest)",
            ));
        }
        let has_port = match host.rsplit_once(':') {
            Some((name, port))
                if !port.contains(']') && (!name.contains(':') || name.ends_with(']')) =>
            {
                port.parse::<u16>()
                    .map_err(|_| invalid("the port is not a number from 0 to 65535"))?;
                true
            }
            _ => false,
        };
        let authority = if has_port {
            host.to_owned()
        } else {
            format!("{host}:80")
        };
        Ok(Endpoint {
            authority,
            host: host.to_owned(),
            target,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_host_port_and_target() {
        let endpoint = Endpoint::parse("ws://127.0.0.1:9000/chat?room=1").unwrap();
        assert_eq!(endpoint.authority, "127.0.0.1:9000");
        assert_eq!(endpoint.host, "127.0.0.1:9000");
        assert_eq!(endpoint.target, "/chat?room=1");
    }

    #[test]
    fn defaults_port_80_and_target_slash() {
        let endpoint = Endpoint::parse("ws://example.com").unwrap();
        assert_eq!(endpoint.authority, "example.com:80");
        assert_eq!(endpoint.host, "example.com");
        assert_eq!(endpoint.target, "/");
        let query = Endpoint::parse("ws://example.com?x=1").unwrap();
        assert_eq!(query.target, "/?x=1");
    }

    #[test]
    fn ipv6_in_brackets() {
        assert_eq!(
            Endpoint::parse("ws://[::1]:8080/").unwrap().authority,
            "[::1]:8080"
        );
        assert_eq!(
            Endpoint::parse("ws://[::1]/").unwrap().authority,
            "[::1]:80"
        );
    }

    #[test]
    fn refuses_other_schemes_and_bad_ports() {
        for url in [
            "wss://example.com/",
            "http://example.com/",
            "ws:///path",
            "ws://host:port/",
            "ws://host:70000/",
            "ws://user@host/",
            "ws://host/a b",
        ] {
            assert!(
                matches!(Endpoint::parse(url), Err(Error::InvalidUrl { .. })),
                "{url}"
            );
        }
    }
}
