//! [`ApiKey`]: admits clients that present one of a set of keys.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use shardcast_proto::handshake::UpgradeRequest;

use super::{Identity, UpgradeLayer, constant_time, query};
use crate::handler::Rejection;

/// Admits an upgrade that carries one of the configured API keys, and
/// names the client after the key's user, if the key has one.
///
/// A key is looked for, in this order, in:
/// - a header, `x-api-key` by default ([`header`](Self::header));
/// - `Authorization: Bearer <key>`;
/// - a query parameter, `api_key` by default
///   ([`query_param`](Self::query_param)), form-decoded (`%2B` for `+`,
///   `+` for a space), since browsers cannot set headers on a WebSocket.
///   Query strings end up in proxies' and servers' access logs; turn this
///   off with [`without_query_param`](Self::without_query_param) when all
///   clients can send headers.
///
/// Every presented key is compared with every configured key in constant
/// time, so the time a refusal takes does not reveal how much of a key was
/// right (only its length). An empty value never matches, even an empty
/// configured key.
///
/// A refusal is `401 Unauthorized` with the body
/// `missing or invalid API key` (and no `WWW-Authenticate` header).
/// `Debug` shows how many keys there are, never the keys.
#[derive(Clone)]
pub struct ApiKey {
    keys: Vec<Key>,
    header: Box<str>,
    query_param: Option<Box<str>>,
}

/// One configured key and the user it stands for.
#[derive(Clone)]
struct Key {
    secret: Box<[u8]>,
    user_id: Option<Arc<str>>,
}

impl ApiKey {
    /// A layer with no key yet (it refuses everyone), reading the
    /// `x-api-key` header, `Authorization: Bearer` and the `api_key` query
    /// parameter.
    #[must_use]
    pub fn new() -> ApiKey {
        ApiKey {
            keys: Vec::new(),
            header: "x-api-key".into(),
            query_param: Some("api_key".into()),
        }
    }

    /// Accepts `key`, for an anonymous client.
    #[must_use]
    pub fn key(mut self, key: impl AsRef<[u8]>) -> ApiKey {
        self.keys.push(Key {
            secret: key.as_ref().into(),
            user_id: None,
        });
        self
    }

    /// Accepts `key`, naming the client `user_id` in its [`Identity`].
    #[must_use]
    pub fn key_for_user(mut self, key: impl AsRef<[u8]>, user_id: impl Into<Arc<str>>) -> ApiKey {
        self.keys.push(Key {
            secret: key.as_ref().into(),
            user_id: Some(user_id.into()),
        });
        self
    }

    /// Reads the key from the header `name` (case-insensitive) instead of
    /// `x-api-key`.
    #[must_use]
    pub fn header(mut self, name: impl Into<Box<str>>) -> ApiKey {
        self.header = name.into();
        self
    }

    /// Reads the key from the query parameter `name` (case-sensitive)
    /// instead of `api_key`.
    #[must_use]
    pub fn query_param(mut self, name: impl Into<Box<str>>) -> ApiKey {
        self.query_param = Some(name.into());
        self
    }

    /// Ignores keys in the query: only headers count.
    #[must_use]
    pub fn without_query_param(mut self) -> ApiKey {
        self.query_param = None;
        self
    }

    /// The configured key equal to `presented`, if any, comparing it with
    /// every key whatever matched first.
    fn find(&self, presented: &[u8]) -> Option<&Key> {
        if presented.is_empty() {
            return None;
        }
        let mut found = None;
        for key in &self.keys {
            if constant_time::eq(&key.secret, presented) {
                found = found.or(Some(key));
            }
        }
        found
    }

    /// The configured key the request presents in any of the places read.
    fn presented(&self, request: &UpgradeRequest<'_>) -> Option<&Key> {
        let from_header = || self.find(request.header(&self.header)?.trim_ascii());
        let from_bearer = || self.find(bearer_token(request.header("Authorization")?)?);
        let from_query = || {
            let raw = query::param(request.query()?, self.query_param.as_deref()?)?;
            self.find(&query::decode(raw)?)
        };
        from_header().or_else(from_bearer).or_else(from_query)
    }
}

impl Default for ApiKey {
    /// The same as [`ApiKey::new`].
    fn default() -> ApiKey {
        ApiKey::new()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("keys", &self.keys.len())
            .field("header", &self.header)
            .field("query_param", &self.query_param)
            .finish()
    }
}

impl UpgradeLayer for ApiKey {
    fn check(
        &mut self,
        request: &UpgradeRequest<'_>,
        _: SocketAddr,
        identity: &mut Identity,
    ) -> Result<(), Rejection> {
        let key = self.presented(request).ok_or_else(|| {
            Rejection::new(401, "Unauthorized").with_body(&b"missing or invalid API key"[..])
        })?;
        if let Some(user_id) = &key.user_id {
            identity.set_user_id(Arc::clone(user_id));
        }
        Ok(())
    }
}

