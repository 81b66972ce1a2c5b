//! permessage-deflate negotiation (RFC 7692 §7.1), both roles.
//!
//! One fact shapes every rule here: our compressor and decompressor
//! (libdeflater) work on whole messages, always compress with a 32 KiB
//! window, and keep no state between messages. So we:
//! - always run without context takeover in both directions: the server
//!   answers `server_no_context_takeover; client_no_context_takeover`
//!   (RFC 7692 §7.1.1.1 lets a server add the client one unasked), and the
//!   client asks for both;
//! - never agree to compress with a window under 15 bits, because we could
//!   not keep that promise: a server declines offers with a lower
//!   `server_max_window_bits`, a client fails on a lower
//!   `client_max_window_bits`;
//! - never limit the peer's window, which a whole-message inflater does not
//!   need.

use crate::handshake::{Extension, ExtensionSyntaxError};

/// The extension's registered name.
const NAME: &str = "permessage-deflate";

/// The `Sec-WebSocket-Extensions` value our client sends.
pub(crate) const CLIENT_OFFER: &str =
    "permessage-deflate; client_no_context_takeover; server_no_context_takeover";

/// Whether a server negotiates permessage-deflate.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// Accept a client's permessage-deflate offer when one is acceptable.
    ///
    /// Default: true. Compression is applied per message only when it saves
    /// bytes, so enabling it costs CPU on large messages and nothing on the
    /// wire; disable it to spend no CPU on compression at all.
    pub enabled: bool,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig { enabled: true }
    }
}

/// What both ends agreed on for permessage-deflate: what the frame codec
/// needs to compress and inflate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server compresses each message without the previous ones'
    /// history. Always true: we require it from servers and promise it as
    /// one.
    pub server_no_context_takeover: bool,
    /// The client compresses each message without the previous ones'
    /// history. Always true when we are the server; when we are the client,
    /// whether the server said so (we compress each message alone anyway).
    pub client_no_context_takeover: bool,
    /// Base-2 logarithm of the server's largest LZ77 window, 8 to 15.
    pub server_max_window_bits: u8,
    /// Base-2 logarithm of the client's largest LZ77 window, 8 to 15.
    pub client_max_window_bits: u8,
}

impl DeflateParams {
    /// The largest message, in bytes, the server may send compressed.
    ///
    /// libdeflate always compresses with a 32 KiB window. A message no
    /// longer than `2^server_max_window_bits` bytes cannot refer further
    /// back than that window (each message is compressed alone), so it may
    /// be compressed whatever the client allowed; a longer one goes
    /// uncompressed, which permessage-deflate permits message by message.
    #[must_use]
    pub fn server_compression_limit(&self) -> usize {
        window_limit(self.server_max_window_bits)
    }
}

/// No limit for a full 32 KiB window, else the window's size in bytes.
fn window_limit(bits: u8) -> usize {
    if bits >= 15 { usize::MAX } else { 1 << bits }
}

/// Why a client fails the handshake on the server's
/// `Sec-WebSocket-Extensions` (RFC 7692 §7.1: the client must fail the
/// connection on a response it cannot accept).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeflateResponseError {
    /// The header does not follow the extension list syntax.
    #[error(transparent)]
    Syntax(#[from] ExtensionSyntaxError),
    /// The server accepted an extension we did not offer.
    #[error("server accepted an extension that was not offered")]
    UnofferedExtension,
    /// The server accepted permessage-deflate more than once.
    #[error("server accepted permessage-deflate more than once")]
    DuplicateExtension,
    /// A parameter RFC 7692 does not define.
    #[error("unknown permessage-deflate parameter")]
    UnknownParameter,
    /// A parameter given twice.
    #[error("repeated permessage-deflate parameter")]
    DuplicateParameter,
    /// A parameter with a missing, unexpected or out-of-range value.
    #[error("invalid permessage-deflate parameter value")]
    InvalidParameterValue,
    /// The server did not agree to `server_no_context_takeover`, which we
    /// need to inflate each message on its own.
    #[error("server did not accept server_no_context_takeover")]
    MissingServerNoContextTakeover,
    /// The server asks us to compress with a window under 32 KiB, which
    /// libdeflater cannot do.
    #[error("server limits our compression window to {0} bits; only 15 is supported")]
    ClientWindowTooSmall(u8),
}

/// A server's acceptance of one permessage-deflate offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DeflateAcceptance {
    /// The parameters for the codec.
    pub(crate) params: DeflateParams,
    /// The offer named `server_max_window_bits`: the response echoes it.
    echo_server_max_window_bits: bool,
}

