//! Integration tests live in `tests/`; each file is one test binary sharing one local broker.
