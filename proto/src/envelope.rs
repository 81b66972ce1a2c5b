//! The shardcast.v1 FlatBuffers envelope.
