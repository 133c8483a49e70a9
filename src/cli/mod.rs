//! The `capf` command line (in progress).
