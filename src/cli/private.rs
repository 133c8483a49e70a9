//! Directories capf creates for itself, the checks on directories it is handed, and
//! who is running it.
//!
//! What capf writes holds private keys and authentication strings, and it often runs
//! as root. So it writes only into directories that no other user can change: ones it
//! creates itself (0700), or existing ones that belong to it and that only it can
//! write to. Files are created exclusively and never through a symlink
//! (`crate::ca::open_new`, `crate::ca::replace`).

use anyhow::{bail, Context, Result};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// Mode of every directory capf creates for its data.
pub(crate) const DIR_MODE: u32 = 0o700;
/// Mode of store files and backup copies: the owner's alone.
pub(crate) const FILE_MODE: u32 = 0o600;

/// The effective uid of this process: who owns what it creates.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The real uid of this process: who ran it.
pub(crate) fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// The login name of `uid` (from the passwd database, NSS included), if it has one.
pub(crate) fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 1024];
    loop {
        // SAFETY: an all-zero passwd is a valid value (null pointers, zero ids); it is
        // only read after getpwuid_r filled it in.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call, `buf.len()` is the buffer's
        // size, and the strings in `entry` point into `buf`, which outlives their use.
        let rc =
            unsafe { libc::getpwuid_r(uid, &mut entry, buf.as_mut_ptr(), buf.len(), &mut found) };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || found.is_null() || entry.pw_name.is_null() {
            return None;
        }
        // SAFETY: pw_name is a NUL-terminated string inside `buf`.
        let name = unsafe { std::ffi::CStr::from_ptr(entry.pw_name) };
        return Some(name.to_string_lossy().into_owned());
    }
}

/// Creates `dir` 0700; its parent must exist. Fails if anything is at that name
/// already (a symlink included): a directory capf creates is one nobody prepared.
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .mode(DIR_MODE)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    // The umask can only have narrowed it; the owner needs all three bits.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
        .with_context(|| format!("restricting {}", dir.display()))
}

/// Creates `dir` 0700 where nothing is yet, with its missing parents, under parents
/// only root and this user can change: a directory for secrets (a backup, a new
/// store). `what` says in the refusal what the directory is for.
pub(crate) fn create_new_private_dir(dir: &Path, what: &str) -> Result<()> {
    if std::fs::symlink_metadata(dir).is_ok() {
        anyhow::bail!(
            "{} already exists: {what} is a new directory that capf creates itself (name \
             one that does not exist, or move the old one aside)",
            dir.display()
        );
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    check_ancestors(parent)?;
    create_private_dir(dir)
}

/// Creates `dir` 0700, or checks that the existing one is a directory of this user
/// that no other user can write to, and makes it 0700. Another user's directory, or
/// one others could write to, is refused: what is in it may have been planted.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<()> {
    match std::fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => check_own_dir(dir)?,
        Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
        .with_context(|| format!("restricting {}", dir.display()))
}

/// Creates `dir` 0700 if it is missing; an existing one is left as it is.
pub(crate) fn create_private_dir_if_missing(dir: &Path) -> Result<()> {
    match std::fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(e).with_context(|| format!("creating {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// An existing directory is capf's to use: a directory (a symlink to one counts),
/// owned by this user, writable by nobody else.
pub(crate) fn check_own_dir(dir: &Path) -> Result<()> {
    let meta = std::fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("{} exists and is not a directory", dir.display());
    }
    if meta.uid() != euid() {
        bail!(
            "{} belongs to uid {}, not to the user capf runs as (uid {}); \
             let capf create the directory, or hand it over (chown) first",
            dir.display(),
            meta.uid(),
            euid()
        );
    }
    if meta.mode() & 0o022 != 0 {
        bail!(
            "{} can be written by other users (mode {:o}), who may have planted files in it; \
             let capf create the directory, or check it and `chmod 700` it first",
            dir.display(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

/// No other user can rename or replace `dir`, or any directory above it: each belongs
/// to root or to this user, and one that others may write to has the sticky bit (as
/// /tmp does). Otherwise a directory capf just created there could be swapped for
/// another user's before capf writes into it.
pub(crate) fn check_ancestors(dir: &Path) -> Result<()> {
    let canonical = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    for ancestor in canonical.ancestors() {
        let meta = std::fs::metadata(ancestor)
            .with_context(|| format!("reading {}", ancestor.display()))?;
        let mode = meta.mode();
        let owner_trusted = meta.uid() == 0 || meta.uid() == euid();
        let others_may_rename = mode & 0o022 != 0 && mode & 0o1000 == 0;
        if !owner_trusted || others_may_rename {
            bail!(
                "{} is not safe to write under: {} belongs to uid {} with mode {:o}, so \
                 another user could replace what capf creates there; choose a directory \
                 only root and uid {} can change",
                dir.display(),
                ancestor.display(),
                meta.uid(),
                mode & 0o7777,
                euid()
            );
        }
    }
    Ok(())
}

/// Makes every directory under `dir` (and `dir`) 0700 and every file 0600, without
/// following symlinks: for sled's files, which sled creates with the default mode.
pub(crate) fn restrict_tree(dir: &Path) -> Result<()> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
        .with_context(|| format!("restricting {}", dir.display()))?;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let path = entry.path();
        if kind.is_dir() {
            restrict_tree(&path)?;
        } else if kind.is_file() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(FILE_MODE))
                .with_context(|| format!("restricting {}", path.display()))?;
        }
    }
    Ok(())
}
