//! Reading one parameter from a request target's query, as credentials
//! sent by browsers (which cannot set headers on a WebSocket) arrive.

/// The raw (still percent-encoded) value of the first `name=value` pair of
/// `query` whose name is exactly `name`; a bare `name` has the empty value.
pub(super) fn param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

/// Decodes a form-encoded value (`%XX` escapes, `+` for a space, as a
/// browser's `URLSearchParams` writes it); `None` if an escape is not two
/// hex digits.
pub(super) fn decode(raw: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.bytes();
    while let Some(byte) = bytes.next() {
        out.push(match byte {
            b'%' => {
                let high = hex_digit(bytes.next()?)?;
                let low = hex_digit(bytes.next()?)?;
                high << 4 | low
            }
            b'+' => b' ',
            other => other,
        });
    }
    Some(out)
}

fn hex_digit(byte: u8) -> Option<u8> {
    char::from(byte)
        .to_digit(16)
        .and_then(|digit| u8::try_from(digit).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_pair_with_the_exact_name_wins() {
        let query = "room=1&api_key=a%2Bb&api_key=second&flag";
        assert_eq!(param(query, "api_key"), Some("a%2Bb"));
        assert_eq!(param(query, "flag"), Some(""));
        assert_eq!(param(query, "API_KEY"), None);
        assert_eq!(param(query, "api"), None);
        assert_eq!(param("", "api_key"), None);
    }

    #[test]
    fn decoding_handles_escapes_plus_and_bad_escapes() {
        assert_eq!(decode("a%2Bb%2fc+d").as_deref(), Some(&b"a+b/c d"[..]));
        assert_eq!(decode("%e2%82%AC").as_deref(), Some("€".as_bytes()));
        assert_eq!(decode("").as_deref(), Some(&b""[..]));
        assert_eq!(decode("100%"), None);
        assert_eq!(decode("%4"), None);
        assert_eq!(decode("%zz"), None);
    }
}
