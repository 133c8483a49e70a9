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

use crate::phone_config::plan::{BuildKey, MAX_DOCUMENT};
use std::collections::VecDeque;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

/// What a kept file starts with (the layout's version is its last byte).
const MAGIC: &[u8; 8] = b"CAPFKF\x00\x01";

/// Magic, program, key, digest, length.
const HEADER: usize = 8 + 32 + 32 + 32 + 8;

/// The largest kept file read: a file built from the largest base document
/// ([`MAX_DOCUMENT`]) with room for its signature header, its
/// encryption and padding.
const MAX_KEPT: u64 = MAX_DOCUMENT + 256 * 1024;

/// Builds waiting for the writer at most: two files for each of 100,000 phones and
/// room to spare. Each holds a reference to the file's bytes (shared with the memory
/// cache while it holds them) and its name and key, about 100 bytes. A build that
/// finds the queue full is not kept on disk (it is built again after a restart). The
/// queue grows as it fills (a bounded channel allocated all its slots up front: 22 MiB
/// at this size, measured as idle RSS).
const QUEUE: usize = 256 * 1024;

/// The signed files of one node, kept on disk.
///
/// A build hands its file to a writer thread and goes on: the copy is for a restart
/// to come, and a phone waiting for its file comes first. The writer runs at the
/// scheduler's idle priority (`SCHED_IDLE`), on CPU nothing else wants; during a
/// storm of builds it waits, and it writes once the storm is served. Dropping the
/// `KeptFiles` (the node shutting down) writes what is still queued on the dropping
/// thread, at its priority: a node stopping on a busy machine is not held up by a
/// writer that gets no CPU.
pub struct KeptFiles {
    copies: Arc<Copies>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// A full queue was said once.
    overflowed: AtomicBool,
}

/// A copy waiting to be written.
struct Job {
    name: String,
    key: BuildKey,
    bytes: Arc<[u8]>,
}

/// The directory, what a copy must match, and the copies waiting.
struct Copies {
    dir: PathBuf,
    /// BLAKE3 of the running program's executable.
    program: [u8; 32],
    /// A failed write was reported and none has succeeded since: a full disk is said
    /// once, not for every file.
    failing: AtomicBool,
    queue: Mutex<Queue>,
    /// Signalled when a job is queued, and when the writer should end.
    queued: Condvar,
    /// Signalled when the writer finished a job.
    written: Condvar,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Whether the writer is writing a job it took.
    writing: bool,
    /// The writer ends.
    closing: bool,
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
        let copies = Arc::new(Copies {
            dir,
            program,
            failing: AtomicBool::new(false),
            queue: Mutex::new(Queue::default()),
            queued: Condvar::new(),
            written: Condvar::new(),
        });
        let writer = std::thread::Builder::new()
            .name("kept-files".into())
            .spawn({
                let copies = copies.clone();
                move || copies.write_queued()
            });
        let writer = match writer {
            Ok(writer) => writer,
            Err(e) => {
                tracing::warn!("built files are kept in memory only: no writer thread ({e})");
                return None;
            }
        };
        Some(KeptFiles {
            copies,
            writer: Some(writer),
            overflowed: AtomicBool::new(false),
        })
    }

    /// The copy of `name` built under `key` by this program, if one is kept whole.
    pub fn read(&self, name: &str, key: &BuildKey) -> Option<Arc<[u8]>> {
        self.copies.read(name, key)
    }

    /// Queues `bytes`, built under `key`, to be kept as the copy of `name`.
    pub fn write(&self, name: &str, key: &BuildKey, bytes: Arc<[u8]>) {
        let mut queue = self.copies.lock();
        if queue.jobs.len() >= QUEUE {
            drop(queue);
            if !self.overflowed.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "{QUEUE} built files wait to be kept in {}; those beyond are kept in \
                     memory only",
                    self.copies.dir.display()
                );
            }
            return;
        }
        queue.jobs.push_back(Job {
            name: name.to_owned(),
            key: *key,
            bytes,
        });
        drop(queue);
        self.copies.queued.notify_one();
    }

    /// Writes what is queued on the calling thread, and returns once the writer has
    /// finished the copy it was writing: every copy queued before is then written (or
    /// failed). The two may write one name at once (an older build by the writer, a
    /// newer one here): the copy left is then torn or the older one, refused by its
    /// digest or its key, and built again.
    pub fn flush(&self) {
        let copies = &self.copies;
        loop {
            let mut queue = copies.lock();
            match queue.jobs.pop_front() {
                Some(job) => {
                    drop(queue);
                    copies.write(&job.name, &job.key, &job.bytes);
                }
                None => {
                    while queue.writing {
                        queue = copies
                            .written
                            .wait(queue)
                            .unwrap_or_else(PoisonError::into_inner);
                    }
                    return;
                }
            }
        }
    }

    /// Removes the copies of devices `known` says are gone (given the device name).
    /// Returns how many files went.
    pub fn sweep(&self, known: impl Fn(&str) -> bool) -> usize {
        self.copies.sweep(known)
    }
}

