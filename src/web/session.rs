//! Web admin sessions: kept in memory (a restart logs everyone out), named by a random
//! token in an HttpOnly, Secure, SameSite=Strict cookie, each with its own CSRF token.
//! A session ends on logout, after [`IDLE`] without a request, after [`LIFETIME`]
//! whatever happens, and when its account is removed or is no longer the one it
//! logged in as ([`Credential`]).

use crate::store::WebAccount;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const COOKIE: &str = "capf_session";
/// The cookie that ties the login form to the browser that loaded it.
pub const LOGIN_COOKIE: &str = "capf_login";
/// A session unused this long ends.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after login, however active.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at once; past it the least recently used ends.
const MAX_SESSIONS: usize = 256;

/// What a session logged in with: the SHA-256 of its account's password hash. That
/// hash is a PHC string with a salt of its own, so an account removed and added again
/// (how an operator resets a password) has another one, even with the same password,
/// and sessions of the account as it was end at their next request, on every node.
pub type Credential = [u8; 32];

/// The credential of `account` as it is now.
pub fn credential(account: &WebAccount) -> Credential {
    Sha256::digest(account.password_hash.as_bytes()).into()
}

/// An uploaded import file waiting for the operator to confirm its dry run.
#[derive(Clone)]
pub struct PendingImport {
    pub id: String,
    pub file_name: String,
    pub bytes: std::sync::Arc<Vec<u8>>,
}

#[derive(Clone)]
pub struct Session {
    pub account: String,
    pub csrf: String,
    credential: Credential,
    created: Instant,
    last_seen: Instant,
    pub pending_import: Option<PendingImport>,
}

#[derive(Default)]
pub struct Sessions {
    by_token: Mutex<HashMap<String, Session>>,
}

/// 32 random bytes in hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    hex::encode(bytes)
}

/// Whether two tokens are equal, in time that does not depend on where they differ.
pub fn tokens_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl Sessions {
    /// A new session for `account`, which logged in with `credential`; returns its
    /// token.
    pub fn create(&self, account: &str, credential: Credential) -> String {
        let token = random_token();
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, s| s.alive(now));
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(t, _)| t.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            token.clone(),
            Session {
                account: account.to_string(),
                csrf: random_token(),
                credential,
                created: now,
                last_seen: now,
                pending_import: None,
            },
        );
        token
    }

    /// The live session named by `token`, marked as used now.
    pub fn get(&self, token: &str) -> Option<Session> {
        let now = Instant::now();
        let mut map = self.lock();
        let session = map.get_mut(token)?;
        if !session.alive(now) {
            map.remove(token);
            return None;
        }
        session.last_seen = now;
        Some(session.clone())
    }

    pub fn remove(&self, token: &str) {
        self.lock().remove(token);
    }

    /// Ends every session of `account` (it was removed).
    pub fn remove_account(&self, account: &str) {
        self.lock().retain(|_, s| s.account != account);
    }

    pub fn set_pending_import(&self, token: &str, pending: Option<PendingImport>) {
        if let Some(s) = self.lock().get_mut(token) {
            s.pending_import = pending;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.by_token.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Session {
    /// Whether `account` (of this session's name) is still the one it logged in as.
    pub fn logged_in_as(&self, account: &WebAccount) -> bool {
        account.name == self.account && bool::from(credential(account).ct_eq(&self.credential))
    }

    fn alive(&self, now: Instant) -> bool {
        now.duration_since(self.last_seen) < IDLE && now.duration_since(self.created) < LIFETIME
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// A `Set-Cookie` value for `name`, HttpOnly, Secure, SameSite=Strict, ending after
/// `max_age` (0 deletes it).
pub fn set_cookie(name: &str, value: &str, max_age: Duration) -> String {
    format!(
        "{name}={value}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Strict",
        max_age.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(name: &str, password_hash: &str) -> WebAccount {
        WebAccount {
            name: name.into(),
            password_hash: password_hash.into(),
            created: 0,
            failed_logins: 0,
            locked_until: None,
            last_login: None,
        }
    }

    #[test]
    fn sessions_are_found_by_token_and_end_with_their_account() {
        let sessions = Sessions::default();
        let alice = account("alice", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA");
        let token = sessions.create("alice", credential(&alice));
        let s = sessions.get(&token).unwrap();
        assert_eq!(s.account, "alice");
        assert_eq!(s.csrf.len(), 64);
        assert!(s.logged_in_as(&alice));
        // Added again (another salt), or another account of the same hash: not it.
        assert!(!s.logged_in_as(&account(
            "alice",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdDI$aGFzaA"
        )));
        assert!(!s.logged_in_as(&account("bob", &alice.password_hash)));
        assert!(sessions.get("nope").is_none());
        sessions.remove_account("alice");
        assert!(sessions.get(&token).is_none());
        assert!(tokens_equal("abc", "abc"));
        assert!(!tokens_equal("abc", "abd"));
        assert!(!tokens_equal("abc", "abcd"));
        assert_eq!(cookie("a=1; capf_session=xyz; b=2", COOKIE), Some("xyz"));
        assert!(set_cookie(COOKIE, "t", LIFETIME).contains("HttpOnly; Secure; SameSite=Strict"));
    }
}
