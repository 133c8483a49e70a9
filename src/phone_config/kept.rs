//! Signed files kept on disk, so that a restart does not sign every phone's files again.
//!
//! After a power cut capf restarts with the phones, and every phone fetches its files at
//! once. The memory cache ([`super::cache`]) is empty then; without these copies each
//! of a fleet's files is signed again (about 35 s of both cores for 100,000 phones, see
//! docs/encrypted-config.md). CUCM serves its files from disk for the same reason.
//!
//! One file per served name, in `kept-files/` of the data directory (owner-only). Each
//! holds, before the file's bytes:
//!
//! * the digest of the program that built it: a capf with another format (an upgrade,
//!   a fix) never serves what an older one built;
//! * the file's [`BuildKey`]: a copy is served only while every input of its build is
//!   unchanged, exactly as from memory;
//! * the BLAKE3 digest of the bytes and their length: a torn or damaged copy (a crash
//!   during the write, which is not synced, or a read during the next write) is never
//!   served, only built again.
//!
//! Anything that does not match is a miss, and the next build replaces the copy, so a
//! name has one copy at most: the directory holds at most three files per device (the
//! ITL, the partial and the `.enc.sgn`), as the memory cache would with no bound. The
//! copies of devices no longer in the store are removed when the node starts.
//!
//! Nothing kept here is secret: these are the bytes capf serves to anyone who asks for
//! the name (an `.enc.sgn` opens only with its phone's private key).

use crate::phone_config::plan::BuildKey;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// The directory under the data directory.
pub const KEPT_FILES_DIR: &str = "kept-files";

/// What a kept file starts with (the layout's version is its last byte).
const MAGIC: &[u8; 8] = b"CAPFKF\x00\x01";

/// Magic, program, key, digest, length.
const HEADER: usize = 8 + 32 + 32 + 32 + 8;

/// The largest kept file read: a file built from the largest base document
/// ([`super::service::MAX_DOCUMENT`]) with room for its signature header, its
/// encryption and padding.
const MAX_KEPT: u64 = super::service::MAX_DOCUMENT + 256 * 1024;

/// The signed files of one node, kept on disk.
pub struct KeptFiles {
    dir: PathBuf,
    /// BLAKE3 of the running program's executable.
    program: [u8; 32],
    /// A failed write was reported and none has succeeded since: a full disk is said
    /// once, not for every file.
    failing: AtomicBool,
}

impl KeptFiles {
    /// The kept files in `dir`, created owner-only if missing. `None` (and said why)
    /// when the directory cannot be made or the program cannot be read: files are then
    /// kept in memory only.
    pub fn open(dir: PathBuf) -> Option<KeptFiles> {
        let program = match program_digest() {
            Ok(digest) => *digest,
            Err(e) => {
                tracing::warn!("built files are kept in memory only: cannot read the program to tell its files apart ({e})");
                return None;
            }
        };
        let mut builder = std::fs::DirBuilder::new();
        std::os::unix::fs::DirBuilderExt::mode(builder.recursive(true), 0o700);
        if let Err(e) = builder.create(&dir) {
            tracing::warn!(
                "built files are kept in memory only: cannot create {}: {e}",
                dir.display()
            );
            return None;
        }
        Some(KeptFiles {
            dir,
            program,
            failing: AtomicBool::new(false),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The copy of `name` built under `key` by this program, if one is kept whole.
    pub fn read(&self, name: &str, key: &BuildKey) -> Option<Arc<[u8]>> {
        let file = std::fs::File::open(self.dir.join(name)).ok()?;
        let mut bytes = Vec::new();
        file.take(MAX_KEPT + HEADER as u64)
            .read_to_end(&mut bytes)
            .ok()?;
        let content = decode(&bytes, &self.program, key)?;
        Some(content.into())
    }

    /// Keeps `bytes`, built under `key`, as the copy of `name`, written over the old
    /// copy in place and not synced. A reader may see a torn copy, and a crash may leave
    /// one; [`decode`] refuses it, and it is built again. Written in place rather than
    /// through a temporary file and a rename, because each rename frees an inode and
    /// each temporary file takes a new one: in a storm of builds, ext4's search for a
    /// free inode past the recently freed ones cost more than the signature (measured
    /// with `confbench`, docs/benchmarks.md). A failure is reported, never the
    /// request's: the file was built and is served.
    pub fn write(&self, name: &str, key: &BuildKey, bytes: &[u8]) {
        match self.replace(name, &encode(&self.program, key, bytes)) {
            Ok(()) => self.failing.store(false, Ordering::Relaxed),
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "cannot keep built files in {} ({e}); they are kept in memory, \
                         and built again after a restart",
                        self.dir.display()
                    );
                }
            }
        }
    }

    fn replace(&self, name: &str, contents: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::{FileExt, OpenOptionsExt};
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(0o600)
            .open(self.dir.join(name))?;
        file.write_all_at(contents, 0)?;
        // Shorter than the copy before: cut what is left of it.
        if file.metadata()?.len() > contents.len() as u64 {
            file.set_len(contents.len() as u64)?;
        }
        Ok(())
    }

