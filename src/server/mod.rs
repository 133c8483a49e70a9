//! The tokio CAPF listener (in progress).
