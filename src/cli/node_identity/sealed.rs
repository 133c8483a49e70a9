//! The node identity file of `capf node export` and `capf node join`: the files a new
//! node of a cluster needs, sealed with a passphrase.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "CAPFNODE"
//!      8     1  format version (1)
//!      9     1  suite (1: argon2id v1.3 -> 32-byte key, ChaCha20-Poly1305)
//!     10     4  argon2 memory, KiB (big-endian)
//!     14     4  argon2 passes
//!     18     4  argon2 lanes
//!     22    16  salt (random)
//!     38    12  nonce (random)
//!     50     …  ciphertext of the payload, then its 16-byte tag
//! ```
//!
//! The key is argon2id of the passphrase under the salt, with the parameters of the
//! header; the whole header is the AEAD's associated data, so a changed parameter,
//! salt or version fails the tag as a changed ciphertext does. A wrong passphrase and
//! a damaged file are told apart by nothing: both are "wrong passphrase or damaged
//! file".
//!
//! The payload is JSON ([`Payload`]): a version, when and where it was made, and the
//! entries, each a directory or a file with its mode and its bytes (base64), under
//! paths relative to the data directory. [`open`] accepts only paths inside `certs/`,
//! and `capf.toml` ([`check_path`]), so a file made by someone else cannot have
//! `join` write anywhere else.

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, Payload as AeadPayload};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce};
use rsa::pkcs8::der::zeroize::{Zeroize, Zeroizing};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

pub const MAGIC: &[u8; 8] = b"CAPFNODE";
/// The version of the file format (header and payload) this capf writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// argon2id (v1.3) for the key, ChaCha20-Poly1305 for the payload.
const SUITE: u8 = 1;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Length of the header, which is also the associated data.
pub const HEADER_LEN: usize = MAGIC.len() + 2 + 12 + SALT_LEN + NONCE_LEN;
/// Largest file `open` reads (and `export` writes): certificates and keys are a few
/// KiB each, so only a hostile or wrong file comes near it.
pub const MAX_FILE: u64 = 16 * 1024 * 1024;
/// Shortest passphrase a file is sealed with.
pub const MIN_PASSPHRASE: usize = 12;
/// Longest passphrase accepted.
pub const MAX_PASSPHRASE: usize = 1024;
/// Most entries a payload may have.
const MAX_ENTRIES: usize = 10_000;
/// Most components a path may have (`certs/retired/x.pem` has three).
const MAX_DEPTH: usize = 8;

/// The settings file, the one entry outside `certs/`.
pub const SETTINGS_PATH: &str = "capf.toml";
/// The directory every other entry is in.
pub const CERTS_DIR: &str = "certs";
/// What every file must hold: the CAPF CA and the file signer.
pub const REQUIRED: [&str; 4] = [
    "certs/capf.pem",
    "certs/capf.key",
    "certs/tftp.pem",
    "certs/tftp.key",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FileError {
    #[error("not a capf node identity file (made by `capf node export`)")]
    NotOurs,
    #[error("the file is truncated")]
    Truncated,
    #[error("the file is larger than {} MiB, which no node identity file is", MAX_FILE >> 20)]
    TooLarge,
    #[error("format version {0}, which this capf does not read (it reads {FORMAT_VERSION}): made by a newer capf?")]
    Version(u8),
    #[error("key derivation and cipher suite {0}, which this capf does not know")]
    Suite(u8),
    #[error("key derivation parameters out of bounds ({0})")]
    Params(String),
    #[error("wrong passphrase or damaged file")]
    Open,
    #[error("the passphrase must have at least {MIN_PASSPHRASE} characters")]
    ShortPassphrase,
    #[error("the passphrase must have at most {MAX_PASSPHRASE} bytes")]
    LongPassphrase,
    #[error("the sealed contents are not a node identity: {0}")]
    Payload(String),
    #[error("refusing the file: {0}")]
    Refused(String),
}

/// argon2id's cost parameters, as recorded in the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory, KiB.
    pub m_cost_kib: u32,
    /// Passes over the memory.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// What `capf node export` uses: 64 MiB, 3 passes, 1 lane (above OWASP's
    /// recommendations for argon2id; a fraction of a second on a server). The file holds
    /// the CA's key, and is derived once per export and join.
    pub const EXPORT: KdfParams = KdfParams {
        m_cost_kib: 64 * 1024,
        t_cost: 3,
        p_cost: 1,
    };
    /// Bounds on what a file may ask for: a hostile header must not make `join`
    /// allocate gigabytes or run for hours.
    const MAX_M_COST_KIB: u32 = 1024 * 1024;
    const MAX_T_COST: u32 = 32;
    const MAX_P_COST: u32 = 16;

    fn check(&self) -> Result<Params, FileError> {
        if self.m_cost_kib > Self::MAX_M_COST_KIB
            || !(1..=Self::MAX_T_COST).contains(&self.t_cost)
            || !(1..=Self::MAX_P_COST).contains(&self.p_cost)
        {
            return Err(FileError::Params(format!(
                "{} KiB, {} passes, {} lanes",
                self.m_cost_kib, self.t_cost, self.p_cost
            )));
        }
        Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| FileError::Params(e.to_string()))
    }
}

