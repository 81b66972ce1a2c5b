//! `Sec-WebSocket-Extensions` syntax (RFC 6455 §9.1): a comma-separated list
//! of extensions, each a name followed by `; param` or `; param=value`
//! parameters, values being tokens or quoted strings.
//!
//! This module knows the syntax only; what a parameter means is decided by
//! the extension's negotiation (`crate::deflate` for permessage-deflate).

use std::borrow::Cow;

use super::http::is_tchar;

/// A `Sec-WebSocket-Extensions` value that does not follow RFC 6455 §9.1.
///
/// Parsing stops at the first such error within one header line; the next
/// header line, if any, is parsed on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed Sec-WebSocket-Extensions value")]
pub struct ExtensionSyntaxError;

/// One extension in a `Sec-WebSocket-Extensions` list: an offer in a
/// request, or an acceptance in a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extension<'b> {
    name: &'b str,
    /// The parameter part, already checked to be well-formed.
    params: &'b [u8],
}

impl<'b> Extension<'b> {
    /// The extension's name, such as `permessage-deflate` (compare it
    /// case-insensitively).
    pub fn name(&self) -> &'b str {
        self.name
    }

    /// The extension's parameters, in the order they were sent, duplicates
    /// included (an extension's negotiation decides what a duplicate means).
    pub fn params(&self) -> impl Iterator<Item = ExtensionParam<'b>> + use<'b> {
        let mut cursor = Cursor { rest: self.params };
        std::iter::from_fn(move || cursor.param().and_then(Result::ok))
    }
}

/// One parameter of an [`Extension`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtensionParam<'b> {
    /// The parameter's name (compare it case-insensitively).
    pub name: &'b str,
    /// The parameter's value with quotes and escapes removed, or `None` for
    /// a parameter sent without `=`. Borrowed unless the value was a quoted
    /// string containing backslash escapes.
    pub value: Option<Cow<'b, str>>,
}

/// Parses every extension in the given `Sec-WebSocket-Extensions` header
/// values, in order, without allocating (unless a quoted value has escapes).
///
/// A syntax error is yielded once and ends that header line; the following
/// lines are still parsed. [`UpgradeRequest::extensions`] applies it to a
/// request.
///
/// [`UpgradeRequest::extensions`]: super::UpgradeRequest::extensions
pub fn parse_extensions<'b>(
    values: impl Iterator<Item = &'b [u8]>,
) -> impl Iterator<Item = Result<Extension<'b>, ExtensionSyntaxError>> {
    values.flat_map(|value| {
        let mut cursor = Cursor { rest: value };
        let mut failed = false;
        std::iter::from_fn(move || {
            if failed {
                return None;
            }
            let item = cursor.extension();
            failed = matches!(item, Some(Err(_)));
            item
        })
    })
}

/// A position in a header value, consumed from the front.
struct Cursor<'b> {
    rest: &'b [u8],
}

