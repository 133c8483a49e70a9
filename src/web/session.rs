//! Web admin sessions, kept in the store ([`WebSession`], by the SHA-256 of the token):
//! a restart logs no one out, and every node sharing a store knows every session, so
//! a load balancer needs no sticky sessions. A session is named by a random token in
//! an HttpOnly, Secure, SameSite=Strict cookie, and has its own CSRF token. It ends on
//! logout, after [`IDLE`] without a request, after [`LIFETIME`] whatever happens, and
//! when its account is removed or is no longer the one it logged in as
//! ([`Credential`]).
//!
//! An uploaded import file waiting for its confirmation stays in the memory of the
//! node that took it (it can be megabytes): its confirmation comes from the page that
//! uploaded it.

use crate::model::{now, UnixTime};
use crate::store::{SessionKey, Store, StoreError, WebAccount, WebSession};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
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
/// A session's last use is written back at most this often, not on every request.
const TOUCH_EVERY: UnixTime = 30;

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

/// A live session, as a request sees it.
#[derive(Clone)]
pub struct Session {
    pub account: String,
    pub csrf: String,
    credential: Credential,
    pub pending_import: Option<PendingImport>,
}

pub struct Sessions {
    store: Store,
    /// This node's uploads waiting for confirmation, by session.
    pending: Mutex<HashMap<SessionKey, PendingImport>>,
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

/// Where the session of `token` is stored: a copy of the store (a backup) holds no
/// token that would open a session.
fn key_of(token: &str) -> SessionKey {
    Sha256::digest(token.as_bytes()).into()
}

fn alive(session: &WebSession, now: UnixTime) -> bool {
    let seconds = |d: Duration| UnixTime::try_from(d.as_secs()).unwrap_or(UnixTime::MAX);
    now.saturating_sub(session.last_seen) < seconds(IDLE)
        && now.saturating_sub(session.created) < seconds(LIFETIME)
}

impl Sessions {
    pub fn new(store: Store) -> Sessions {
        Sessions {
            store,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// A new session for `account`, which logged in with `credential`; returns its
    /// token. Ended sessions are swept out first, and past [`MAX_SESSIONS`] the least
    /// recently used ends.
    pub fn create(&self, account: &str, credential: Credential) -> Result<String, StoreError> {
        let now = now();
        let mut live = Vec::new();
        for (key, session) in self.store.web_sessions()? {
            if alive(&session, now) {
                live.push((key, session));
            } else {
                self.end(&key)?;
            }
        }
        // Uploads of sessions that ended elsewhere (a logout on another node) go too.
        self.lock()
            .retain(|key, _| live.iter().any(|(live, _)| live == key));
        if live.len() >= MAX_SESSIONS {
            if let Some((oldest, _)) = live.iter().min_by_key(|(_, s)| s.last_seen) {
                self.end(oldest)?;
            }
        }
        let token = random_token();
        let session = WebSession {
            account: account.to_string(),
            csrf: random_token(),
            credential: hex::encode(credential),
            created: now,
            last_seen: now,
        };
        self.store.put_web_session(&key_of(&token), &session)?;
        Ok(token)
    }

    /// The live session named by `token`, marked as used now. A store that does not
    /// answer gives none (the request is refused), and the session stays for when it
    /// does.
    pub fn get(&self, token: &str) -> Option<Session> {
        let now = now();
        let key = key_of(token);
        let Some(mut stored) = self.store.web_session(&key).ok()? else {
            // Ended, perhaps on another node: its upload here goes with it.
            self.lock().remove(&key);
            return None;
        };
        let credential = hex::decode(&stored.credential)
            .ok()
            .and_then(|c| Credential::try_from(c).ok());
        let (true, Some(credential)) = (alive(&stored, now), credential) else {
            let _ = self.end(&key);
            return None;
        };
        if now.saturating_sub(stored.last_seen) >= TOUCH_EVERY {
            stored.last_seen = now;
            // Not written: at worst the session ends a little early.
            let _ = self.store.put_web_session(&key, &stored);
        }
        Some(Session {
            account: stored.account,
            csrf: stored.csrf,
            credential,
            pending_import: self.lock().get(&key).cloned(),
        })
    }

    pub fn remove(&self, token: &str) {
        // A store that does not answer leaves the session to end by itself.
        let _ = self.end(&key_of(token));
    }

    /// Ends every session of `account` (it was removed).
    pub fn remove_account(&self, account: &str) {
        let Ok(all) = self.store.web_sessions() else {
            return;
        };
        for (key, session) in all {
            if session.account == account {
                let _ = self.end(&key);
            }
        }
    }

    pub fn set_pending_import(&self, token: &str, pending: Option<PendingImport>) {
        let key = key_of(token);
        match pending {
            Some(p) => self.lock().insert(key, p),
            None => self.lock().remove(&key),
        };
    }

    fn end(&self, key: &SessionKey) -> Result<(), StoreError> {
        self.lock().remove(key);
        self.store.remove_web_session(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionKey, PendingImport>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Session {
    /// Whether `account` (of this session's name) is still the one it logged in as.
    pub fn logged_in_as(&self, account: &WebAccount) -> bool {
        account.name == self.account && bool::from(credential(account).ct_eq(&self.credential))
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
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let sessions = Sessions::new(store.clone());
        let alice = account("alice", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA");
        let token = sessions.create("alice", credential(&alice)).unwrap();
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
        // The store holds the session, not its token.
        let stored = store.web_sessions().unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].0, key_of(&token));
        assert!(!serde_json::to_string(&stored[0].1)
            .unwrap()
            .contains(&token));
        // Another process on the same store (a restart) knows it.
        assert_eq!(
            Sessions::new(store.clone()).get(&token).unwrap().csrf,
            s.csrf
        );
        sessions.remove_account("alice");
        assert!(sessions.get(&token).is_none());
        assert!(store.web_sessions().unwrap().is_empty());
        assert!(tokens_equal("abc", "abc"));
        assert!(!tokens_equal("abc", "abd"));
        assert!(!tokens_equal("abc", "abcd"));
        assert_eq!(cookie("a=1; capf_session=xyz; b=2", COOKIE), Some("xyz"));
        assert!(set_cookie(COOKIE, "t", LIFETIME).contains("HttpOnly; Secure; SameSite=Strict"));
    }

    #[test]
    fn ended_sessions_are_refused_and_swept_and_the_count_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let sessions = Sessions::new(store.clone());
        let alice = credential(&account("alice", "$argon2id$x"));
        let idle = sessions.create("alice", alice).unwrap();
        let old = sessions.create("alice", alice).unwrap();
        let age = |token: &str, idle_for: u64, lived: u64| {
            let (idle_for, lived) = (idle_for as UnixTime, lived as UnixTime);
            let key = key_of(token);
            let mut s = store.web_session(&key).unwrap().unwrap();
            s.last_seen -= idle_for;
            s.created -= lived;
            store.put_web_session(&key, &s).unwrap();
        };
        age(&idle, IDLE.as_secs(), IDLE.as_secs());
        age(&old, 0, LIFETIME.as_secs());
        assert!(sessions.get(&idle).is_none(), "idle too long");
        assert!(sessions.get(&old).is_none(), "past its lifetime");
        assert!(store.web_sessions().unwrap().is_empty(), "both removed");

        // One nobody asks for again is swept out by the next login.
        let forgotten = sessions.create("alice", alice).unwrap();
        age(&forgotten, IDLE.as_secs(), IDLE.as_secs());
        let next = sessions.create("alice", alice).unwrap();
        let kept: Vec<SessionKey> = store
            .web_sessions()
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(kept, [key_of(&next)], "the ended one swept at login");
        sessions.remove(&next);

        let tokens: Vec<String> = (0..MAX_SESSIONS + 1)
            .map(|i| {
                let token = sessions.create("alice", alice).unwrap();
                if i == 0 {
                    age(&token, 60, 60);
                }
                token
            })
            .collect();
        assert_eq!(store.web_sessions().unwrap().len(), MAX_SESSIONS);
        assert!(
            sessions.get(&tokens[0]).is_none(),
            "the least recently used went"
        );
        assert!(sessions.get(&tokens[MAX_SESSIONS]).is_some());
    }

    #[test]
    fn a_pending_import_stays_with_its_session() {
        let dir = tempfile::tempdir().unwrap();
        let sessions = Sessions::new(Store::open(dir.path()).unwrap());
        let alice = credential(&account("alice", "$argon2id$x"));
        let (a, b) = (
            sessions.create("alice", alice).unwrap(),
            sessions.create("alice", alice).unwrap(),
        );
        let pending = PendingImport {
            id: "1".into(),
            file_name: "phones.csv".into(),
            bytes: std::sync::Arc::new(b"name\n".to_vec()),
        };
        sessions.set_pending_import(&a, Some(pending));
        assert_eq!(sessions.get(&a).unwrap().pending_import.unwrap().id, "1");
        assert!(sessions.get(&b).unwrap().pending_import.is_none());
        sessions.remove(&a);
        assert!(sessions.get(&a).is_none());
        assert!(sessions.lock().is_empty(), "the upload went with it");

        // A session ended by another node (a logout there) takes its upload here
        // with it: when asked for, or at the next login.
        let pending = |id: &str| PendingImport {
            id: id.into(),
            file_name: "phones.csv".into(),
            bytes: std::sync::Arc::new(b"name\n".to_vec()),
        };
        let other = Sessions::new(sessions.store.clone());
        let (c, d) = (
            sessions.create("alice", alice).unwrap(),
            sessions.create("alice", alice).unwrap(),
        );
        sessions.set_pending_import(&c, Some(pending("c")));
        sessions.set_pending_import(&d, Some(pending("d")));
        other.remove(&c);
        other.remove(&d);
        assert!(sessions.get(&c).is_none());
        assert!(!sessions.lock().contains_key(&key_of(&c)));
        assert!(sessions.lock().contains_key(&key_of(&d)));
        sessions.create("alice", alice).unwrap();
        assert!(sessions.lock().is_empty(), "swept at the next login");
    }
}