impl DeflateAcceptance {
    /// Appends the `Sec-WebSocket-Extensions` response value.
    pub(crate) fn write_response_value(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(
            b"permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        );
        if self.echo_server_max_window_bits {
            out.extend_from_slice(b"; server_max_window_bits=");
            let bits = self.params.server_max_window_bits;
            if bits >= 10 {
                out.push(b'1');
            }
            out.push(b'0' + bits % 10);
        }
    }
}

/// Why one parameter list is unacceptable.
enum ParamError {
    Unknown,
    Duplicate,
    InvalidValue,
}

impl From<ParamError> for DeflateResponseError {
    fn from(error: ParamError) -> Self {
        match error {
            ParamError::Unknown => DeflateResponseError::UnknownParameter,
            ParamError::Duplicate => DeflateResponseError::DuplicateParameter,
            ParamError::InvalidValue => DeflateResponseError::InvalidParameterValue,
        }
    }
}

/// The parameters of one permessage-deflate offer or response.
#[derive(Default)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    /// `Some(bits)` when present (a value is required).
    server_max_window_bits: Option<u8>,
    /// `Some(None)` when present without a value (allowed in offers only).
    client_max_window_bits: Option<Option<u8>>,
}

/// Parses a window bits value: a decimal 8 to 15, no sign, no leading zero
/// (RFC 7692 §7.1.2.1).
fn window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

/// The parameters RFC 7692 defines.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Known {
    ServerNoContextTakeover,
    ClientNoContextTakeover,
    ServerMaxWindowBits,
    ClientMaxWindowBits,
}

impl Known {
    /// Recognises a parameter name, ignoring ASCII case.
    fn from_name(name: &str) -> Option<Known> {
        [
            ("server_no_context_takeover", Known::ServerNoContextTakeover),
            ("client_no_context_takeover", Known::ClientNoContextTakeover),
            ("server_max_window_bits", Known::ServerMaxWindowBits),
            ("client_max_window_bits", Known::ClientMaxWindowBits),
        ]
        .into_iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(name))
        .map(|(_, param)| param)
    }
}

/// Reads the parameters of one permessage-deflate element. `in_offer`
/// allows `client_max_window_bits` without a value, as only offers may
/// send it so (RFC 7692 §7.1.2.2).
fn parse_params(extension: &Extension<'_>, in_offer: bool) -> Result<Params, ParamError> {
    let mut params = Params::default();
    for param in extension.params() {
        let value = param.value.as_deref();
        match Known::from_name(param.name).ok_or(ParamError::Unknown)? {
            known @ (Known::ServerNoContextTakeover | Known::ClientNoContextTakeover) => {
                let flag = if known == Known::ServerNoContextTakeover {
                    &mut params.server_no_context_takeover
                } else {
                    &mut params.client_no_context_takeover
                };
                if *flag {
                    return Err(ParamError::Duplicate);
                }
                if value.is_some() {
                    return Err(ParamError::InvalidValue);
                }
                *flag = true;
            }
            Known::ServerMaxWindowBits => {
                if params.server_max_window_bits.is_some() {
                    return Err(ParamError::Duplicate);
                }
                let bits = value
                    .and_then(window_bits)
                    .ok_or(ParamError::InvalidValue)?;
                params.server_max_window_bits = Some(bits);
            }
            Known::ClientMaxWindowBits => {
                if params.client_max_window_bits.is_some() {
                    return Err(ParamError::Duplicate);
                }
                let bits = match value {
                    None if in_offer => None,
                    None => return Err(ParamError::InvalidValue),
                    Some(value) => Some(window_bits(value).ok_or(ParamError::InvalidValue)?),
                };
                params.client_max_window_bits = Some(bits);
            }
        }
    }
    Ok(params)
}

/// The server's choice among a client's extension offers: the first
/// permessage-deflate offer we can honour, or `None`.
///
/// Offers are declined (and the next one tried) for an unknown or repeated
/// parameter or an invalid value. A `server_max_window_bits` under 15 is
/// accepted and echoed: messages longer than that window are then sent
/// uncompressed ([`DeflateParams::server_compression_limit`]).
/// Other extensions are ignored. A malformed header ends the search with
/// `None`: nothing after the error can be trusted, and running without
/// compression is always valid.
pub(crate) fn accept_offers<'b>(
    offers: impl Iterator<Item = Result<Extension<'b>, ExtensionSyntaxError>>,
) -> Option<DeflateAcceptance> {
    for offer in offers {
        let offer = offer.ok()?;
        if !offer.name().eq_ignore_ascii_case(NAME) {
            continue;
        }
        let Ok(params) = parse_params(&offer, true) else {
            continue;
        };
        return Some(DeflateAcceptance {
            params: DeflateParams {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                server_max_window_bits: params.server_max_window_bits.unwrap_or(15),
                client_max_window_bits: params.client_max_window_bits.flatten().unwrap_or(15),
            },
            echo_server_max_window_bits: params.server_max_window_bits.is_some(),
        });
    }
    None
}

