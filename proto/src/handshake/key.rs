//! `Sec-WebSocket-Key` and `Sec-WebSocket-Accept`: the nonce a client sends
//! and the digest a server proves it read it with (RFC 6455 §4.1, §4.2.2).
//!
//! Base64 lives here rather than in a dependency because only three shapes
//! are ever needed: encoding the 16-byte nonce and the 20-byte SHA-1 digest,
//! and a strict decode of a 24-character key.

use std::fmt;

use sha1::{Digest, Sha1};

/// The GUID RFC 6455 §1.3 appends to the key before hashing.
const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The RFC 4648 §4 base64 alphabet.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encodes `input` as padded base64 into the start of `out` and returns the
/// number of bytes written. Writes nothing past the end of `out`: a too short
/// `out` gets a truncated encoding (callers size it as `4 * ceil(n / 3)`).
fn encode_into(input: &[u8], out: &mut [u8]) -> usize {
    let mut written = 0;
    for (chunk, quad) in input.chunks(3).zip(out.chunks_mut(4)) {
        let b0 = chunk.first().copied().unwrap_or(0);
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let sextets = [
            b0 >> 2,
            ((b0 & 0x03) << 4) | (b1 >> 4),
            ((b1 & 0x0f) << 2) | (b2 >> 6),
            b2 & 0x3f,
        ];
        // A chunk of n bytes carries n + 1 significant sextets.
        for (i, (slot, sextet)) in quad.iter_mut().zip(sextets).enumerate() {
            *slot = if i <= chunk.len() {
                ALPHABET[usize::from(sextet)]
            } else {
                b'='
            };
            written += 1;
        }
    }
    written
}

/// The value of one base64 character, or `None` outside the alphabet.
fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Strictly decodes padded base64 into the start of `out` and returns the
/// decoded length, or `None` if `input` is not canonical base64 or `out` is
/// too short.
///
/// Strict means: the length is a multiple of 4, padding appears only at the
/// end and only as needed, and the unused low bits of the last character are
/// zero, so every byte string has exactly one accepted encoding.
fn decode_into(input: &[u8], out: &mut [u8]) -> Option<usize> {
    if input.len() % 4 != 0 {
        return None;
    }
    let quads = input.len() / 4;
    let mut written = 0;
    for (index, quad) in input.chunks_exact(4).enumerate() {
        let padding = match quad {
            [_, _, b'=', b'='] => 2,
            [_, _, _, b'='] => 1,
            _ => 0,
        };
        if padding > 0 && index + 1 != quads {
            return None;
        }
        let mut value: u32 = 0;
        for &c in &quad[..4 - padding] {
            value = (value << 6) | u32::from(sextet(c)?);
        }
        value <<= 6 * padding;
        // Bits a padded quad does not carry must be zero.
        let bytes = value.to_be_bytes();
        let decoded = &bytes[1..4 - padding];
        let unused = &bytes[4 - padding..];
        if unused.iter().any(|&b| b != 0) {
            return None;
        }
        let target = out.get_mut(written..written + decoded.len())?;
        target.copy_from_slice(decoded);
        written += decoded.len();
    }
    Some(written)
}

/// Whether `key` is a valid `Sec-WebSocket-Key`: the canonical base64 of
/// exactly 16 bytes (RFC 6455 §4.1, item 7).
pub(crate) fn is_valid_client_key(key: &[u8]) -> bool {
    let mut nonce = [0u8; 16];
    key.len() == 24 && decode_into(key, &mut nonce) == Some(16)
}

/// A `Sec-WebSocket-Key` a client sends: 16 random bytes in base64.
///
/// Built by [`generate_key`] from bytes the caller draws from its random
/// source; this crate never draws randomness itself.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ClientKey([u8; 24]);

impl ClientKey {
    /// The key as it appears in the request header.
    pub fn as_str(&self) -> &str {
        // Always ASCII from the base64 alphabet, so the fallback is unreachable.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The `Sec-WebSocket-Accept` value a server must answer this key with.
    pub fn expected_accept(&self) -> AcceptKey {
        accept_key(&self.0)
    }
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ClientKey").field(&self.as_str()).finish()
    }
}

