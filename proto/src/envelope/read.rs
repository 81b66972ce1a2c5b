//! Reading envelopes: verification limits, the verifying reader, and the
//! iterator that makes a batch and a single envelope look the same.

use flatbuffers::{ForwardsUOffset, VectorIter, VerifierOptions};

use super::shardcast_generated::shardcast::v_1::root_as_envelope_with_opts;
use super::{Body, ENVELOPE_IDENTIFIER, Envelope, EnvelopeError};

/// Bounds on what [`read`] accepts, so that a hostile peer cannot make the
/// verifier (or the code that reads the envelope after it) do unbounded
/// work.
///
/// The defaults fit every envelope this crate writes with up to a few
/// thousand batch items or rooms, and keep verification of one message to
/// well under a millisecond. A server that accepts only small envelopes
/// from clients should lower them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyLimits {
    /// Largest envelope accepted, in bytes. Default: 1 MiB.
    pub max_bytes: usize,
    /// Deepest nesting of tables. The deepest legal envelope is a batch
    /// item holding a `Welcome` with rooms, at depth 5. Default: 8.
    pub max_depth: usize,
    /// Most tables in one envelope (each batch item counts two: the item
    /// and its body; each room of a `Welcome` or `Resume` one).
    /// Default: 8192.
    pub max_tables: usize,
    /// Largest size of the envelope read as a tree, in bytes. FlatBuffers
    /// may share one object between several references; this caps the
    /// bytes a reader could visit by following each of them. Default: 2 MiB.
    pub max_apparent_size: usize,
}

impl VerifyLimits {
    /// The default limits, usable in `const` context.
    pub const DEFAULT: VerifyLimits = VerifyLimits {
        max_bytes: 1 << 20,
        max_depth: 8,
        max_tables: 8192,
        max_apparent_size: 2 << 20,
    };

    /// The FlatBuffers verifier options these limits stand for. Strings
    /// must be NUL-terminated, as FlatBuffers writes them.
    pub fn verifier_options(&self) -> VerifierOptions {
        VerifierOptions {
            max_depth: self.max_depth,
            max_tables: self.max_tables,
            max_apparent_size: self.max_apparent_size,
            ..VerifierOptions::default()
        }
    }
}

impl Default for VerifyLimits {
    fn default() -> Self {
        VerifyLimits::DEFAULT
    }
}

/// Verifies `bytes` as one `shardcast.v1` envelope and returns a zero-copy
/// view of it.
///
/// Every byte from the network goes through here before any field is
/// read: the size limit and the `SCV1` identifier are checked first, then
/// the FlatBuffers verifier checks every offset, string and table against
/// `limits`, then the protocol rules the schema cannot express: the
/// envelope has a body, and a batch's items have bodies and are not
/// batches. After that, every accessor of the returned view is safe to
/// call.
///
/// A body kind newer than this schema is let through (its
/// `body_type()` matches none of the known [`Body`] values), so that an
/// older reader can skip what a newer writer added.
pub fn read<'b>(bytes: &'b [u8], limits: &VerifyLimits) -> Result<Envelope<'b>, EnvelopeError> {
    if bytes.is_empty() {
        return Err(EnvelopeError::Empty);
    }
    if bytes.len() > limits.max_bytes {
        return Err(EnvelopeError::TooLarge {
            size: bytes.len(),
            max: limits.max_bytes,
        });
    }
    if bytes.get(4..8) != Some(ENVELOPE_IDENTIFIER.as_bytes()) {
        return Err(EnvelopeError::WrongIdentifier);
    }
    let envelope = root_as_envelope_with_opts(&limits.verifier_options(), bytes)?;
    match envelope.body_type() {
        Body::NONE => return Err(EnvelopeError::MissingBody),
        Body::Batch => {
            if let Some(items) = envelope.body_as_batch().and_then(|batch| batch.items()) {
                for item in items {
                    match item.body_type() {
                        Body::NONE => return Err(EnvelopeError::MissingBody),
                        Body::Batch => return Err(EnvelopeError::NestedBatch),
                        _ => {}
                    }
                }
            }
        }
        _ => {}
    }
    Ok(envelope)
}

/// The envelopes carried by `envelope`: its items if it is a batch (in
/// order; none for an empty batch), otherwise the envelope itself.
///
/// The engine handles every envelope through this, so a batched request
/// and a single one take the same path. Given an envelope from [`read`],
/// the iterator never yields a batch.
pub fn items(envelope: Envelope<'_>) -> Items<'_> {
    let inner = match envelope.body_as_batch() {
        Some(batch) => ItemsInner::Batch(batch.items().map(|items| items.iter())),
        None => ItemsInner::Single(Some(envelope)),
    };
    Items { inner }
}

/// Iterator over the envelopes of a single envelope or a batch; see
/// [`items`].
#[derive(Debug)]
pub struct Items<'a> {
    inner: ItemsInner<'a>,
}

#[derive(Debug)]
enum ItemsInner<'a> {
    Single(Option<Envelope<'a>>),
    Batch(Option<VectorIter<'a, ForwardsUOffset<Envelope<'a>>>>),
}

impl<'a> Iterator for Items<'a> {
    type Item = Envelope<'a>;

    fn next(&mut self) -> Option<Envelope<'a>> {
        match &mut self.inner {
            ItemsInner::Single(envelope) => envelope.take(),
            ItemsInner::Batch(items) => items.as_mut().and_then(Iterator::next),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let len = match &self.inner {
            ItemsInner::Single(envelope) => usize::from(envelope.is_some()),
            ItemsInner::Batch(items) => items.as_ref().map_or(0, ExactSizeIterator::len),
        };
        (len, Some(len))
    }
}

impl ExactSizeIterator for Items<'_> {}

/// The bytes of an optional `[ubyte]` field (a payload, a token): empty
/// when the field is absent, which is how writers encode an empty one.
pub fn bytes(vector: Option<flatbuffers::Vector<'_, u8>>) -> &[u8] {
    vector.map_or(&[], |vector| vector.bytes())
}
