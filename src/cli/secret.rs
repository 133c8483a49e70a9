//! Secrets the operator gives a command: web admin passwords (`capf admin-user add`)
//! and the passphrase of a node identity file (`capf node export|join`).
//!
//! One is read from the terminal without echo, from the first line of standard input
//! (`--password-stdin`, `--passphrase-stdin`) or from the first line of a file
//! (`--passphrase-file`). A new one chosen on the terminal is asked for twice. What is
//! read is never printed, and is held in memory that is wiped when it is dropped.

use anyhow::{bail, Context, Result};
use rsa::pkcs8::der::zeroize::Zeroizing;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::Path;

/// Where a secret comes from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Source<'a> {
    /// The terminal, without echo.
    Prompt,
    /// The first line of standard input.
    Stdin,
    /// The first line of a file.
    File(&'a Path),
}

/// What the secret is, for prompts and messages.
pub(crate) struct Secret<'a> {
    /// "password", "passphrase".
    pub word: &'a str,
    /// The first prompt, e.g. "password for alice".
    pub prompt: &'a str,
    /// The options that give it without a terminal, e.g. "--password-stdin".
    pub options: &'a str,
}

/// Longest file a secret is read from (its first line is the secret).
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// Reads a secret chosen now. On the terminal it is asked for twice, and `check` runs
/// on the first answer before the second is asked for; from standard input or a file,
/// `check` runs on the line read.
pub(crate) fn read_new(
    source: Source,
    secret: &Secret,
    check: impl Fn(&str) -> Result<()>,
) -> Result<Zeroizing<String>> {
    let word = secret.word;
    if let Source::Prompt = source {
        require_terminal(secret)?;
        let first = prompt(&format!("{}: ", secret.prompt), word)?;
        check(&first)?;
        let again = prompt("again: ", word)?;
        if *first != *again {
            bail!("the {word}s differ; nothing was changed");
        }
        return Ok(first);
    }
    let value = read(source, secret)?;
    check(&value)?;
    Ok(value)
}

/// Reads a secret that exists already (asked for once on the terminal).
pub(crate) fn read(source: Source, secret: &Secret) -> Result<Zeroizing<String>> {
    let word = secret.word;
    match source {
        Source::Prompt => {
            require_terminal(secret)?;
            prompt(&format!("{}: ", secret.prompt), word)
        }
        Source::Stdin => {
            let mut line = Zeroizing::new(String::new());
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .with_context(|| format!("reading the {word} from standard input"))?;
            Ok(first_line(&line))
        }
        Source::File(path) => {
            let mut text = Zeroizing::new(String::new());
            std::fs::File::open(path)
                .and_then(|f| f.take(MAX_SECRET_FILE).read_to_string(&mut text))
                .with_context(|| format!("reading the {word} from {}", path.display()))?;
            Ok(first_line(&text))
        }
    }
}

fn require_terminal(secret: &Secret) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "standard input is not a terminal: give the {} with {}",
            secret.word,
            secret.options
        );
    }
    Ok(())
}

/// The first line of `text`, without its line ending.
fn first_line(text: &str) -> Zeroizing<String> {
    let line = text.split('\n').next().unwrap_or_default();
    Zeroizing::new(line.trim_end_matches('\r').to_string())
}

/// Reads one line from the terminal without echoing it.
fn prompt(text: &str, word: &str) -> Result<Zeroizing<String>> {
    eprint!("{text}");
    std::io::stderr().flush()?;
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios is plain data; tcgetattr fills it for a terminal descriptor.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    let is_tty = unsafe { libc::tcgetattr(fd, &mut saved) } == 0;
    if is_tty {
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        quiet.c_lflag |= libc::ECHONL;
        // SAFETY: `quiet` is a valid termios read from this descriptor.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    let mut line = Zeroizing::new(String::new());
    let read = std::io::stdin().lock().read_line(&mut line);
    if is_tty {
        // SAFETY: restores the settings read above.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    }
    read.with_context(|| format!("reading the {word}"))?;
    Ok(first_line(&line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_the_first_line_without_its_ending() {
        assert_eq!(*first_line("a secret phrase\r\nmore\n"), "a secret phrase");
        assert_eq!(*first_line("no newline"), "no newline");
        assert_eq!(*first_line(""), "");
    }

    #[test]
    fn a_secret_file_gives_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "correct horse battery\nstaple\n").unwrap();
        let secret = Secret {
            word: "passphrase",
            prompt: "passphrase",
            options: "--passphrase-file",
        };
        let read = read_new(Source::File(&path), &secret, |s| {
            anyhow::ensure!(s.len() >= 12, "short");
            Ok(())
        })
        .unwrap();
        assert_eq!(*read, "correct horse battery");
        std::fs::write(&path, "short\n").unwrap();
        assert!(read_new(Source::File(&path), &secret, |s| {
            anyhow::ensure!(s.len() >= 12, "short");
            Ok(())
        })
        .is_err());
    }
}
