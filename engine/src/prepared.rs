//! [`PreparedMessage`]: a message framed once and sent to any number of
//! connections by reference.

use std::fmt;
use std::sync::{Arc, OnceLock};

use shardcast_proto::deflate::Deflater;
use shardcast_proto::frame::{Encoder, OpCode};
use shardcast_proto::role::Server;

/// The frames of one message: the plain frame, made at once, and the
/// compressed one, made by the first send to a connection that negotiated
/// permessage-deflate (`None` inside when compressing does not pay).
struct Frames {
    /// Text or Binary.
    opcode: OpCode,
    /// Header length in `plain`: the payload follows it.
    header_len: usize,
    plain: Arc<[u8]>,
    compressed: OnceLock<Option<Arc<[u8]>>>,
}

/// A text or binary message framed once, for sending to many connections
/// with [`Conn::send_prepared`](crate::Conn::send_prepared).
///
/// Each recipient's send queue holds a reference to the same frame: the
/// payload is neither copied nor framed again per connection. For
/// connections that negotiated permessage-deflate, the message is
/// compressed once, by the first such send, and that frame is shared in
/// turn. Cloning is cheap (a reference count), and a prepared message may
/// be sent from any shard.
///
/// A message can be marked [droppable](PreparedMessage::droppable): when
/// it would take a slow connection's send buffer past its limit, it is
/// dropped for that connection instead of closing the connection (unless
/// the server's [`Backpressure`](crate::Backpressure) policy says to close
/// anyway). Fit for updates that a newer one replaces, such as prices or
/// positions.
///
/// ```
/// use shardcast::PreparedMessage;
///
/// let tick = PreparedMessage::text("{\"price\":101.5}").droppable();
/// assert_eq!(tick.payload(), b"{\"price\":101.5}");
/// assert!(tick.is_droppable());
/// ```
#[derive(Clone)]
pub struct PreparedMessage {
    frames: Arc<Frames>,
    droppable: bool,
}

impl fmt::Debug for PreparedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedMessage")
            .field("text", &self.is_text())
            .field("len", &self.payload().len())
            .field("droppable", &self.droppable)
            .finish_non_exhaustive()
    }
}

impl PreparedMessage {
    /// A text message.
    #[must_use]
    pub fn text(text: &str) -> PreparedMessage {
        PreparedMessage::new(OpCode::Text, text.as_bytes())
    }

    /// A binary message.
    #[must_use]
    pub fn binary(payload: &[u8]) -> PreparedMessage {
        PreparedMessage::new(OpCode::Binary, payload)
    }

    fn new(opcode: OpCode, payload: &[u8]) -> PreparedMessage {
        let mut plain = Vec::new();
        Encoder::<Server>::new().frame(&mut plain, opcode, true, payload, ());
        PreparedMessage {
            frames: Arc::new(Frames {
                opcode,
                header_len: plain.len() - payload.len(),
                plain: plain.into(),
                compressed: OnceLock::new(),
            }),
            droppable: false,
        }
    }

    /// The same message, marked droppable: under backpressure it is
    /// dropped for the slow connection rather than closing it.
    #[must_use]
    pub fn droppable(mut self) -> PreparedMessage {
        self.droppable = true;
        self
    }

    /// Whether the message is marked droppable.
    #[must_use]
    pub fn is_droppable(&self) -> bool {
        self.droppable
    }

    /// Whether the message is text (else binary).
    #[must_use]
    pub fn is_text(&self) -> bool {
        self.frames.opcode == OpCode::Text
    }

    /// The message's payload.
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        &self.frames.plain[self.frames.header_len..]
    }

    /// The uncompressed frame.
    pub(crate) fn plain_frame(&self) -> &Arc<[u8]> {
        &self.frames.plain
    }

    /// The compressed frame, made now if this is the first call, or `None`
    /// when the message is under the encoder's compression threshold or
    /// does not shrink.
    pub(crate) fn compressed_frame(
        &self,
        encoder: &Encoder<Server>,
        deflater: &mut Deflater,
    ) -> Option<&Arc<[u8]>> {
        self.frames
            .compressed
            .get_or_init(|| {
                let mut frame = Vec::new();
                let opcode = self.frames.opcode;
                encoder
                    .message(&mut frame, opcode, self.payload(), Some(deflater), ())
                    .then(|| frame.into())
            })
            .as_ref()
    }
}