impl<'b> Cursor<'b> {
    fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    fn bump(&mut self) {
        self.rest = self.rest.get(1..).unwrap_or_default();
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.bump();
        }
    }

    /// Takes a non-empty token.
    fn token(&mut self) -> Result<&'b str, ExtensionSyntaxError> {
        let len = self
            .rest
            .iter()
            .position(|&b| !is_tchar(b))
            .unwrap_or(self.rest.len());
        let (token, rest) = self.rest.split_at(len);
        if token.is_empty() {
            return Err(ExtensionSyntaxError);
        }
        self.rest = rest;
        // Token characters are ASCII.
        std::str::from_utf8(token).map_err(|_| ExtensionSyntaxError)
    }

    /// Takes a quoted string, the opening quote being next, and returns its
    /// content with escapes removed.
    fn quoted(&mut self) -> Result<Cow<'b, str>, ExtensionSyntaxError> {
        self.bump();
        let mut escaped = false;
        let mut has_escapes = false;
        for (i, &b) in self.rest.iter().enumerate() {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
                has_escapes = true;
            } else if b == b'"' {
                let raw = self.rest.get(..i).unwrap_or_default();
                self.rest = self.rest.get(i + 1..).unwrap_or_default();
                let text = std::str::from_utf8(raw).map_err(|_| ExtensionSyntaxError)?;
                if !has_escapes {
                    return Ok(Cow::Borrowed(text));
                }
                let mut unescaped = String::with_capacity(text.len());
                let mut chars = text.chars();
                while let Some(c) = chars.next() {
                    unescaped.push(if c == '\\' {
                        chars.next().unwrap_or(c)
                    } else {
                        c
                    });
                }
                return Ok(Cow::Owned(unescaped));
            } else if b.is_ascii_control() && b != b'\t' {
                return Err(ExtensionSyntaxError);
            }
        }
        Err(ExtensionSyntaxError)
    }

    /// Takes `; name` or `; name = value` if next, after optional
    /// whitespace; `None` at a comma or the end.
    fn param(&mut self) -> Option<Result<ExtensionParam<'b>, ExtensionSyntaxError>> {
        self.skip_ows();
        match self.peek()? {
            b';' => self.bump(),
            b',' => return None,
            _ => return Some(Err(ExtensionSyntaxError)),
        }
        Some(self.param_body())
    }

    fn param_body(&mut self) -> Result<ExtensionParam<'b>, ExtensionSyntaxError> {
        self.skip_ows();
        let name = self.token()?;
        self.skip_ows();
        if self.peek() != Some(b'=') {
            return Ok(ExtensionParam { name, value: None });
        }
        self.bump();
        self.skip_ows();
        let value = if self.peek() == Some(b'"') {
            self.quoted()?
        } else {
            Cow::Borrowed(self.token()?)
        };
        Ok(ExtensionParam {
            name,
            value: Some(value),
        })
    }

    /// Takes the next list element: an extension name and its parameters,
    /// skipping empty elements; `None` at the end.
    fn extension(&mut self) -> Option<Result<Extension<'b>, ExtensionSyntaxError>> {
        loop {
            self.skip_ows();
            match self.peek()? {
                b',' => self.bump(),
                _ => break,
            }
        }
        let name = match self.token() {
            Ok(name) => name,
            Err(error) => return Some(Err(error)),
        };
        let params_start = self.rest;
        while let Some(param) = self.param() {
            if let Err(error) = param {
                return Some(Err(error));
            }
        }
        let params_len = params_start.len().saturating_sub(self.rest.len());
        // Step over the comma that ended the element, if any.
        self.bump();
        Some(Ok(Extension {
            name,
            params: params_start.get(..params_len).unwrap_or_default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An extension's name and parameters, owned, or a syntax error.
    type Parsed = Result<(String, Vec<(String, Option<String>)>), ()>;

    fn parse(lines: &[&'static str]) -> Vec<Parsed> {
        parse_extensions(lines.iter().map(|l| l.as_bytes()))
            .map(|ext| {
                ext.map(|ext| {
                    let params = ext
                        .params()
                        .map(|p| (p.name.to_owned(), p.value.map(Cow::into_owned)))
                        .collect();
                    (ext.name().to_owned(), params)
                })
                .map_err(|_| ())
            })
            .collect()
    }

    fn ext(name: &str, params: &[(&str, Option<&str>)]) -> Parsed {
        Ok((
            name.to_owned(),
            params
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.map(str::to_owned)))
                .collect(),
        ))
    }

    #[test]
    fn extension_offers_are_split_on_commas_with_their_params() {
        let parsed = parse(&[
            "permessage-deflate; client_max_window_bits, permessage-deflate;server_max_window_bits=10",
        ]);
        assert_eq!(
            parsed,
            [
                ext("permessage-deflate", &[("client_max_window_bits", None)]),
                ext(
                    "permessage-deflate",
                    &[("server_max_window_bits", Some("10"))]
                ),
            ]
        );
    }

    #[test]
    fn extension_values_may_be_quoted_strings_with_escapes() {
        let parsed = parse(&[r#"x; a="15"; b = "q\"u,o;te" ; c"#]);
        assert_eq!(
            parsed,
            [ext(
                "x",
                &[("a", Some("15")), ("b", Some("q\"u,o;te")), ("c", None)]
            )]
        );
    }

    #[test]
    fn extension_lists_tolerate_whitespace_and_empty_elements() {
        let parsed = parse(&[" , a ;\tp = 1 ,, b ,", "c"]);
        assert_eq!(
            parsed,
            [ext("a", &[("p", Some("1"))]), ext("b", &[]), ext("c", &[])]
        );
    }

    #[test]
    fn extension_syntax_error_ends_only_its_header_line() {
        let parsed = parse(&["a; =1, b", "c"]);
        assert_eq!(parsed, [Err(()), ext("c", &[])]);
        for bad in [
            "a b",
            "a; p=",
            "a; p=\"open",
            "a;",
            "; p",
            "a; p=1 2",
            "a; p=\"\u{1}\"",
        ] {
            assert_eq!(parse(&[bad]).first(), Some(&Err(())), "{bad:?}");
        }
    }
}
