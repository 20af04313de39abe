//! Filled in by the proto work.
