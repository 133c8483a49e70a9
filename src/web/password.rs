//! Web admin passwords: argon2id hashes in PHC strings, and the rules for account
//! names and passwords. Shared by `capf admin-user` and the login page.

use anyhow::{bail, Result};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 12;
/// Longest password accepted (hashing cost does not depend on it, but a bound keeps
/// request bodies and prompts sane).
pub const MAX_PASSWORD: usize = 1024;

/// argon2id with the crate's defaults (19 MiB, 2 passes, 1 lane: OWASP's minimum).
fn hasher() -> Argon2<'static> {
    Argon2::default()
}

/// The PHC string of `password` under a fresh random salt.
pub fn hash_password(password: &str) -> Result<String> {
    check_password(password)?;
    let mut salt = [0u8; 16];
    rand::fill(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let hash = hasher()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?;
    Ok(hash.to_string())
}

/// Whether `phc` is an argon2id hash capf can verify.
pub fn check_hash(phc: &str) -> Result<()> {
    let hash = PasswordHash::new(phc).map_err(|e| anyhow::anyhow!("not a PHC string: {e}"))?;
    if hash.algorithm.as_str() != "argon2id" {
        bail!("the password hash must be argon2id, not {}", hash.algorithm);
    }
    Ok(())
}

/// Whether `password` matches `phc` (constant time inside the argon2 crate).
pub fn verify_password(phc: &str, password: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => hasher().verify_password(password.as_bytes(), &hash).is_ok(),
        Err(_) => false,
    }
}

/// Spends the time of one verification, for a login naming no account: the answer
/// takes as long as for a wrong password.
pub fn verify_nothing(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let phc = DUMMY.get_or_init(|| hash_password("capf-no-such-account").unwrap_or_default());
    let _ = verify_password(phc, password);
}

pub fn check_password(password: &str) -> Result<()> {
    let n = password.chars().count();
    if n < MIN_PASSWORD {
        bail!("the password must have at least {MIN_PASSWORD} characters");
    }
    if password.len() > MAX_PASSWORD {
        bail!("the password must have at most {MAX_PASSWORD} bytes");
    }
    Ok(())
}

/// Account names: 1–32 of A-Z a-z 0-9 . _ -, starting with a letter or digit (they
/// appear in the audit trail as `web:<name>`).
pub fn check_account_name(name: &str) -> Result<()> {
    let ok = (1..=32).contains(&name.len())
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        bail!(
            "invalid account name {name:?} (1–32 characters of A-Z a-z 0-9 . _ -, starting \
             with a letter or digit)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let phc = hash_password("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        check_hash(&phc).unwrap();
        assert!(verify_password(&phc, "correct horse battery"));
        assert!(!verify_password(&phc, "correct horse battery!"));
        assert!(hash_password("short").is_err());
        assert!(check_hash("$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaA").is_err());
    }

    #[test]
    fn account_names_are_checked() {
        check_account_name("alice").unwrap();
        check_account_name("ops.team-1").unwrap();
        for bad in ["", "-alice", "a b", "<script>", &"a".repeat(33)] {
            assert!(check_account_name(bad).is_err(), "{bad}");
        }
    }
}
