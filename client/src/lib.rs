//! shardcast-client: the Rust client with reconnection, session resume and batching. Arrives with the sessions issue; a placeholder in the workspace until then.
