//! Integration tests live in `tests/`; each file is one test binary sharing one local broker.
//! This library holds what several of them use.
//!
//! # Layout
//! - `history`: the event recorder and checker of the fault suite.

pub mod history;
