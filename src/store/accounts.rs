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
    serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
        key: format!("web_accounts/{}", String::from_utf8_lossy(key)),
        reason: format!("bad account record: {e}"),
    })
}

pub(super) fn encode(account: &WebAccount) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(account).map_err(StoreError::Encode)
}