/// What a file holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// When it was exported (Unix time).
    pub created: i64,
    /// The `node_name` of the node it was exported from.
    pub from_node: String,
    pub entries: Vec<Entry>,
}

/// A directory or a file, under a path relative to the data directory (`/` between
/// components).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Entry {
    Dir {
        path: String,
    },
    File {
        path: String,
        /// Permission bits (`0o600` for keys).
        mode: u32,
        #[serde(with = "base64_bytes")]
        data: Vec<u8>,
    },
}

impl Entry {
    pub fn path(&self) -> &str {
        match self {
            Entry::Dir { path } | Entry::File { path, .. } => path,
        }
    }
}

/// Never prints a file's bytes: they are keys.
impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Dir { path } => f.debug_struct("Dir").field("path", path).finish(),
            Entry::File { path, mode, data } => f
                .debug_struct("File")
                .field("path", path)
                .field("mode", &format_args!("{mode:o}"))
                .field("len", &data.len())
                .finish(),
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Entry::File { data, .. } = self {
            data.zeroize();
        }
    }
}

impl Payload {
    /// The bytes of the file at `path`, if the payload has it.
    pub fn file(&self, path: &str) -> Option<&[u8]> {
        self.entries.iter().find_map(|e| match e {
            Entry::File { path: p, data, .. } if p == path => Some(data.as_slice()),
            _ => None,
        })
    }

    /// What [`open`] requires of a payload: this version, every path allowed
    /// ([`check_path`]) and given once, the CAPF CA and the signer present.
    pub fn check(&self) -> Result<(), FileError> {
        if self.version != u32::from(FORMAT_VERSION) {
            return Err(FileError::Payload(format!(
                "payload version {}, expected {FORMAT_VERSION}",
                self.version
            )));
        }
        if self.entries.len() > MAX_ENTRIES {
            return Err(FileError::Refused(format!(
                "{} entries (at most {MAX_ENTRIES})",
                self.entries.len()
            )));
        }
        let mut seen = BTreeSet::new();
        for entry in &self.entries {
            let path = entry.path();
            check_path(path, matches!(entry, Entry::Dir { .. })).map_err(FileError::Refused)?;
            if !seen.insert(path) {
                return Err(FileError::Refused(format!("{path:?} is given twice")));
            }
            if let Entry::File { mode, .. } = entry {
                if *mode & !0o777 != 0 {
                    return Err(FileError::Refused(format!(
                        "{path:?} has mode {mode:o} (only permission bits are kept)"
                    )));
                }
            }
        }
        for required in REQUIRED.iter().chain([&SETTINGS_PATH]) {
            if self.file(required).is_none() {
                return Err(FileError::Payload(format!("{required} is missing")));
            }
        }
        Ok(())
    }
}

/// A path a payload may hold: `capf.toml` (a file), or `certs/` followed by one to
/// seven plain components (no `.` or `..`, none empty or starting with a dot, no
/// backslash or NUL). Nothing absolute, nothing that climbs out.
pub fn check_path(path: &str, dir: bool) -> Result<(), String> {
    if path == SETTINGS_PATH && !dir {
        return Ok(());
    }
    let refuse = |why: &str| Err(format!("{path:?}: {why}"));
    if path.len() > 1024 {
        return refuse("the path is too long");
    }
    let parts: Vec<&str> = path.split('/').collect();
    if parts[0] != CERTS_DIR || parts.len() < 2 {
        return refuse("a path must be inside certs/ (or be capf.toml)");
    }
    if parts.len() > MAX_DEPTH {
        return refuse("the path is too deep");
    }
    for part in &parts[1..] {
        if part.is_empty() || part.starts_with('.') || part.len() > 255 {
            return refuse(
                "each part of a path must be a plain name (no ., .., empty or hidden part)",
            );
        }
        if part.contains(['\\', '\0']) {
            return refuse("a path must not hold a backslash or NUL");
        }
    }
    Ok(())
}

