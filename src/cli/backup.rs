//! `capf backup DIR`: a consistent copy of the data directory, taken while serving.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::Path;
use std::process::ExitCode;

use super::Ctx;
use crate::settings::DataDir;

#[derive(Args, Debug)]
#[command(
    after_help = "Example:\n  capf backup /srv/backup/capf-$(date +%F)\n\nRestore: stop capf, then use the backup as the data directory:\n  capf --data /srv/backup/capf-2026-11-27 serve"
)]
pub struct BackupArgs {
    /// Where to write the backup (must not exist yet, or be empty).
    pub dir: std::path::PathBuf,
}

pub fn run(ctx: &mut Ctx, args: BackupArgs) -> Result<ExitCode> {
    let target = DataDir::new(ctx.path(&args.dir));
    if target.root().exists()
        && std::fs::read_dir(target.root())
            .with_context(|| format!("reading {}", target.root().display()))?
            .next()
            .is_some()
    {
        bail!("{} is not empty", target.root().display());
    }
    std::fs::create_dir_all(target.root())
        .with_context(|| format!("creating {}", target.root().display()))?;
    restrict(target.root(), 0o700)?;
    // The store first: a consistent snapshot of every tree.
    ctx.store.backup_to(&target.db())?;
    copy_dir(&ctx.data.certs(), &target.certs())?;
    copy_dir(&ctx.data.tftp(), &target.tftp())?;
    let settings = ctx.data.settings_file();
    if settings.exists() {
        std::fs::copy(&settings, target.settings_file())
            .with_context(|| format!("copying {}", settings.display()))?;
    }
    writeln!(ctx.out, "backup written to {}", target.root().display())?;
    Ok(ExitCode::SUCCESS)
}

/// Copies a directory tree, keeping file modes (private keys stay 0600).
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    if !from.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    restrict(to, 0o700)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else {
            std::fs::copy(entry.path(), &dest)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

fn restrict(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("restricting {}", path.display()))
}
