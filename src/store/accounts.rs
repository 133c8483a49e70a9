//! The web admin's accounts: the `web_accounts` tree, name -> JSON [`WebAccount`].
//!
//! An account holds its argon2id password hash (PHC string), never a password, and
//! its failed-login count and lockout, so that a lockout outlives a restart. Adding
//! and removing an account commits with its audit event, as every device change does;
//! a login's outcome is recorded the same way ([`Store::update_web_account`](super::Store::update_web_account)).

use super::StoreError;
use crate::model::UnixTime;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebAccount {
    pub name: String,
    /// argon2id, as a PHC string (`$argon2id$v=19$m=…`).
    pub password_hash: String,
    pub created: UnixTime,
    /// Failed logins since the last successful one.
    #[serde(default)]
    pub failed_logins: u32,
    #[serde(default)]
    pub locked_until: Option<UnixTime>,
    #[serde(default)]
    pub last_login: Option<UnixTime>,
}

pub(super) fn decode(key: &[u8], value: &[u8]) -> Result<WebAccount, StoreError> {
    let shown = || format!("web_accounts/{}", String::from_utf8_lossy(key));
    decode_json(value, "account", shown)
}

pub(super) fn encode(account: &WebAccount) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(account).map_err(StoreError::Encode)
}

/// A JSON record, or [`StoreError::Corrupt`] naming it (`key`) and what it should be.
fn decode_json<T: serde::de::DeserializeOwned>(
    value: &[u8],
    what: &str,
    key: impl Fn() -> String,
) -> Result<T, StoreError> {
    serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
        key: key(),
        reason: format!("bad {what} record: {e}"),
    })
}

/// A web admin session as the store keeps it, under the SHA-256 of its token (the
/// token itself, the cookie's value, is never stored). Kept in the store rather than
/// in one process's memory so that a restart does not log everyone out and every node
/// sharing a store knows every session (`web::session`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebSession {
    pub account: String,
    /// The session's CSRF token, which its forms carry.
    pub csrf: String,
    /// The SHA-256 of the account's password hash at login, hex (`web::session::Credential`).
    pub credential: String,
    pub created: UnixTime,
    pub last_seen: UnixTime,
}

/// The key a session is stored under: the SHA-256 of its token.
pub type SessionKey = [u8; 32];

pub(super) fn decode_session(key: &[u8], value: &[u8]) -> Result<WebSession, StoreError> {
    decode_json(value, "session", || {
        format!("web_sessions/{}", hex::encode(key))
    })
}

/// A stored session with its key, as a backend lists them: refused as corrupt when the
/// key is not 32 bytes.
pub(super) fn decode_session_entry(
    key: &[u8],
    value: &[u8],
) -> Result<(SessionKey, WebSession), StoreError> {
    let session_key = SessionKey::try_from(key).map_err(|_| StoreError::Corrupt {
        key: format!("web_sessions/{}", hex::encode(key)),
        reason: format!("a key of {} bytes, not 32", key.len()),
    })?;
    Ok((session_key, decode_session(key, value)?))
}

pub(super) fn encode_session(session: &WebSession) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(session).map_err(StoreError::Encode)
}
