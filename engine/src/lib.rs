//! The shardcast engine: thread-per-core io_uring shards, connections, rooms and the HTTP side. Arrives with the engine issue; this crate is a placeholder in the workspace until then.