    /// Removes the copies of devices `known` says are gone (given the device name).
    /// Returns how many files went.
    pub fn sweep(&self, known: impl Fn(&str) -> bool) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let stale = device_of(name).is_some_and(|device| !known(device));
            if stale && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

/// The device a kept file's name belongs to (`SEP<MAC>` of `SEP<MAC>.cnf.xml…`); `None`
/// for the node's own files (the ITL).
fn device_of(name: &str) -> Option<&str> {
    name.starts_with("SEP")
        .then(|| name.split_once('.').map(|(device, _)| device))
        .flatten()
}

/// A kept file: the header, then `bytes`.
fn encode(program: &[u8; 32], key: &BuildKey, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + bytes.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(program);
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(blake3::hash(bytes).as_bytes());
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
    out
}

/// The bytes of the kept file `file`, if it was written whole by `program` under `key`.
fn decode<'a>(file: &'a [u8], program: &[u8; 32], key: &BuildKey) -> Option<&'a [u8]> {
    let (magic, rest) = file.split_first_chunk::<8>()?;
    let (written_by, rest) = rest.split_first_chunk::<32>()?;
    let (built_under, rest) = rest.split_first_chunk::<32>()?;
    let (digest, rest) = rest.split_first_chunk::<32>()?;
    let (length, content) = rest.split_first_chunk::<8>()?;
    let whole = magic == MAGIC
        && written_by == program
        && built_under == key.as_bytes()
        && u64::from_le_bytes(*length) == content.len() as u64
        && blake3::hash(content) == blake3::Hash::from_bytes(*digest);
    whole.then_some(content)
}

/// BLAKE3 of the running executable, read once per process.
fn program_digest() -> Result<&'static [u8; 32], String> {
    static DIGEST: OnceLock<Result<[u8; 32], String>> = OnceLock::new();
    DIGEST
        .get_or_init(|| {
            let path = std::env::current_exe().map_err(|e| e.to_string())?;
            let mut hasher = blake3::Hasher::new();
            hasher
                .update_reader(std::fs::File::open(&path).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
            Ok(*hasher.finalize().as_bytes())
        })
        .as_ref()
        .map_err(Clone::clone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> BuildKey {
        BuildKey::from_bytes(text.as_bytes())
    }

    #[test]
    fn a_kept_file_reads_back_only_under_its_own_key_and_program() {
        let program = [7u8; 32];
        let file = encode(&program, &key("a"), b"signed bytes");
        assert_eq!(
            decode(&file, &program, &key("a")),
            Some(&b"signed bytes"[..])
        );
        assert_eq!(
            decode(&file, &program, &key("b")),
            None,
            "another build's key"
        );
        assert_eq!(
            decode(&file, &[8u8; 32], &key("a")),
            None,
            "another program"
        );
    }

    #[test]
    fn a_torn_or_damaged_copy_is_never_read() {
        let program = [7u8; 32];
        let file = encode(&program, &key("a"), &[0x5a; 3000]);
        for cut in [0, 1, 8, HEADER - 1, HEADER, HEADER + 1, file.len() - 1] {
            assert_eq!(
                decode(&file[..cut], &program, &key("a")),
                None,
                "cut at {cut}"
            );
        }
        for flip in [0, 9, 45, 80, 110, HEADER, file.len() - 1] {
            let mut damaged = file.clone();
            damaged[flip] ^= 0x01;
            assert_eq!(
                decode(&damaged, &program, &key("a")),
                None,
                "bit flipped at {flip}"
            );
        }
        let mut longer = file.clone();
        longer.push(0);
        assert_eq!(
            decode(&longer, &program, &key("a")),
            None,
            "a byte too many"
        );
    }

    #[test]
    fn files_are_replaced_and_swept_when_their_device_is_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kept = KeptFiles::open(dir.path().join(KEPT_FILES_DIR)).expect("kept files");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(kept.dir())
            .expect("dir")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);

        let name = "SEP001122334455.cnf.xml.enc.sgn";
        assert_eq!(kept.read(name, &key("1")), None, "nothing kept yet");
        kept.write(name, &key("1"), b"first");
        kept.write(name, &key("2"), b"second");
        assert_eq!(
            kept.read(name, &key("1")),
            None,
            "replaced by the next build"
        );
        assert_eq!(kept.read(name, &key("2")).as_deref(), Some(&b"second"[..]));
        let mode = std::fs::metadata(kept.dir().join(name))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        kept.write(name, &key("3"), b"shorter");
        assert_eq!(kept.read(name, &key("3")).as_deref(), Some(&b"shorter"[..]));
        assert_eq!(
            std::fs::metadata(kept.dir().join(name))
                .expect("file")
                .len(),
            (HEADER + 7) as u64,
            "nothing of the longer copy before is left"
        );

        kept.write("ITLFile.tlv", &key("itl"), b"itl");
        kept.write("SEP00AABBCCDDEE.cnf.xml.sgn", &key("3"), b"other");
        let removed = kept.sweep(|device| device == "SEP001122334455");
        assert_eq!(removed, 1, "the gone device's copy");
        let mut left: Vec<_> = std::fs::read_dir(kept.dir())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().into_string().expect("name"))
            .collect();
        left.sort();
        assert_eq!(left, ["ITLFile.tlv", name]);
    }

    #[test]
    fn a_failed_write_is_not_the_requests_failure_and_the_next_success_clears_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kept = KeptFiles::open(dir.path().join(KEPT_FILES_DIR)).expect("kept files");
        std::fs::remove_dir(kept.dir()).expect("remove the directory under it");
        kept.write("ITLFile.tlv", &key("itl"), b"itl");
        assert!(kept.failing.load(Ordering::Relaxed));
        std::fs::create_dir(kept.dir()).expect("directory back");
        kept.write("ITLFile.tlv", &key("itl"), b"itl");
        assert!(!kept.failing.load(Ordering::Relaxed));
        assert_eq!(
            kept.read("ITLFile.tlv", &key("itl")).as_deref(),
            Some(&b"itl"[..])
        );
    }
}