impl Drop for KeptFiles {
    fn drop(&mut self) {
        self.flush();
        self.copies.lock().closing = true;
        self.copies.queued.notify_one();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Copies {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves a queue that is still a queue.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The writer thread: the queued copies in order, at idle priority, until closed.
    fn write_queued(&self) {
        // SAFETY: sets the calling thread's own policy (pid 0) from a valid
        // `sched_param`; lowering a thread to SCHED_IDLE needs no privilege. If it
        // fails the writer runs at normal priority, which is only slower for others.
        unsafe {
            let param = libc::sched_param { sched_priority: 0 };
            libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
        }
        let mut queue = self.lock();
        loop {
            if let Some(job) = queue.jobs.pop_front() {
                queue.writing = true;
                drop(queue);
                self.write(&job.name, &job.key, &job.bytes);
                queue = self.lock();
                queue.writing = false;
                self.written.notify_all();
            } else if queue.closing {
                return;
            } else {
                queue = self
                    .queued
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
    }

    fn read(&self, name: &str, key: &BuildKey) -> Option<Arc<[u8]>> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(self.path(name)?)
            .ok()?;
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
    fn write(&self, name: &str, key: &BuildKey, bytes: &[u8]) {
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
            .open(self.path(name).ok_or(std::io::ErrorKind::InvalidInput)?)?;
        file.write_all_at(contents, 0)?;
        // Shorter than the copy before: cut what is left of it.
        if file.metadata()?.len() > contents.len() as u64 {
            file.set_len(contents.len() as u64)?;
        }
        Ok(())
    }

    /// Where the copy of `name` is: a served name is one plain file name (`SEP….cnf.xml…`,
    /// `ITLFile.tlv`); anything else has no copy.
    fn path(&self, name: &str) -> Option<PathBuf> {
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.');
        plain.then(|| self.dir.join(name))
    }

    fn sweep(&self, known: impl Fn(&str) -> bool) -> usize {
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

/// BLAKE3 of the running executable, read once per process. `/proc/self/exe` is the
/// very file the process runs, even when an upgrade has since put another at its path.
fn program_digest() -> Result<&'static [u8; 32], String> {
    static DIGEST: OnceLock<Result<[u8; 32], String>> = OnceLock::new();
    DIGEST
        .get_or_init(|| {
            let program = std::fs::File::open("/proc/self/exe")
                .or_else(|_| std::fs::File::open(std::env::current_exe()?))
                .map_err(|e| e.to_string())?;
            let mut hasher = blake3::Hasher::new();
            hasher.update_reader(program).map_err(|e| e.to_string())?;
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

    /// Writes through the queue, and waits for it.
    fn keep(kept: &KeptFiles, name: &str, key: &BuildKey, bytes: &[u8]) {
        kept.write(name, key, bytes.into());
        kept.flush();
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
        let kept = KeptFiles::open(dir.path().join("kept-files")).expect("kept files");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(kept.copies.dir.as_path())
            .expect("dir")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);

        for odd in ["../ITLFile.tlv", "/etc/passwd", ".hidden", "", "a/b"] {
            keep(&kept, odd, &key("1"), b"never");
            assert_eq!(kept.read(odd, &key("1")), None, "{odd:?} has no copy");
        }
        assert!(!dir.path().join("ITLFile.tlv").exists());

        let name = "SEP001122334455.cnf.xml.enc.sgn";
        assert_eq!(kept.read(name, &key("1")), None, "nothing kept yet");
        keep(&kept, name, &key("1"), b"first");
        keep(&kept, name, &key("2"), b"second");
        assert_eq!(
            kept.read(name, &key("1")),
            None,
            "replaced by the next build"
        );
        assert_eq!(kept.read(name, &key("2")).as_deref(), Some(&b"second"[..]));
        let mode = std::fs::metadata(kept.copies.dir.as_path().join(name))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        keep(&kept, name, &key("3"), b"shorter");
        assert_eq!(kept.read(name, &key("3")).as_deref(), Some(&b"shorter"[..]));
        assert_eq!(
            std::fs::metadata(kept.copies.dir.as_path().join(name))
                .expect("file")
                .len(),
            (HEADER + 7) as u64,
            "nothing of the longer copy before is left"
        );

        keep(&kept, "ITLFile.tlv", &key("itl"), b"itl");
        keep(&kept, "SEP00AABBCCDDEE.cnf.xml.sgn", &key("3"), b"other");
        let removed = kept.sweep(|device| device == "SEP001122334455");
        assert_eq!(removed, 1, "the gone device's copy");
        let mut left: Vec<_> = std::fs::read_dir(kept.copies.dir.as_path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().into_string().expect("name"))
            .collect();
        left.sort();
        assert_eq!(left, ["ITLFile.tlv", name]);
    }

    #[test]
    fn a_failed_write_is_remembered_until_a_write_succeeds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kept = KeptFiles::open(dir.path().join("kept-files")).expect("kept files");
        std::fs::remove_dir(kept.copies.dir.as_path()).expect("remove the directory under it");
        keep(&kept, "ITLFile.tlv", &key("itl"), b"itl");
        assert!(kept.copies.failing.load(Ordering::Relaxed));
        std::fs::create_dir(kept.copies.dir.as_path()).expect("directory back");
        keep(&kept, "ITLFile.tlv", &key("itl"), b"itl");
        assert!(!kept.copies.failing.load(Ordering::Relaxed));
        assert_eq!(
            kept.read("ITLFile.tlv", &key("itl")).as_deref(),
            Some(&b"itl"[..])
        );
    }

    #[test]
    fn what_is_queued_is_written_before_the_files_are_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kept-files");
        let kept = KeptFiles::open(path.clone()).expect("kept files");
        let names: Vec<String> = (0..200)
            .map(|n| format!("SEP0000000000{n:02X}.cnf.xml.sgn"))
            .collect();
        for name in &names {
            kept.write(name, &key(name), name.as_bytes().into());
        }
        drop(kept);
        let reopened = KeptFiles::open(path).expect("kept files");
        for name in &names {
            assert_eq!(
                reopened.read(name, &key(name)).as_deref(),
                Some(name.as_bytes()),
                "{name}"
            );
        }
    }
}