/// The token of an `Authorization: Bearer <token>` value (the scheme
/// case-insensitive, as RFC 9110 says).
fn bearer_token(authorization: &[u8]) -> Option<&[u8]> {
    let authorization = authorization.trim_ascii();
    let space = authorization.iter().position(|&b| b == b' ')?;
    let (scheme, token) = authorization.split_at(space);
    scheme
        .eq_ignore_ascii_case(b"Bearer")
        .then(|| token.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::test_request::{PEER, parse, request_to};

    fn layer() -> ApiKey {
        ApiKey::new()
            .key("anon-key")
            .key_for_user("alice-key", "alice")
            .key_for_user("a+b/c=", "bob")
    }

    /// The outcome of `layer` on a request to `target` with `headers`: the
    /// identity it leaves, or the refusal.
    fn check(layer: &mut ApiKey, target: &str, headers: &[&str]) -> Result<Identity, Rejection> {
        let buf = request_to(target, headers);
        let mut identity = Identity::default();
        layer.check(&parse(&buf), PEER, &mut identity)?;
        Ok(identity)
    }

    fn user(outcome: Result<Identity, Rejection>) -> Option<String> {
        outcome.unwrap().user_id().map(|id| id.to_string())
    }

    #[test]
    fn a_key_in_the_default_header_passes_and_names_its_user() {
        let mut layer = layer();
        assert_eq!(
            user(check(&mut layer, "/", &["X-Api-Key: alice-key"])),
            Some("alice".into())
        );
        assert_eq!(
            user(check(&mut layer, "/", &["x-api-key:  anon-key "])),
            None
        );
    }

    #[test]
    fn a_bearer_token_passes_whatever_the_scheme_case() {
        let mut layer = layer();
        for header in [
            "Authorization: Bearer alice-key",
            "authorization: bearer   alice-key",
            "Authorization: BEARER alice-key",
        ] {
            assert_eq!(
                user(check(&mut layer, "/", &[header])),
                Some("alice".into()),
                "{header}"
            );
        }
        assert!(check(&mut layer, "/", &["Authorization: Basic alice-key"]).is_err());
        assert!(check(&mut layer, "/", &["Authorization: Bearer"]).is_err());
        assert!(check(&mut layer, "/", &["Authorization: Bearer "]).is_err());
    }

    #[test]
    fn a_key_in_the_query_is_form_decoded() {
        let mut layer = layer();
        assert_eq!(
            user(check(&mut layer, "/chat?room=1&api_key=alice-key", &[])),
            Some("alice".into())
        );
        assert_eq!(
            user(check(&mut layer, "/chat?api_key=a%2Bb%2Fc%3D", &[])),
            Some("bob".into())
        );
        assert!(
            check(&mut layer, "/chat?api_key=a+b/c=", &[]).is_err(),
            "+ is a space"
        );
        assert!(
            check(&mut layer, "/chat?api_key=alice-key%", &[]).is_err(),
            "bad escape"
        );
        assert!(check(&mut layer, "/chat?API_KEY=alice-key", &[]).is_err());
    }

    #[test]
    fn missing_wrong_or_empty_keys_get_401_with_the_body() {
        let mut layer = layer();
        for (target, headers) in [
            ("/", &[][..]),
            ("/", &["X-Api-Key: alice-ke"][..]),
            ("/", &["X-Api-Key: alice-key2"][..]),
            ("/", &["X-Api-Key: ALICE-KEY"][..]),
            ("/", &["X-Api-Key:"][..]),
            ("/?api_key=", &[][..]),
            ("/?api_key", &[][..]),
        ] {
            let refusal = check(&mut layer, target, headers).unwrap_err();
            assert_eq!(refusal.status(), 401, "{target} {headers:?}");
            assert_eq!(refusal.reason(), "Unauthorized");
            assert_eq!(refusal.body(), b"missing or invalid API key");
        }
    }

    #[test]
    fn an_empty_configured_key_matches_nothing() {
        let mut layer = ApiKey::new().key("");
        assert!(check(&mut layer, "/?api_key=", &["X-Api-Key:"]).is_err());
        assert!(check(&mut ApiKey::new(), "/?api_key=x", &[]).is_err());
    }

    #[test]
    fn any_place_with_a_valid_key_is_enough() {
        let mut layer = layer();
        let outcome = check(
            &mut layer,
            "/?api_key=alice-key",
            &["X-Api-Key: wrong", "Authorization: Bearer wrong"],
        );
        assert_eq!(user(outcome), Some("alice".into()));
    }

    #[test]
    fn the_header_and_query_names_can_change_and_the_query_can_be_ignored() {
        let mut layer = layer().header("X-Token").query_param("token");
        assert!(check(&mut layer, "/", &["x-token: anon-key"]).is_ok());
        assert!(check(&mut layer, "/", &["x-api-key: anon-key"]).is_err());
        assert!(check(&mut layer, "/?token=anon-key", &[]).is_ok());
        assert!(check(&mut layer, "/?api_key=anon-key", &[]).is_err());
        let mut headers_only = layer.without_query_param();
        assert!(check(&mut headers_only, "/?token=anon-key", &[]).is_err());
        assert!(check(&mut headers_only, "/", &["Authorization: Bearer anon-key"]).is_ok());
    }

    #[test]
    fn the_first_configured_key_wins_when_two_are_equal() {
        let mut layer = ApiKey::new()
            .key_for_user("shared", "first")
            .key_for_user("shared", "second");
        assert_eq!(
            user(check(&mut layer, "/", &["X-Api-Key: shared"])),
            Some("first".into())
        );
    }

    #[test]
    fn debug_never_shows_the_keys() {
        let shown = format!("{:?}", layer());
        assert_eq!(
            shown,
            r#"ApiKey { keys: 3, header: "x-api-key", query_param: Some("api_key") }"#
        );
    }
}