/// The client's check of the server's `Sec-WebSocket-Extensions`:
/// `Ok(None)` without extensions (no compression), the agreed parameters
/// for an acceptable permessage-deflate response, an error otherwise.
///
/// `offered` says whether we offered permessage-deflate ([`CLIENT_OFFER`]).
/// A `client_max_window_bits` of 15 is accepted although we did not offer
/// the parameter: it limits nothing.
pub(crate) fn validate_response<'b>(
    offered: bool,
    extensions: impl Iterator<Item = Result<Extension<'b>, ExtensionSyntaxError>>,
) -> Result<Option<DeflateParams>, DeflateResponseError> {
    let mut agreed = None;
    for extension in extensions {
        let extension = extension?;
        if !offered || !extension.name().eq_ignore_ascii_case(NAME) {
            return Err(DeflateResponseError::UnofferedExtension);
        }
        if agreed.is_some() {
            return Err(DeflateResponseError::DuplicateExtension);
        }
        let params = parse_params(&extension, false)?;
        if !params.server_no_context_takeover {
            return Err(DeflateResponseError::MissingServerNoContextTakeover);
        }
        if let Some(Some(bits @ 8..=14)) = params.client_max_window_bits {
            return Err(DeflateResponseError::ClientWindowTooSmall(bits));
        }
        agreed = Some(DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: params.client_no_context_takeover,
            server_max_window_bits: params.server_max_window_bits.unwrap_or(15),
            client_max_window_bits: 15,
        });
    }
    Ok(agreed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exts<'a>(
        lines: &'a [&'a str],
    ) -> impl Iterator<Item = Result<Extension<'a>, ExtensionSyntaxError>> {
        crate::handshake::parse_extensions(lines.iter().map(|l| l.as_bytes()))
    }

    fn accepted(lines: &[&str]) -> Option<(DeflateParams, String)> {
        accept_offers(exts(lines)).map(|acceptance| {
            let mut out = Vec::new();
            acceptance.write_response_value(&mut out);
            (acceptance.params, String::from_utf8(out).unwrap())
        })
    }

    const SERVER_ANSWER: &str =
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    fn server_params(client_max_window_bits: u8) -> DeflateParams {
        DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: 15,
            client_max_window_bits,
        }
    }

    #[test]
    fn server_accepts_plain_offer_without_context_takeover_both_ways() {
        assert_eq!(
            accepted(&["permessage-deflate"]),
            Some((server_params(15), SERVER_ANSWER.to_owned()))
        );
    }

    #[test]
    fn server_adds_client_no_context_takeover_and_never_sends_client_max_window_bits() {
        let (params, answer) = accepted(&["permessage-deflate; client_max_window_bits"]).unwrap();
        assert_eq!(params, server_params(15));
        assert_eq!(answer, SERVER_ANSWER);
        let (params, answer) =
            accepted(&["permessage-deflate; client_max_window_bits=10"]).unwrap();
        assert_eq!(params, server_params(10));
        assert!(!answer.contains("client_max_window_bits"));
    }

    #[test]
    fn server_echoes_server_max_window_bits_15_only_if_offered() {
        let (_, answer) = accepted(&["permessage-deflate; server_max_window_bits=15"]).unwrap();
        assert_eq!(
            answer,
            format!("{SERVER_ANSWER}; server_max_window_bits=15")
        );
        let (_, answer) = accepted(&["permessage-deflate; server_max_window_bits=\"15\""]).unwrap();
        assert_eq!(
            answer,
            format!("{SERVER_ANSWER}; server_max_window_bits=15")
        );
    }

    #[test]
    fn server_accepts_a_smaller_server_window_and_echoes_it() {
        for bits in 8..=14u8 {
            let offer = format!("permessage-deflate; server_max_window_bits={bits}");
            let (params, answer) = accepted(&[offer.as_str()]).unwrap();
            assert_eq!(params.server_max_window_bits, bits);
            assert_eq!(
                answer,
                format!("{SERVER_ANSWER}; server_max_window_bits={bits}")
            );
        }
    }

    #[test]
    fn server_compresses_only_messages_that_fit_the_agreed_window() {
        let (params, _) = accepted(&["permessage-deflate; server_max_window_bits=9"]).unwrap();
        assert_eq!(params.server_compression_limit(), 512);
        let (params, _) = accepted(&["permessage-deflate; server_max_window_bits=15"]).unwrap();
        assert_eq!(params.server_compression_limit(), usize::MAX);
        assert_eq!(server_params(15).server_compression_limit(), usize::MAX);
    }

    #[test]
    fn server_declines_offer_with_unknown_parameter() {
        assert_eq!(accepted(&["permessage-deflate; x_fast"]), None);
        assert!(accepted(&["permessage-deflate; x_fast", "permessage-deflate"]).is_some());
    }

    #[test]
    fn server_declines_offer_with_duplicate_parameter() {
        for offer in [
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=9",
            "permessage-deflate; server_max_window_bits=15; server_max_window_bits=15",
        ] {
            assert_eq!(accepted(&[offer]), None, "{offer}");
        }
    }

    #[test]
    fn server_declines_offer_with_invalid_values() {
        for offer in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=015",
            "permessage-deflate; server_max_window_bits=+15",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover=true",
        ] {
            assert_eq!(accepted(&[offer]), None, "{offer}");
        }
    }

    #[test]
    fn server_ignores_unknown_extensions() {
        let (params, _) = accepted(&["x-webkit-deflate-frame, permessage-deflate"]).unwrap();
        assert_eq!(params, server_params(15));
        assert_eq!(accepted(&["x-webkit-deflate-frame"]), None);
    }

    #[test]
    fn server_stops_negotiating_at_a_malformed_header() {
        assert_eq!(
            accepted(&["permessage-deflate; =", "permessage-deflate"]),
            None
        );
    }

    #[test]
    fn server_matches_names_case_insensitively() {
        assert!(accepted(&["PerMessage-Deflate; Client_Max_Window_Bits"]).is_some());
    }

    fn client(lines: &[&str]) -> Result<Option<DeflateParams>, DeflateResponseError> {
        validate_response(true, exts(lines))
    }

    #[test]
    fn client_offer_asks_for_no_context_takeover_both_ways() {
        assert_eq!(
            CLIENT_OFFER,
            "permessage-deflate; client_no_context_takeover; server_no_context_takeover"
        );
    }

    #[test]
    fn client_accepts_response_with_server_no_context_takeover() {
        assert_eq!(
            client(&["permessage-deflate; server_no_context_takeover"]),
            Ok(Some(DeflateParams {
                server_no_context_takeover: true,
                client_no_context_takeover: false,
                server_max_window_bits: 15,
                client_max_window_bits: 15,
            }))
        );
        assert_eq!(
            client(&[
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9"
            ]),
            Ok(Some(DeflateParams {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                server_max_window_bits: 9,
                client_max_window_bits: 15,
            }))
        );
    }

    #[test]
    fn client_without_extension_response_runs_uncompressed() {
        assert_eq!(client(&[]), Ok(None));
        assert_eq!(validate_response(false, exts(&[])), Ok(None));
    }

    #[test]
    fn client_fails_without_server_no_context_takeover() {
        assert_eq!(
            client(&["permessage-deflate"]),
            Err(DeflateResponseError::MissingServerNoContextTakeover)
        );
    }

    #[test]
    fn client_fails_on_client_max_window_bits_below_15() {
        assert_eq!(
            client(&["permessage-deflate; server_no_context_takeover; client_max_window_bits=10"]),
            Err(DeflateResponseError::ClientWindowTooSmall(10))
        );
        assert!(
            client(&["permessage-deflate; server_no_context_takeover; client_max_window_bits=15"])
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn client_fails_on_client_max_window_bits_without_value() {
        assert_eq!(
            client(&["permessage-deflate; server_no_context_takeover; client_max_window_bits"]),
            Err(DeflateResponseError::InvalidParameterValue)
        );
    }

    #[test]
    fn client_fails_on_unknown_duplicate_or_invalid_parameters() {
        assert_eq!(
            client(&["permessage-deflate; server_no_context_takeover; x"]),
            Err(DeflateResponseError::UnknownParameter)
        );
        assert_eq!(
            client(&["permessage-deflate; server_no_context_takeover; server_no_context_takeover"]),
            Err(DeflateResponseError::DuplicateParameter)
        );
        assert_eq!(
            client(&["permessage-deflate; server_no_context_takeover; server_max_window_bits=7"]),
            Err(DeflateResponseError::InvalidParameterValue)
        );
    }

    #[test]
    fn client_fails_on_unoffered_or_repeated_extension() {
        assert_eq!(
            client(&["x-foo"]),
            Err(DeflateResponseError::UnofferedExtension)
        );
        assert_eq!(
            validate_response(
                false,
                exts(&["permessage-deflate; server_no_context_takeover"])
            ),
            Err(DeflateResponseError::UnofferedExtension)
        );
        assert_eq!(
            client(&[
                "permessage-deflate; server_no_context_takeover",
                "permessage-deflate; server_no_context_takeover"
            ]),
            Err(DeflateResponseError::DuplicateExtension)
        );
    }

    #[test]
    fn client_fails_on_malformed_extension_header() {
        assert_eq!(
            client(&["permessage-deflate; server_no_context_takeover;"]),
            Err(DeflateResponseError::Syntax(ExtensionSyntaxError))
        );
    }
}
