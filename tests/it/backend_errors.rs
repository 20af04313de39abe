//! Filled in by the backend-errors work.
