//! Every test of the tier lives under `node_tier::`, so the suite's main `cargo test` stage leaves
//! them to the node stage with `--skip node_tier::`, and the node stage runs them all.

mod chart;
mod cluster;
mod late_targets;
mod release;
mod upgrade;
mod workloads;
