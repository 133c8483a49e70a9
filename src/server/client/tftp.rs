//! A TFTP client that fetches one file the way a phone does at boot (RFC 1350 read,
//! octet mode, 512-byte blocks, no options). `capf doctor` uses it to check what phones
//! get from the running node; the phone simulator, to show that a real phone still gets
//! its files while the server is under attack.
//!
//! Like a phone, it sends its read request again when nothing comes back (a server
//! under load may drop a request; the client's retransmission is what recovers), and
//! it acknowledges every block, including a repeated one.

use super::FetchError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;

/// How long the phone waits for the first answer before sending its request again.
const REQUEST_RETRY: Duration = Duration::from_secs(1);
/// Read requests sent before the phone gives up.
const REQUEST_ATTEMPTS: u32 = 5;
/// How long the phone waits for the next block.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest file the phone accepts.
const MAX_FILE: usize = 16 * 1024 * 1024;

/// Fetches `name` from the TFTP server at `server`, from an ephemeral port of
/// `from` (the unspecified address of the server's family when `None`).
pub async fn tftp_get(
    server: SocketAddr,
    name: &str,
    from: Option<IpAddr>,
) -> Result<Vec<u8>, FetchError> {
    let local = from.unwrap_or(match server {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    });
    let socket = UdpSocket::bind(SocketAddr::new(local, 0)).await?;
    let mut request = vec![0, 1];
    for field in [name, "octet"] {
        request.extend_from_slice(field.as_bytes());
        request.push(0);
    }
    let mut buf = vec![0u8; 4 + 512];

    // The first block, with the request sent again each second until it comes.
    let mut first = None;
    for _ in 0..REQUEST_ATTEMPTS {
        socket.send_to(&request, server).await?;
        if let Ok(received) = tokio::time::timeout(REQUEST_RETRY, socket.recv_from(&mut buf)).await
        {
            first = Some(received?);
            break;
        }
    }
    let (mut n, tid) = first.ok_or(FetchError::Timeout)?;
    let mut file = Vec::new();
    let mut expected: u16 = 1;
    loop {
        let packet = buf.get(..n).unwrap_or_default();
        match packet {
            [0, 3, hi, lo, data @ ..] => {
                let block = u16::from_be_bytes([*hi, *lo]);
                if block == expected {
                    file.extend_from_slice(data);
                    if file.len() > MAX_FILE {
                        return Err(FetchError::Tftp("file too large".into()));
                    }
                    expected = expected.wrapping_add(1);
                }
                // A repeated block is acknowledged again: our ACK was lost.
                socket.send_to(&[0, 4, *hi, *lo], tid).await?;
                if block == expected.wrapping_sub(1) && data.len() < 512 {
                    return Ok(file);
                }
            }
            [0, 5, hi, lo, message @ ..] => {
                let code = u16::from_be_bytes([*hi, *lo]);
                let message = message.split(|&b| b == 0).next().unwrap_or_default();
                return Err(FetchError::Tftp(format!(
                    "error {code}: {}",
                    String::from_utf8_lossy(message)
                )));
            }
            _ => return Err(FetchError::Tftp(format!("unexpected packet {packet:02x?}"))),
        }
        // Only the transfer's own port speaks for it (RFC 1350 transfer IDs).
        loop {
            let (len, from) = tokio::time::timeout(BLOCK_TIMEOUT, socket.recv_from(&mut buf))
                .await
                .map_err(|_| FetchError::Timeout)??;
            if from == tid {
                n = len;
                break;
            }
        }
    }
}