/// Seals `payload` under `passphrase` (at least [`MIN_PASSPHRASE`] characters) with a
/// fresh salt and nonce. The payload is sealed as it is: `capf node export` checks it
/// first ([`Payload::check`]), and [`open`] checks whatever it opens.
pub fn seal(payload: &Payload, passphrase: &str, params: KdfParams) -> Result<Vec<u8>, FileError> {
    check_passphrase(passphrase)?;
    let argon = params.check()?;
    let mut salt = [0u8; SALT_LEN];
    rand::fill(&mut salt);
    let mut nonce = [0u8; NONCE_LEN];
    rand::fill(&mut nonce);
    let header = header(params, &salt, &nonce);
    let plain =
        Zeroizing::new(serde_json::to_vec(payload).map_err(|e| FileError::Payload(e.to_string()))?);
    let cipher = cipher(passphrase, &salt, argon)?;
    let sealed = cipher
        .encrypt(
            &Nonce::from(nonce),
            AeadPayload {
                msg: &plain,
                aad: &header,
            },
        )
        .map_err(|_| FileError::Payload("the payload cannot be sealed".into()))?;
    let mut file = header.to_vec();
    file.extend_from_slice(&sealed);
    Ok(file)
}

/// Opens a file made by [`seal`] and checks its payload ([`Payload::check`]).
pub fn open(file: &[u8], passphrase: &str) -> Result<Payload, FileError> {
    let (params, salt, nonce) = parse_header(file)?;
    let argon = params.check()?;
    let cipher = cipher(passphrase, &salt, argon)?;
    let plain = Zeroizing::new(
        cipher
            .decrypt(
                &Nonce::from(nonce),
                AeadPayload {
                    msg: &file[HEADER_LEN..],
                    aad: &file[..HEADER_LEN],
                },
            )
            .map_err(|_| FileError::Open)?,
    );
    let payload: Payload =
        serde_json::from_slice(&plain).map_err(|e| FileError::Payload(e.to_string()))?;
    payload.check()?;
    Ok(payload)
}

/// The KDF parameters, salt and nonce of a file's header, after checking what can be
/// checked without the passphrase.
pub fn parse_header(
    file: &[u8],
) -> Result<(KdfParams, [u8; SALT_LEN], [u8; NONCE_LEN]), FileError> {
    if file.len() as u64 > MAX_FILE {
        return Err(FileError::TooLarge);
    }
    if file.len() < MAGIC.len() {
        return Err(if MAGIC.starts_with(file) && !file.is_empty() {
            FileError::Truncated
        } else {
            FileError::NotOurs
        });
    }
    if &file[..MAGIC.len()] != MAGIC {
        return Err(FileError::NotOurs);
    }
    let rest = &file[MAGIC.len()..];
    match rest.first() {
        None => return Err(FileError::Truncated),
        Some(&FORMAT_VERSION) => {}
        Some(&other) => return Err(FileError::Version(other)),
    }
    match rest.get(1) {
        None => return Err(FileError::Truncated),
        Some(&SUITE) => {}
        Some(&other) => return Err(FileError::Suite(other)),
    }
    if file.len() < HEADER_LEN + TAG_LEN {
        return Err(FileError::Truncated);
    }
    let word = |at: usize| u32::from_be_bytes(file[at..at + 4].try_into().expect("4 bytes"));
    let params = KdfParams {
        m_cost_kib: word(10),
        t_cost: word(14),
        p_cost: word(18),
    };
    let salt = file[22..22 + SALT_LEN].try_into().expect("salt length");
    let nonce = file[38..38 + NONCE_LEN].try_into().expect("nonce length");
    Ok((params, salt, nonce))
}

fn header(params: KdfParams, salt: &[u8; SALT_LEN], nonce: &[u8; NONCE_LEN]) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(MAGIC);
    header[8] = FORMAT_VERSION;
    header[9] = SUITE;
    header[10..14].copy_from_slice(&params.m_cost_kib.to_be_bytes());
    header[14..18].copy_from_slice(&params.t_cost.to_be_bytes());
    header[18..22].copy_from_slice(&params.p_cost.to_be_bytes());
    header[22..38].copy_from_slice(salt);
    header[38..50].copy_from_slice(nonce);
    header
}

