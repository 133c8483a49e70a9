//! The `web_accounts` tree of the sled store: account name -> JSON [`WebAccount`];
//! and `web_sessions`: SHA-256 of a token -> JSON [`WebSession`].

use super::{abort, SledStore, StoreError};
use crate::model::Event;
use crate::store::accounts::{
    decode, decode_session, decode_session_entry, encode, encode_session,
};
use crate::store::backend::AccountUpdate;
use crate::store::txn::DeviceTxn;
use crate::store::{SessionKey, WebAccount, WebSession};

impl SledStore {
    pub(super) fn web_session(&self, key: &SessionKey) -> Result<Option<WebSession>, StoreError> {
        match self.web_sessions.get(key)? {
            None => Ok(None),
            Some(v) => decode_session(key, &v).map(Some),
        }
    }

    pub(super) fn put_web_session(
        &self,
        key: &SessionKey,
        session: &WebSession,
    ) -> Result<(), StoreError> {
        self.web_sessions.insert(key, encode_session(session)?)?;
        Ok(())
    }

    pub(super) fn remove_web_session(&self, key: &SessionKey) -> Result<(), StoreError> {
        self.web_sessions.remove(key)?;
        Ok(())
    }

    pub(super) fn web_sessions(&self) -> Result<Vec<(SessionKey, WebSession)>, StoreError> {
        self.web_sessions
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode_session_entry(&k, &v)
            })
            .collect()
    }

    pub(super) fn web_account(&self, name: &str) -> Result<Option<WebAccount>, StoreError> {
        match self.web_accounts.get(name.as_bytes())? {
            None => Ok(None),
            Some(v) => decode(name.as_bytes(), &v).map(Some),
        }
    }

    /// Every account, in name order.
    pub(super) fn web_accounts(&self) -> Result<Vec<WebAccount>, StoreError> {
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
    pub(super) fn add_web_account(
        &self,
        account: &WebAccount,
        event: Event,
    ) -> Result<(), StoreError> {
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
    pub(super) fn remove_web_account(&self, name: &str, event: Event) -> Result<bool, StoreError> {
        self.transact(|t| {
            if t.web_accounts.remove(name.as_bytes())?.is_none() {
                return Ok(false);
            }
            t.append_event(&event)?;
            Ok(true)
        })
    }

    pub(super) fn update_web_account(
        &self,
        name: &str,
        f: AccountUpdate<'_>,
    ) -> Result<bool, StoreError> {
        self.transact(|t| {
            let Some(raw) = t.web_accounts.get(name.as_bytes())? else {
                return Ok(false);
            };
            let mut account = decode(name.as_bytes(), &raw).map_err(abort)?;
            let event = f(&mut account);
            let encoded = encode(&account).map_err(abort)?;
            t.web_accounts.insert(name.as_bytes(), encoded)?;
            if let Some(event) = event {
                t.append_event(&event)?;
            }
            Ok(true)
        })
    }

    /// Appends an event that changes nothing else (a refused login, a web request
    /// that was turned away).
    pub(super) fn record_event(&self, event: Event) -> Result<(), StoreError> {
        self.transact(|t| {
            t.append_event(&event)?;
            Ok(())
        })
    }
}
