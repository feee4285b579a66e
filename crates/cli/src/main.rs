//! Placeholder replaced by the CLI work in progress.
fn main() {}
