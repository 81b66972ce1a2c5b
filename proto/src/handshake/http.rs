//! HTTP/1.1 head syntax shared by both roles: size limits, incremental
//! parsing progress, header fields, token lists, and writing header lines.

use super::error::ApiMisuse;

/// Limits on the HTTP head of a handshake (request on the server, response
/// on the client).
///
/// The head is held in memory until it is complete, so these bound what a
/// peer can make an endpoint buffer before it has said anything useful.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeadLimits {
    /// The most bytes the head may take, from the request or status line up
    /// to and including the blank line that ends it.
    ///
    /// Unit: bytes. Default: 8192 (8 KiB). A partial head that already
    /// reaches this size is refused with 431 without waiting for the rest.
    /// Browsers' upgrade requests are well under 1 KiB, but cookies and
    /// bearer tokens can add several; a larger limit lets those through at
    /// the cost of more memory held per half-open connection.
    pub max_head_bytes: usize,
    /// The most header fields the head may carry (a repeated header counts
    /// once per line).
    ///
    /// Unit: header lines. Default: 64. More is refused with 431. Up to 64
    /// headers are parsed into a stack array; a larger limit costs one heap
    /// allocation of 32 bytes per allowed header during each parse.
    pub max_headers: usize,
}

impl HeadLimits {
    /// How many headers fit in the stack array used while parsing.
    pub(crate) const STACK_HEADERS: usize = 64;
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            max_head_bytes: 8 * 1024,
            max_headers: Self::STACK_HEADERS,
        }
    }
}

/// The outcome of parsing a head from the bytes received so far.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Progress<T> {
    /// The head is not complete yet: call again with the same bytes plus
    /// whatever arrives next.
    NeedMore,
    /// The head is complete.
    Done {
        /// What the head said.
        value: T,
        /// How many bytes of the input the head took. Bytes after it
        /// already belong to the WebSocket stream and must be fed to the
        /// frame decoder.
        head_len: usize,
    },
}

/// One header field as received, borrowed from the input buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'b> {
    /// The field name as sent (compare it case-insensitively).
    pub name: &'b str,
    /// The field value with surrounding whitespace removed. Bytes, not
    /// text: HTTP allows non-ASCII octets in values.
    pub value: &'b [u8],
}

impl<'b> Header<'b> {
    /// The value as text, or `None` if it is not valid UTF-8.
    pub fn value_str(&self) -> Option<&'b str> {
        std::str::from_utf8(self.value).ok()
    }
}

/// Runs `parse` with a header array of `max` entries: on the stack when it
/// fits, otherwise in one heap allocation.
pub(crate) fn with_header_storage<'b, R>(
    max: usize,
    parse: impl FnOnce(&mut [httparse::Header<'b>]) -> R,
) -> R {
    let mut stack: [httparse::Header<'b>; HeadLimits::STACK_HEADERS] =
        [httparse::EMPTY_HEADER; HeadLimits::STACK_HEADERS];
    match stack.get_mut(..max) {
        Some(headers) => parse(headers),
        None => parse(&mut vec![httparse::EMPTY_HEADER; max]),
    }
}

/// Copies parsed headers into borrowed [`Header`]s: one allocation of
/// `headers.len()` pairs of pointers, no header bytes copied.
pub(crate) fn collect_headers<'b>(headers: &[httparse::Header<'b>]) -> Vec<Header<'b>> {
    headers
        .iter()
        .map(|h| Header {
            name: h.name,
            value: trim_ows(h.value),
        })
        .collect()
}

/// Every value of the header called `name` (case-insensitive), in order.
pub(crate) fn values<'h, 'b>(
    headers: &'h [Header<'b>],
    name: &'h str,
) -> impl Iterator<Item = &'b [u8]> + 'h {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// A header that must appear at most once, by name.
pub(crate) enum Single<'b> {
    /// The header is absent.
    Missing,
    /// The header appears once, with this value.
    One(&'b [u8]),
    /// The header appears on more than one line.
    Repeated,
}

/// Looks up a header that must appear at most once.
pub(crate) fn single<'b>(headers: &[Header<'b>], name: &str) -> Single<'b> {
    let mut found = values(headers, name);
    match (found.next(), found.next()) {
        (None, _) => Single::Missing,
        (Some(value), None) => Single::One(value),
        (Some(_), Some(_)) => Single::Repeated,
    }
}

