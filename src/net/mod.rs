//! What every listener shares: binding, the accept loop and the per-address failure
//! limit.
//!
//! The CAPF listener (`server`) and the configuration delivery servers
//! (`phone_config::http`, `phone_config::tftp`) sit on top of this; nothing here knows
//! what they speak.

mod accept;
mod limits;

pub use accept::accept_until;
pub use limits::{AttemptSlot, FailureLimiter, Refusal};

use std::net::SocketAddr;
use thiserror::Error;

/// A listener could not bind its address.
#[derive(Debug, Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// A request target as it may appear in a log line: at most 128 characters, control
/// characters escaped. Phones' requests are untrusted text.
pub fn loggable(target: &str) -> String {
    let cut = target
        .char_indices()
        .nth(128)
        .map_or(target.len(), |(i, _)| i);
    target
        .get(..cut)
        .unwrap_or_default()
        .escape_debug()
        .to_string()
}
