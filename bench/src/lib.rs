//! shardcast-bench: load generator, peer servers and the BENCHMARKS.md report. Arrives with the benchmark issue; a placeholder in the workspace until then.
