//! Helpers shared by the cross-crate tests in `tests/tests/`.

pub mod guests;
pub mod reference;
pub mod reference_arm64;
pub mod reference_tools;
pub mod sparse;
pub mod synth;
pub mod synth_arm64;
