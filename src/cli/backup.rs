//! `capf backup DIR`: a consistent copy of the data directory, taken while serving.

use anyhow::{Context, Result};
use clap::Args;
use std::path::Path;
use std::process::ExitCode;

use super::{private, Ctx};
use crate::settings::DataDir;

#[derive(Args, Debug)]
#[command(
    after_help = "Example:\n  capf backup /srv/backup/capf-$(date +%F)\n\nThe directory must not exist: capf creates it (0700), and every file in it is 0600.\n\nRestore: stop capf, then use the backup as the data directory:\n  capf --data /srv/backup/capf-2026-11-27 serve"
)]
pub struct BackupArgs {
    /// Where to write the backup: a directory that does not exist yet, under
    /// directories only root and capf's user can change.
    pub dir: std::path::PathBuf,
}

/// The backup holds the CA key and every authentication string, and capf may run as
/// root: it is written only into a directory capf creates itself, under parents no
/// other user can change, each file created exclusively (never through a symlink)
/// and readable by its owner alone.
pub fn run(ctx: &mut Ctx, args: BackupArgs) -> Result<ExitCode> {
    let target = DataDir::new(ctx.path(&args.dir));
    private::create_new_private_dir(target.root(), "the backup")?;
    // The store first: a consistent snapshot of every tree. sled creates its files
    // with the default mode; they hold the authentication strings.
    private::create_private_dir(&target.db())?;
    ctx.store.backup_to(&target.db())?;
    private::restrict_tree(&target.db())?;
    copy_dir(&ctx.data.certs(), &target.certs())?;
    copy_dir(&ctx.data.tftp(), &target.tftp())?;
    let settings = ctx.data.settings_file();
    if settings.exists() {
        copy_file(&settings, &target.settings_file())?;
    }
    writeln!(ctx.out, "backup written to {}", target.root().display())?;
    Ok(ExitCode::SUCCESS)
}

/// Copies a directory tree into new directories (0700) and new files (0600).
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    if !from.exists() {
        return Ok(());
    }
    private::create_private_dir(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else {
            copy_file(&entry.path(), &dest)?;
        }
    }
    Ok(())
}

/// Copies one file into a new file, 0600, created exclusively.
fn copy_file(from: &Path, to: &Path) -> Result<()> {
    let copied = (|| {
        let mut source = std::fs::File::open(from)?;
        let mut dest = crate::ca::open_new(to, private::FILE_MODE)?;
        std::io::copy(&mut source, &mut dest)?;
        dest.sync_all()
    })();
    copied.with_context(|| format!("copying {} to {}", from.display(), to.display()))
}
