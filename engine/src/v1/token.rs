//! Session ids and resume tokens: what proves that a client resuming a
//! session is the one it was given to.
//!
//! A resume token is `shard (2 bytes) | generation (4 bytes) | HMAC-SHA256`
//! over the session id, the shard and the generation, keyed with a secret
//! every shard of the process shares. A shard that receives a `Resume`
//! checks the token on its own, then learns from it which shard keeps the
//! session. The generation changes with every `Welcome`, so a token is
//! good for one resume: the session's keeper refuses any other.
//!
//! Session ids are the same HMAC over a per-process nonce, the shard and
//! a per-shard serial: unique, and unguessable without the secret.

use std::fmt;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::sync::OnceLock;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::handler::ShardId;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of a token before its MAC: the shard and the generation.
const HEADER: usize = 6;
/// Bytes of an HMAC-SHA256.
const MAC: usize = 32;

/// A session's id: 16 bytes, written as 32 lowercase hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SessionId([u8; 16]);

impl SessionId {
    /// Reads an id from its 32 hex digits.
    pub(crate) fn parse(text: &str) -> Option<SessionId> {
        let digits = text.as_bytes();
        if digits.len() != 32 {
            return None;
        }
        let mut id = [0; 16];
        for (byte, pair) in id.iter_mut().zip(digits.chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(SessionId(id))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// The process's session secret and nonce, shared by every shard.
pub(crate) struct SessionKeys {
    secret: [u8; 32],
    nonce: [u8; 16],
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKeys { .. }")
    }
}

impl SessionKeys {
    /// The process's keys, drawn from the operating system's randomness
    /// the first time they are needed. Sessions live in memory and end
    /// with the process, so their keys need not outlive it either.
    pub(crate) fn process() -> &'static SessionKeys {
        static KEYS: OnceLock<SessionKeys> = OnceLock::new();
        KEYS.get_or_init(|| {
            let mut secret = [0; 32];
            let mut nonce = [0; 16];
            fill_random(&mut secret);
            fill_random(&mut nonce);
            SessionKeys { secret, nonce }
        })
    }

    /// The id of the `serial`th session created on `shard`.
    pub(crate) fn session_id(&self, shard: ShardId, serial: u64) -> SessionId {
        let mut mac = self.mac();
        mac.update(b"session-id");
        mac.update(&self.nonce);
        mac.update(&shard_bytes(shard));
        mac.update(&serial.to_be_bytes());
        let digest = mac.finalize().into_bytes();
        let mut id = [0; 16];
        id.copy_from_slice(&digest[..16]);
        SessionId(id)
    }

    /// The resume token of session `id`, kept by `shard` at `generation`.
    pub(crate) fn token(&self, id: SessionId, shard: ShardId, generation: u32) -> Vec<u8> {
        let mut token = Vec::with_capacity(HEADER + MAC);
        token.extend_from_slice(&shard_bytes(shard));
        token.extend_from_slice(&generation.to_be_bytes());
        let mac = self.token_mac(id, &token);
        token.extend_from_slice(&mac.finalize().into_bytes());
        token
    }

    /// Checks a client's resume token for session `id`: the shard that
    /// keeps the session and the generation the token was issued for, or
    /// `None` for a token this process did not issue for this session.
    /// The MAC is compared in constant time.
    pub(crate) fn verify(&self, id: SessionId, token: &[u8]) -> Option<(ShardId, u32)> {
        if token.len() != HEADER + MAC {
            return None;
        }
        let (header, tag) = token.split_at(HEADER);
        self.token_mac(id, header).verify_slice(tag).ok()?;
        let shard = u16::from_be_bytes([header[0], header[1]]);
        let generation = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
        Some((ShardId(usize::from(shard)), generation))
    }

    fn token_mac(&self, id: SessionId, header: &[u8]) -> HmacSha256 {
        let mut mac = self.mac();
        mac.update(b"resume-token");
        mac.update(&id.0);
        mac.update(header);
        mac
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.secret).expect("HMAC takes keys of any length")
    }
}

fn shard_bytes(shard: ShardId) -> [u8; 2] {
    u16::try_from(shard.index())
        .expect("fewer than 65,536 shards")
        .to_be_bytes()
}

/// Fills `out` from `/dev/urandom`; where that cannot be read (a
/// sandbox without `/dev`), from the standard library's hasher keys,
/// which it draws from the operating system (SipHash as a keyed PRF).
fn fill_random(out: &mut [u8]) {
    let read = File::open("/dev/urandom").and_then(|mut file| file.read_exact(out));
    if read.is_ok() {
        return;
    }
    for (index, chunk) in out.chunks_mut(8).enumerate() {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_usize(index);
        let bytes = hasher.finish().to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_read_back_from_their_text() {
        let keys = SessionKeys::process();
        let first = keys.session_id(ShardId(0), 1);
        assert_ne!(first, keys.session_id(ShardId(0), 2));
        assert_ne!(first, keys.session_id(ShardId(1), 1));
        let text = first.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(SessionId::parse(&text), Some(first));
        assert_eq!(SessionId::parse("not hex"), None);
        assert_eq!(SessionId::parse(&"g".repeat(32)), None);
    }

    #[test]
    fn a_token_proves_its_session_shard_and_generation_only() {
        let keys = SessionKeys::process();
        let id = keys.session_id(ShardId(3), 9);
        let token = keys.token(id, ShardId(3), 7);
        assert_eq!(keys.verify(id, &token), Some((ShardId(3), 7)));
        let other = keys.session_id(ShardId(3), 10);
        assert_eq!(keys.verify(other, &token), None, "another session's token");
        for at in 0..token.len() {
            let mut forged = token.clone();
            forged[at] ^= 1;
            assert_eq!(keys.verify(id, &forged), None, "byte {at} flipped");
        }
        assert_eq!(keys.verify(id, &token[..token.len() - 1]), None);
        let stranger = SessionKeys {
            secret: [7; 32],
            nonce: [0; 16],
        };
        assert_eq!(
            stranger.verify(id, &token),
            None,
            "another process's secret"
        );
    }
}
