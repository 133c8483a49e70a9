//! The web admin's accounts: the `web_accounts` tree, name -> JSON [`WebAccount`].
//!
//! An account holds its argon2id password hash (PHC string), never a password, and
//! its failed-login count and lockout, so that a lockout outlives a restart. Adding
//! and removing an account commits with its audit event, as every device change does;
//! a login's outcome is recorded the same way ([`Store::update_web_account`]).

use super::{abort, Store, StoreError};
use crate::model::{Event, UnixTime};
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

fn decode(key: &[u8], value: &[u8]) -> Result<WebAccount, StoreError> {
    serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
        key: format!("web_accounts/{}", String::from_utf8_lossy(key)),
        reason: format!("bad account record: {e}"),
    })
}

fn encode(account: &WebAccount) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(account).map_err(StoreError::Encode)
}

impl Store {
    pub fn web_account(&self, name: &str) -> Result<Option<WebAccount>, StoreError> {
        match self.web_accounts.get(name.as_bytes())? {
            None => Ok(None),
            Some(v) => decode(name.as_bytes(), &v).map(Some),
        }
    }

    /// Every account, in name order.
    pub fn web_accounts(&self) -> Result<Vec<WebAccount>, StoreError> {
        self.web_accounts
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode(&k, &v)
            })
            .collect()
    }

    /// Adds an account with its event; [`StoreError::AccountExists`] if the name is
    /// taken.
    pub fn add_web_account(&self, account: &WebAccount, event: Event) -> Result<(), StoreError> {
        let encoded = encode(account)?;
        self.transact(|t| {
            if t.web_accounts.get(account.name.as_bytes())?.is_some() {
                return Err(abort(StoreError::AccountExists(account.name.clone())));
            }
            t.web_accounts
                .insert(account.name.as_bytes(), encoded.as_slice())?;
            t.append_event(&event)?;
            Ok(())
        })
    }

    /// Removes an account with its event; `false` (and no event) if there was none.
    pub fn remove_web_account(&self, name: &str, event: Event) -> Result<bool, StoreError> {
        self.transact(|t| {
            if t.web_accounts.remove(name.as_bytes())?.is_none() {
                return Ok(false);
            }
            t.append_event(&event)?;
            Ok(true)
        })
    }

    /// Applies `f` to the account as it is inside one transaction and stores it with
    /// the event `f` returns (if any). `None` if there is no such account. `f` may run
    /// more than once.
    pub fn update_web_account<T>(
        &self,
        name: &str,
        f: impl Fn(&mut WebAccount) -> (Option<Event>, T),
    ) -> Result<Option<T>, StoreError> {
        self.transact(|t| {
            let Some(raw) = t.web_accounts.get(name.as_bytes())? else {
                return Ok(None);
            };
            let mut account = decode(name.as_bytes(), &raw).map_err(abort)?;
            let (event, out) = f(&mut account);
            let encoded = encode(&account).map_err(abort)?;
            t.web_accounts.insert(name.as_bytes(), encoded)?;
            if let Some(event) = event {
                t.append_event(&event)?;
            }
            Ok(Some(out))
        })
    }

    /// Appends an event that changes nothing else (a refused login, a web request
    /// that was turned away).
    pub fn record_event(&self, event: Event) -> Result<(), StoreError> {
        self.transact(|t| {
            t.append_event(&event)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: &str) -> Event {
        Event {
            id: 0,
            time: 1,
            actor: "cli:test".into(),
            device: None,
            action: action.into(),
            result: "ok".into(),
            details: Default::default(),
        }
    }

    #[test]
    fn accounts_are_added_once_updated_and_removed_with_their_events() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let alice = WebAccount {
            name: "alice".into(),
            password_hash: "$argon2id$x".into(),
            created: 1,
            failed_logins: 0,
            locked_until: None,
            last_login: None,
        };
        store
            .add_web_account(&alice, event("admin-user-add"))
            .unwrap();
        assert!(matches!(
            store.add_web_account(&alice, event("admin-user-add")),
            Err(StoreError::AccountExists(_))
        ));
        let n = store
            .update_web_account("alice", |a| {
                a.failed_logins += 1;
                (Some(event("web-login")), a.failed_logins)
            })
            .unwrap();
        assert_eq!(n, Some(1));
        assert_eq!(store.web_accounts().unwrap()[0].failed_logins, 1);
        assert!(store
            .remove_web_account("alice", event("admin-user-remove"))
            .unwrap());
        assert!(!store
            .remove_web_account("alice", event("admin-user-remove"))
            .unwrap());
        assert_eq!(store.web_account("alice").unwrap(), None);
        let actions: Vec<String> = store
            .events(None, None, None)
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(
            actions,
            ["admin-user-add", "web-login", "admin-user-remove"]
        );
    }
}
