//! Maintainer tasks: `cargo xtask help`.
fn main() {}
