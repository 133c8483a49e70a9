//! Reads and writes whole CAPF messages on a byte stream (after mini-redis'
//! `connection.rs`). Generic over the stream so every TLS backend shares it.

use crate::protocol::HEADER_LEN;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// One CAPF connection: a stream plus the buffer of the message being read.
pub struct Connection<S> {
    stream: S,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub fn new(stream: S) -> Self {
        Connection { stream }
    }

    /// Reads exactly one header, looping over short reads (R1). `Ok(None)` on a clean
    /// EOF before the first byte or in the middle of the header: there is nobody left
    /// to answer.
    pub async fn read_header(&mut self) -> io::Result<Option<[u8; HEADER_LEN]>> {
        let mut header = [0u8; HEADER_LEN];
        match self.stream.read_exact(&mut header).await {
            Ok(_) => Ok(Some(header)),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads exactly `len` payload bytes (R4). The caller has checked `len` against the
    /// cap, so the allocation is bounded. `Ok(None)` on EOF.
    pub async fn read_payload(&mut self, len: usize) -> io::Result<Option<Vec<u8>>> {
        let mut payload = vec![0u8; len];
        match self.stream.read_exact(&mut payload).await {
            Ok(_) => Ok(Some(payload)),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes one whole message in one write and flushes (R14, §10 item 1: phones
    /// stall if the header arrives in its own TLS record).
    pub async fn write_message(&mut self, message: &[u8]) -> io::Result<()> {
        self.stream.write_all(message).await?;
        self.stream.flush().await
    }

    /// TLS close_notify, then close (R18).
    pub async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}
