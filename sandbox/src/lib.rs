//! Simulators of the Close API and of the Hull platform, used by tests, the demo and
//! benchmarks. Both talk real HTTP; see docs/sandbox.md.

pub mod close;
pub mod hull;