/// Encodes 16 random bytes as a `Sec-WebSocket-Key`.
///
/// The caller supplies the randomness (RFC 6455 §4.1 asks for a fresh,
/// randomly selected nonce per connection) so that this crate stays free of
/// any random source and tests can use fixed keys.
pub fn generate_key(random: [u8; 16]) -> ClientKey {
    let mut key = [0u8; 24];
    encode_into(&random, &mut key);
    ClientKey(key)
}

/// A `Sec-WebSocket-Accept` value: base64 of the SHA-1 digest of the key and
/// the WebSocket GUID.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AcceptKey([u8; 28]);

impl AcceptKey {
    /// The value as it appears in the response header.
    pub fn as_str(&self) -> &str {
        // Always ASCII from the base64 alphabet, so the fallback is unreachable.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The value as bytes, to compare with a received header.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for AcceptKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AcceptKey").field(&self.as_str()).finish()
    }
}

/// Computes the `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key`
/// (RFC 6455 §4.2.2, item 5.4): base64(SHA-1(key + GUID)).
///
/// `key` is taken as sent, without validation; servers validate it while
/// parsing the request.
pub fn accept_key(key: &[u8]) -> AcceptKey {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(WEBSOCKET_GUID);
    let digest: [u8; 20] = sha1.finalize().into();
    let mut accept = [0u8; 28];
    encode_into(&digest, &mut accept);
    AcceptKey(accept)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4648 §10 test vectors.
    const RFC_4648_VECTORS: [(&str, &str); 7] = [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];

    #[test]
    fn base64_encoding_matches_rfc_4648_vectors() {
        for (plain, encoded) in RFC_4648_VECTORS {
            let mut out = [0u8; 8];
            let n = encode_into(plain.as_bytes(), &mut out);
            assert_eq!(&out[..n], encoded.as_bytes(), "{plain:?}");
        }
    }

    #[test]
    fn base64_decoding_matches_rfc_4648_vectors() {
        for (plain, encoded) in RFC_4648_VECTORS {
            let mut out = [0u8; 6];
            let n = decode_into(encoded.as_bytes(), &mut out);
            assert_eq!(n, Some(plain.len()), "{encoded:?}");
            assert_eq!(&out[..plain.len()], plain.as_bytes(), "{encoded:?}");
        }
    }

    #[test]
    fn base64_decoding_rejects_non_canonical_input() {
        for bad in [
            "Zg", "Zg=", "Zh==", "Zm9=", "Z===", "Zg==Zg==", "Zm 9", "Zm-v", "Zm_v", "====",
        ] {
            let mut out = [0u8; 8];
            assert_eq!(decode_into(bad.as_bytes(), &mut out), None, "{bad:?}");
        }
    }

    #[test]
    fn base64_decoding_refuses_output_longer_than_the_buffer() {
        let mut out = [0u8; 5];
        assert_eq!(decode_into(b"Zm9vYmFy", &mut out), None);
    }

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        let accept = accept_key(b"dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(accept.as_str(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn generated_key_is_base64_of_the_16_given_bytes() {
        let key = generate_key(*b"the sample nonce");
        assert_eq!(key.as_str(), "dGhlIHNhbXBsZSBub25jZQ==");
        assert!(is_valid_client_key(key.as_str().as_bytes()));
        assert_eq!(
            key.expected_accept().as_str(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn client_key_must_decode_to_exactly_16_bytes() {
        assert!(is_valid_client_key(b"AAAAAAAAAAAAAAAAAAAAAA=="));
        // 15 bytes, 17 bytes, 18 bytes, and a non-canonical last character.
        for bad in [
            "AAAAAAAAAAAAAAAAAAAA",
            "AAAAAAAAAAAAAAAAAAAAAAA=",
            "AAAAAAAAAAAAAAAAAAAAAAAA",
            "AAAAAAAAAAAAAAAAAAAAAB==",
            "dGhlIHNhbXBsZSBub25jZQ",
            "",
        ] {
            assert!(!is_valid_client_key(bad.as_bytes()), "{bad:?}");
        }
    }
}