/// Removes optional whitespace (spaces and tabs) at both ends.
pub(crate) fn trim_ows(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    value.get(start..end).unwrap_or_default()
}

/// The non-empty elements of comma-separated list values (RFC 9110 §5.6.1),
/// across all the given header lines, trimmed.
pub(crate) fn list_elements<'b>(
    values: impl Iterator<Item = &'b [u8]>,
) -> impl Iterator<Item = &'b [u8]> {
    values
        .flat_map(|value| value.split(|&b| b == b','))
        .map(trim_ows)
        .filter(|element| !element.is_empty())
}

/// Whether any comma-separated element of the values equals `token`,
/// ignoring ASCII case.
pub(crate) fn has_token<'b>(values: impl Iterator<Item = &'b [u8]>, token: &str) -> bool {
    list_elements(values).any(|element| element.eq_ignore_ascii_case(token.as_bytes()))
}

/// Whether `byte` may appear in an HTTP token (RFC 9110 §5.6.2 `tchar`).
pub(crate) fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// Whether `s` is a non-empty HTTP token.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// Whether `value` may be sent as a header value: visible ASCII, spaces and
/// tabs inside, no control characters (so no CR or LF to split the head).
fn is_field_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        && trim_ows(value.as_bytes()).len() == value.len()
}

/// Checks caller-supplied extra headers: names must be tokens, values plain
/// visible text, and none may be one of the `reserved` names the writer
/// sets itself.
pub(crate) fn check_extra_headers(
    headers: &[(&str, &str)],
    reserved: &[&str],
) -> Result<(), ApiMisuse> {
    for (index, (name, value)) in headers.iter().enumerate() {
        if !is_token(name) {
            return Err(ApiMisuse::InvalidHeaderName { index });
        }
        if !is_field_value(value) {
            return Err(ApiMisuse::InvalidHeaderValue { index });
        }
        if reserved.iter().any(|r| r.eq_ignore_ascii_case(name)) {
            return Err(ApiMisuse::ReservedHeader { index });
        }
    }
    Ok(())
}

/// Appends `name: value\r\n`.
pub(crate) fn write_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends every extra header, already checked by [`check_extra_headers`].
pub(crate) fn write_extra_headers(out: &mut Vec<u8>, headers: &[(&str, &str)]) {
    for (name, value) in headers {
        write_header(out, name, value.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_lists_are_split_on_commas_and_trimmed() {
        let lines: [&[u8]; 2] = [b" keep-alive ,\tUpgrade", b",, x ,"];
        let elements: Vec<&[u8]> = list_elements(lines.into_iter()).collect();
        assert_eq!(elements, [&b"keep-alive"[..], b"Upgrade", b"x"]);
    }

    #[test]
    fn token_match_ignores_ascii_case_but_not_substrings() {
        let lines: [&[u8]; 1] = [b"keep-alive, UPGRADE"];
        assert!(has_token(lines.into_iter(), "upgrade"));
        let lines: [&[u8]; 1] = [b"upgrade-insecure"];
        assert!(!has_token(lines.into_iter(), "upgrade"));
    }

    #[test]
    fn trimming_whitespace_only_value_gives_empty() {
        assert_eq!(trim_ows(b" \t "), b"");
        assert_eq!(trim_ows(b"\ta b "), b"a b");
        assert_eq!(trim_ows(b""), b"");
    }

    #[test]
    fn extra_headers_with_line_breaks_are_refused() {
        let bad = [("X-Ok", "fine"), ("X-Bad", "a\r\nInjected: yes")];
        assert_eq!(
            check_extra_headers(&bad, &[]),
            Err(ApiMisuse::InvalidHeaderValue { index: 1 })
        );
        assert_eq!(
            check_extra_headers(&[("Bad Name", "x")], &[]),
            Err(ApiMisuse::InvalidHeaderName { index: 0 })
        );
        assert_eq!(
            check_extra_headers(&[("content-length", "1")], &["Content-Length"]),
            Err(ApiMisuse::ReservedHeader { index: 0 })
        );
    }

    #[test]
    fn header_storage_beyond_the_stack_array_is_available() {
        let len = with_header_storage(HeadLimits::STACK_HEADERS + 1, |h| h.len());
        assert_eq!(len, HeadLimits::STACK_HEADERS + 1);
        assert_eq!(with_header_storage(3, |h| h.len()), 3);
    }
}
