//! The admin socket: how CLI commands reach a running server.
//!
//! sled locks its directory, so while `capf serve` runs no other process can open the
//! store (design.md "One process owns the store"). Every store-backed command therefore
//! first tries `capf-data/admin.sock`: if a server answers, the command line is sent to
//! it and run there by the very same code (`cli::execute`) against the server's store;
//! its output streams back. Otherwise the CLI opens the store itself. Same output, same
//! exit codes either way.
//!
//! Who may use it: the socket is 0600 in a 0700 directory, and the server also asks
//! the kernel who is at the other end (`SO_PEERCRED`) and serves only root, the owner
//! of the data directory and its own user. Anyone else gets an error and nothing runs.
//! The audit trail records that uid (and its user name), not what the client claims:
//! `cli:<name> (uid N)`, see `cli::actor_for`.
//!
//! Wire format (local only):
//! * request: one JSON object `{"argv": [...], "cwd": "...", "user": "..."}` and a
//!   newline, at most `MAX_REQUEST` bytes (`user` is informational only; the optional
//!   `sudo_user` is the client's `SUDO_USER`, shown in the actor);
//! * response: frames `kind:u8 len:u32 BE bytes`, kind `O` (stdout) or `E` (stderr),
//!   ended by one `X` frame whose single byte is the exit status.

use anyhow::{Context, Result};
use clap::Parser;
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

use super::{Cli, Ctx};
use crate::settings::DataDir;
use crate::store::Store;

/// Largest request line: argv of any real command line is far below this.
const MAX_REQUEST: u64 = 256 * 1024;
/// Largest frame body: output is cut into frames of at most this size, so a large
/// output (`device list --json` of a big fleet) streams without a size limit.
const MAX_FRAME: usize = 1024 * 1024;
/// How long the server waits for a client to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Serialize, Deserialize)]
struct Request {
    argv: Vec<String>,
    cwd: String,
    user: String,
    /// The client's UTC offset in seconds, so times print in the operator's local time.
    #[serde(default)]
    utc_offset: i32,
    /// The client's `SUDO_USER`: who ran the command through sudo, as sudo says.
    #[serde(default)]
    sudo_user: Option<String>,
}