/// Whether `passphrase` may seal a file.
pub fn check_passphrase(passphrase: &str) -> Result<(), FileError> {
    if passphrase.chars().count() < MIN_PASSPHRASE {
        return Err(FileError::ShortPassphrase);
    }
    if passphrase.len() > MAX_PASSPHRASE {
        return Err(FileError::LongPassphrase);
    }
    Ok(())
}

/// The AEAD keyed with argon2id(passphrase, salt).
fn cipher(passphrase: &str, salt: &[u8], params: Params) -> Result<ChaCha20Poly1305, FileError> {
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase.as_bytes(), salt, &mut *key)
        .map_err(|e| FileError::Params(e.to_string()))?;
    ChaCha20Poly1305::new_from_slice(&*key).map_err(|_| FileError::Params("key length".into()))
}

/// A file's bytes as base64 in the JSON; the intermediate text is wiped too.
mod base64_bytes {
    use super::{Zeroize, Zeroizing};
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let text = Zeroizing::new(super::BASE64.encode(data));
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let mut text = String::deserialize(d)?;
        let data = super::BASE64.decode(text.as_bytes());
        text.zeroize();
        data.map_err(serde::de::Error::custom)
    }
}

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap parameters, so the tests do not spend 64 MiB and seconds per file.
    const FAST: KdfParams = KdfParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };
    const PASSPHRASE: &str = "correct horse battery staple";

    fn file(path: &str, mode: u32, data: &[u8]) -> Entry {
        Entry::File {
            path: path.into(),
            mode,
            data: data.to_vec(),
        }
    }

    fn payload() -> Payload {
        let mut entries: Vec<Entry> = REQUIRED
            .iter()
            .map(|p| file(p, 0o600, format!("contents of {p}").as_bytes()))
            .collect();
        entries.push(file(SETTINGS_PATH, 0o600, b"node_name = \"a\"\n"));
        entries.push(Entry::Dir {
            path: "certs/trust".into(),
        });
        entries.push(file("certs/trust/extra.pem", 0o644, &[0, 1, 2, 255]));
        Payload {
            version: FORMAT_VERSION.into(),
            created: 1_700_000_000,
            from_node: "capf-a.example.net".into(),
            entries,
        }
    }

    #[test]
    fn a_sealed_payload_opens_with_its_passphrase() {
        let sealed = seal(&payload(), PASSPHRASE, FAST).unwrap();
        assert_eq!(&sealed[..8], MAGIC);
        assert_eq!(parse_header(&sealed).unwrap().0, FAST);
        assert_eq!(open(&sealed, PASSPHRASE).unwrap(), payload());
        // A fresh salt and nonce each time.
        assert_ne!(seal(&payload(), PASSPHRASE, FAST).unwrap(), sealed);
        // The key material is not in the file in the clear.
        let text = String::from_utf8_lossy(&sealed);
        assert!(!text.contains("contents of"), "{text}");
    }

    #[test]
    fn a_wrong_passphrase_or_any_changed_byte_is_refused() {
        let sealed = seal(&payload(), PASSPHRASE, FAST).unwrap();
        assert_eq!(
            open(&sealed, "correct horse battery stapl").unwrap_err(),
            FileError::Open
        );
        // Every byte after the magic, version and suite is covered by the tag: the
        // KDF parameters, salt and nonce as much as the ciphertext.
        for at in [
            10,
            13,
            17,
            21,
            22,
            37,
            38,
            49,
            50,
            sealed.len() / 2,
            sealed.len() - 1,
        ] {
            let mut damaged = sealed.clone();
            damaged[at] ^= 0x01;
            let err = open(&damaged, PASSPHRASE).unwrap_err();
            assert!(
                matches!(err, FileError::Open | FileError::Params(_)),
                "byte {at}: {err:?}"
            );
        }
        let mut other = sealed.clone();
        other[0] = b'X';
        assert_eq!(open(&other, PASSPHRASE).unwrap_err(), FileError::NotOurs);
        other = sealed.clone();
        other[8] = 2;
        assert_eq!(open(&other, PASSPHRASE).unwrap_err(), FileError::Version(2));
        other = sealed.clone();
        other[9] = 7;
        assert_eq!(open(&other, PASSPHRASE).unwrap_err(), FileError::Suite(7));
    }

    #[test]
    fn a_truncated_file_is_refused() {
        let sealed = seal(&payload(), PASSPHRASE, FAST).unwrap();
        for len in [1, 7, 8, 9, 10, 30, HEADER_LEN, HEADER_LEN + TAG_LEN - 1] {
            assert_eq!(
                open(&sealed[..len], PASSPHRASE).unwrap_err(),
                FileError::Truncated,
                "{len} bytes"
            );
        }
        // Cut inside the ciphertext: the tag no longer matches.
        assert_eq!(
            open(&sealed[..sealed.len() - 1], PASSPHRASE).unwrap_err(),
            FileError::Open
        );
        assert_eq!(open(b"", PASSPHRASE).unwrap_err(), FileError::NotOurs);
        assert_eq!(
            open(b"-----BEGIN CERTIFICATE-----", PASSPHRASE).unwrap_err(),
            FileError::NotOurs
        );
    }

    #[test]
    fn hostile_header_parameters_are_refused_before_deriving() {
        let sealed = seal(&payload(), PASSPHRASE, FAST).unwrap();
        for (at, value) in [(10, u32::MAX), (14, 0), (14, 1000), (18, 0), (18, 255)] {
            let mut hostile = sealed.clone();
            hostile[at..at + 4].copy_from_slice(&value.to_be_bytes());
            assert!(
                matches!(open(&hostile, PASSPHRASE), Err(FileError::Params(_))),
                "{at} = {value}"
            );
        }
        let big = vec![0u8; MAX_FILE as usize + 1];
        assert_eq!(open(&big, PASSPHRASE).unwrap_err(), FileError::TooLarge);
    }

    #[test]
    fn a_short_passphrase_seals_nothing() {
        assert_eq!(
            seal(&payload(), "eleven char", FAST).unwrap_err(),
            FileError::ShortPassphrase
        );
        // Characters, not bytes: twelve of them, some of two bytes.
        assert!(seal(&payload(), "ééééééééééé", FAST).is_err());
        assert!(seal(&payload(), "éééééééééééé", FAST).is_ok());
    }

    #[test]
    fn paths_stay_inside_certs_or_are_the_settings() {
        for ok in [
            "capf.toml",
            "certs/capf.pem",
            "certs/retired/capf-1.key",
            "certs/trust/a b.pem",
        ] {
            assert_eq!(check_path(ok, false), Ok(()), "{ok}");
        }
        assert_eq!(check_path("certs/sudi", true), Ok(()));
        for bad in [
            "",
            "certs",
            "certs/",
            "/etc/passwd",
            "/certs/capf.pem",
            "../capf.pem",
            "certs/../../outside",
            "certs/./capf.pem",
            "certs//capf.pem",
            "certs/trust/..",
            "certs/.capf.key.1234.tmp",
            "db/conf",
            "tftp/SEP001122334455.cnf.xml",
            "admin.sock",
            "certs\\..\\x",
            "certs/a\\b",
            "certs/a\0b",
            "certs/a/b/c/d/e/f/g/h",
        ] {
            assert!(check_path(bad, false).is_err(), "{bad:?}");
        }
        // capf.toml is a file, never a directory.
        assert!(check_path("capf.toml", true).is_err());
    }

    #[test]
    fn a_payload_with_a_climbing_path_does_not_open() {
        let mut hostile = payload();
        hostile
            .entries
            .push(file("certs/../../outside", 0o644, b"x"));
        let sealed = seal(&hostile, PASSPHRASE, FAST).unwrap();
        let err = open(&sealed, PASSPHRASE).unwrap_err();
        assert!(matches!(err, FileError::Refused(_)), "{err:?}");

        let mut twice = payload();
        twice.entries.push(file("certs/capf.pem", 0o644, b"x"));
        assert!(matches!(twice.check(), Err(FileError::Refused(_))));

        let mut setuid = payload();
        setuid.entries.push(file("certs/x", 0o4755, b"x"));
        assert!(matches!(setuid.check(), Err(FileError::Refused(_))));

        let mut missing = payload();
        missing.entries.retain(|e| e.path() != "certs/capf.key");
        assert!(matches!(missing.check(), Err(FileError::Payload(_))));
    }

    #[test]
    fn debug_output_never_shows_file_contents() {
        let text = format!("{:?}", payload());
        assert!(!text.contains("contents of"), "{text}");
        assert!(text.contains("certs/capf.key"), "{text}");
    }
}
