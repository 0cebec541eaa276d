//! Criterion benchmarks for the midge crates. See `docs/benchmarks.md` for how to run them and
//! for the latest figures. This crate is never published.