/// [`forward`], trying again until `patience` has passed: for a node that holds the
/// store but has not bound its admin socket yet. `Ok(None)` if it never answers.
pub fn forward_when_up(
    data: &DataDir,
    argv: &[OsString],
    patience: Duration,
) -> Result<Option<ExitCode>> {
    let until = std::time::Instant::now() + patience;
    loop {
        if let Some(code) = forward(data, argv)? {
            return Ok(Some(code));
        }
        if std::time::Instant::now() >= until {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Client side: sends the command to a running server. `Ok(None)` when no server
/// answers on the socket, so the caller opens the store itself.
pub fn forward(data: &DataDir, argv: &[OsString]) -> Result<Option<ExitCode>> {
    let mut stream = match UnixStream::connect(data.admin_socket()) {
        Ok(s) => s,
        Err(_) => return Ok(None),
    };
    let request = Request {
        argv: argv
            .iter()
            .map(|a| {
                a.to_str()
                    .map(str::to_string)
                    .context("arguments must be valid UTF-8")
            })
            .collect::<Result<_>>()?,
        cwd: std::env::current_dir()?.to_string_lossy().into_owned(),
        user: super::cli_actor(),
        utc_offset: super::local_utc_offset(),
        sudo_user: super::sudo_user(),
    };
    let mut line = serde_json::to_vec(&request)?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .context("sending the command to capf serve")?;

    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    loop {
        let mut head = [0u8; 5];
        stream
            .read_exact(&mut head)
            .context("capf serve closed the admin connection before the command finished")?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > MAX_FRAME {
            anyhow::bail!("capf serve sent an admin frame of {len} bytes (at most {MAX_FRAME})");
        }
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body)?;
        match head[0] {
            b'O' => stdout.lock().write_all(&body)?,
            b'E' => stderr.lock().write_all(&body)?,
            b'X' => return Ok(Some(ExitCode::from(body.first().copied().unwrap_or(1)))),
            other => anyhow::bail!("unexpected admin frame {other}"),
        }
    }
}

/// Server side: the bound admin socket.
pub struct AdminSocket {
    listener: tokio::net::UnixListener,
    path: std::path::PathBuf,
    /// The uids served besides root: the data directory's owner and the server's own.
    trusted: [u32; 2],
}

impl AdminSocket {
    /// Binds `admin.sock` (0600). Call it only while holding the store: any socket file
    /// found then belongs to a dead server and is replaced.
    ///
    /// The mode is set on the socket before it is bound (Linux creates the file with
    /// the socket's mode, less the umask), so the file is never more open than 0600
    /// and no path is changed after the fact: a symlink planted at the name between
    /// bind and chmod can no longer redirect a chmod done as root.
    pub fn bind(data: &DataDir) -> Result<AdminSocket> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let path = data.admin_socket();
        let owner = std::fs::metadata(data.root())
            .with_context(|| format!("reading {}", data.root().display()))?
            .uid();
        let _ = std::fs::remove_file(&path);
        let bound = (|| -> std::io::Result<std::os::unix::net::UnixListener> {
            let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
            let file = std::fs::File::from(std::os::fd::OwnedFd::from(socket));
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            let socket = socket2::Socket::from(std::os::fd::OwnedFd::from(file));
            socket.bind(&socket2::SockAddr::unix(&path)?)?;
            socket.listen(128)?;
            socket.set_nonblocking(true)?;
            Ok(std::os::fd::OwnedFd::from(socket).into())
        })();
        let listener = bound
            .and_then(tokio::net::UnixListener::from_std)
            .with_context(|| format!("binding the admin socket {}", path.display()))?;
        Ok(AdminSocket {
            listener,
            path,
            trusted: [owner, super::private::euid()],
        })
    }

    /// Serves admin connections until `shutdown` completes, then removes the socket.
    pub async fn serve(
        self,
        data: DataDir,
        store: Store,
        listening: super::Listening,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            let (stream, _) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("admin socket accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            // The kernel's word for who connected, not the client's.
            let uid = stream.peer_cred().map(|c| c.uid()).ok();
            let trusted = self.trusted;
            let data = data.clone();
            let store = store.clone();
            tokio::task::spawn_blocking(move || {
                let Ok(std_stream) = stream.into_std() else {
                    return;
                };
                if let Err(e) = serve_one(&data, &store, listening, std_stream, uid, trusted) {
                    tracing::debug!("admin connection: {e:#}");
                }
            });
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Runs one forwarded command (on a blocking thread) for the peer `uid`, if it is
/// root or one of the `trusted` uids.
fn serve_one(
    data: &DataDir,
    store: &Store,
    listening: super::Listening,
    stream: UnixStream,
    uid: Option<u32>,
    trusted: [u32; 2],
) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    let mut line = Vec::new();
    BufReader::new((&stream).take(MAX_REQUEST)).read_until(b'\n', &mut line)?;
    let uid = match uid {
        Some(uid) if uid == 0 || trusted.contains(&uid) => uid,
        other => {
            let who = other.map_or("a peer whose uid is unknown".into(), |u| format!("uid {u}"));
            tracing::warn!(
                "admin socket: refused {who} (only root and uid {} may use it)",
                trusted[0]
            );
            return finish(
                &stream,
                1,
                &format!(
                    "capf: refused: {who} may not use the admin socket of {} \
                     (only root and its owner, uid {}, may)\n",
                    data.root().display(),
                    trusted[0]
                ),
            );
        }
    };
    // Buffered to a whole frame: a large output goes out in frames of `MAX_FRAME`.
    let mut out = std::io::BufWriter::with_capacity(MAX_FRAME, FrameWriter { stream: &stream });
    let request: Request = match serde_json::from_slice(&line) {
        Ok(r) => r,
        Err(e) => return finish(&stream, 2, &format!("capf: bad admin request: {e}\n")),
    };
    let cli = match Cli::try_parse_from(&request.argv) {
        Ok(cli) => cli,
        Err(e) => {
            let code = u8::from(e.use_stderr()) * 2;
            return finish(&stream, code, &e.render().to_string());
        }
    };
    let actor = super::actor_for(uid, request.sudo_user.as_deref());
    let mut ctx = Ctx {
        data,
        store,
        out: &mut out,
        actor,
        cwd: request.cwd.into(),
        now: crate::model::now(),
        progress: false,
        utc_offset: request.utc_offset,
        serving: Some(listening),
    };
    let result = super::execute(&mut ctx, cli.command);
    out.flush()?;
    match result {
        Ok(code) => {
            store.flush()?;
            let code = if code == ExitCode::SUCCESS { 0 } else { 1 };
            finish(&stream, code, "")
        }
        Err(e) => finish(
            &stream,
            1,
            &format!("capf: {:#}\n", super::name_damage(e, data)),
        ),
    }
}

fn finish(stream: &UnixStream, code: u8, stderr: &str) -> Result<()> {
    if !stderr.is_empty() {
        frame(stream, b'E', stderr.as_bytes())?;
    }
    frame(stream, b'X', &[code])
}

fn frame(mut stream: &UnixStream, kind: u8, body: &[u8]) -> Result<()> {
    let len = u32::try_from(body.len()).context("admin frame too large")?;
    let mut head = [kind, 0, 0, 0, 0];
    head[1..].copy_from_slice(&len.to_be_bytes());
    stream.write_all(&head)?;
    stream.write_all(body)?;
    Ok(())
}

/// Streams a command's standard output to the client as `O` frames.
struct FrameWriter<'a> {
    stream: &'a UnixStream,
}

impl Write for FrameWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let chunk = buf.get(..MAX_FRAME).unwrap_or(buf);
        frame(self.stream, b'O', chunk).map_err(std::io::Error::other)?;
        Ok(chunk.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_output_is_cut_into_bounded_frames_that_reassemble() {
        let (server, mut client) = UnixStream::pair().unwrap();
        let output: Vec<u8> = (0..3 * MAX_FRAME + 123).map(|i| (i % 251) as u8).collect();
        let expected = output.clone();
        let writer = std::thread::spawn(move || {
            let mut out = std::io::BufWriter::new(FrameWriter { stream: &server });
            out.write_all(&output).unwrap();
            out.flush().unwrap();
            drop(out);
            finish(&server, 0, "").unwrap();
        });
        let mut received = Vec::new();
        loop {
            let mut head = [0u8; 5];
            client.read_exact(&mut head).unwrap();
            let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            assert!(len <= MAX_FRAME, "frame of {len} bytes");
            let mut body = vec![0u8; len];
            client.read_exact(&mut body).unwrap();
            if head[0] == b'X' {
                break;
            }
            received.extend_from_slice(&body);
        }
        writer.join().unwrap();
        assert_eq!(received, expected);
    }
}
