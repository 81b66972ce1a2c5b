//! What the server does when a connection's peer reads slower than the
//! application writes to it: the `[backpressure]` policy and its close
//! code, as a config file writes them.

use serde::{Deserialize, Serialize};
use shardcast::{Backpressure, CloseCode};

/// The policy for a message that would take a send buffer past its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Policy {
    /// Close the connection with the close code.
    Close,
    /// Drop the message if the application marked it droppable; close
    /// with the close code otherwise.
    DropNewest,
}

/// A close code the server may send: 1000-1003, 1007-1014, or 3000-4999.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "u16", into = "u16")]
pub(crate) struct SendableCode(u16);

/// A close code that may not appear in a close frame.
#[derive(Debug, thiserror::Error)]
#[error(
    "{0} may not be sent in a close frame: use 1008 (policy violation), \
     1013 (try again later) or an application code from 3000 to 4999"
)]
pub(crate) struct UnsendableCode(u16);

impl TryFrom<u16> for SendableCode {
    type Error = UnsendableCode;

    fn try_from(code: u16) -> Result<SendableCode, UnsendableCode> {
        if CloseCode(code).is_allowed_on_wire() {
            Ok(SendableCode(code))
        } else {
            Err(UnsendableCode(code))
        }
    }
}

impl From<SendableCode> for u16 {
    fn from(code: SendableCode) -> u16 {
        code.0
    }
}

impl Policy {
    /// The library's policy, closing with `code`.
    pub(crate) fn with_code(self, code: SendableCode) -> Backpressure {
        let code = CloseCode(code.0);
        match self {
            Policy::Close => Backpressure::Close(code),
            Policy::DropNewest => Backpressure::DropNewest(code),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_that_may_not_be_sent_are_refused() {
        for code in [1000, 1008, 1013, 3000, 4999] {
            assert!(SendableCode::try_from(code).is_ok(), "{code}");
        }
        for code in [0, 999, 1005, 1006, 1015, 5000] {
            assert!(SendableCode::try_from(code).is_err(), "{code}");
        }
    }

    #[test]
    fn policies_map_to_the_library() {
        let code = SendableCode::try_from(1013).unwrap();
        assert_eq!(
            Policy::Close.with_code(code),
            Backpressure::Close(CloseCode::TRY_AGAIN_LATER)
        );
        assert_eq!(
            Policy::DropNewest.with_code(code),
            Backpressure::DropNewest(CloseCode::TRY_AGAIN_LATER)
        );
    }
}
