//! What every listener shares: binding, the accept loop, the table of live
//! connections (who gives way when it is full), the standing of peer addresses and the
//! per-address failure limit.
//!
//! The CAPF listener (`server`) and the configuration delivery servers
//! (`phone_config::http`, `phone_config::tftp`) sit on top of this; nothing here knows
//! what they speak.

mod accept;
mod connections;
mod limits;
mod standing;

pub use accept::accept_until;
pub use connections::{Connections, Slot};
pub use limits::{AttemptSlot, FailureLimiter, Refusal};

/// The addresses a running node's listeners are bound to (what commands run inside
/// the node, over the admin socket or from the web admin, report and check).
#[derive(Clone, Copy, Debug)]
pub struct Listening {
    pub capf: std::net::SocketAddr,
    pub http: Option<std::net::SocketAddr>,
    pub tftp: Option<std::net::SocketAddr>,
}

use std::net::SocketAddr;
use thiserror::Error;

/// A listener could not bind its address. The reason is part of the message and not
/// a `source`: shown with its causes (`capf: {e:#}`), it would otherwise read
/// "Address already in use" twice.
#[derive(Debug, Error)]
#[error("cannot listen on {addr}: {error}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub error: std::io::Error,
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
