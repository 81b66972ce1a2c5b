//! shardcast-tune: host inspection, per-core plans and sweeps. Arrives with the tuning issue; a placeholder in the workspace until then.
