//! A TFTP client that fetches one file the way a phone does at boot: an RFC 1350 read
//! in octet mode, with 512-byte blocks and no options ([`tftp_get`]), or with the
//! block size a phone asks for (RFC 2348 `blksize`, [`tftp_get_with`]). `capf doctor`
//! uses it to check what phones get from the running node; the phone simulator, to
//! show that a real phone still gets its files while the server is under attack; the
//! load generator, for its boot storm.
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
/// RFC 1350's block size, used unless the server acknowledges another.
const DEFAULT_BLOCK_SIZE: usize = 512;
/// RFC 2348's bounds on the block size.
const BLOCK_SIZES: std::ops::RangeInclusive<u16> = 8..=65464;

/// Fetches `name` from the TFTP server at `server`, from an ephemeral port of
/// `from` (the unspecified address of the server's family when `None`), with no
/// options: 512-byte blocks.
pub async fn tftp_get(
    server: SocketAddr,
    name: &str,
    from: Option<IpAddr>,
) -> Result<Vec<u8>, FetchError> {
    tftp_get_with(server, name, from, None).await
}

/// [`tftp_get`], asking for `block_size` (RFC 2348) when it is given. The server may
/// answer with an OACK of that size (acknowledged with block 0, as RFC 2347 says) or
/// ignore the option and send 512-byte blocks; a smaller size is refused, as a larger
/// one than asked for.
pub async fn tftp_get_with(
    server: SocketAddr,
    name: &str,
    from: Option<IpAddr>,
    block_size: Option<u16>,
) -> Result<Vec<u8>, FetchError> {
    if let Some(size) = block_size.filter(|s| !BLOCK_SIZES.contains(s)) {
        return Err(FetchError::Tftp(format!("block size {size} out of range")));
    }
    let local = from.unwrap_or(match server {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    });
    let socket = UdpSocket::bind(SocketAddr::new(local, 0)).await?;
    let mut request = vec![0, 1];
    let asked = block_size.map(|s| s.to_string());
    let mut fields = vec![name, "octet"];
    if let Some(asked) = &asked {
        fields.extend(["blksize", asked.as_str()]);
    }
    for field in fields {
        request.extend_from_slice(field.as_bytes());
        request.push(0);
    }
    let largest = usize::from(block_size.unwrap_or(0)).max(DEFAULT_BLOCK_SIZE);
    let mut buf = vec![0u8; 4 + largest];

    // The first answer, with the request sent again each second until it comes.
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
    let mut block_len = DEFAULT_BLOCK_SIZE;
    if let [0, 6, options @ ..] = buf.get(..n).unwrap_or_default() {
        block_len = oack_block_size(options, block_size)?;
        socket.send_to(&[0, 4, 0, 0], tid).await?;
        n = receive_from(&socket, &mut buf, tid).await?;
    }
    let mut file = Vec::new();
    let mut expected: u16 = 1;
    loop {
        let packet = buf.get(..n).unwrap_or_default();
        match packet {
            [0, 3, hi, lo, data @ ..] => {
                if data.len() > block_len {
                    return Err(FetchError::Tftp(format!(
                        "block of {} bytes, larger than {block_len}",
                        data.len()
                    )));
                }
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
                if block == expected.wrapping_sub(1) && data.len() < block_len {
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
            // A repeated OACK: our acknowledgement of it was lost.
            [0, 6, ..] if expected == 1 => socket.send_to(&[0, 4, 0, 0], tid).await.map(drop)?,
            _ => return Err(FetchError::Tftp(format!("unexpected packet {packet:02x?}"))),
        }
        n = receive_from(&socket, &mut buf, tid).await?;
    }
}

/// The next packet from the transfer's own port (RFC 1350 transfer IDs): anything from
/// elsewhere is ignored.
async fn receive_from(
    socket: &UdpSocket,
    buf: &mut [u8],
    tid: SocketAddr,
) -> Result<usize, FetchError> {
    loop {
        let (len, from) = tokio::time::timeout(BLOCK_TIMEOUT, socket.recv_from(buf))
            .await
            .map_err(|_| FetchError::Timeout)??;
        if from == tid {
            return Ok(len);
        }
    }
}

/// The block size an OACK settles on: the one asked for, or a smaller one the server
/// chose (RFC 2348); an OACK without `blksize` leaves 512.
fn oack_block_size(options: &[u8], asked: Option<u16>) -> Result<usize, FetchError> {
    let bad = |why: String| FetchError::Tftp(format!("OACK: {why}"));
    let body = options
        .strip_suffix(&[0])
        .ok_or_else(|| bad("not NUL-terminated".into()))?;
    let fields: Vec<&[u8]> = body.split(|&b| b == 0).collect();
    let mut size = DEFAULT_BLOCK_SIZE;
    for pair in fields.chunks(2) {
        let [option, value] = pair else {
            return Err(bad("an option without a value".into()));
        };
        if !option.eq_ignore_ascii_case(b"blksize") {
            continue;
        }
        let value = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.parse::<u16>().ok())
            .filter(|v| BLOCK_SIZES.contains(v))
            .ok_or_else(|| bad("blksize is not a block size".into()))?;
        match asked {
            Some(asked) if value <= asked => size = usize::from(value),
            _ => return Err(bad(format!("blksize {value} was not asked for"))),
        }
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oack_settles_the_block_size_only_within_what_was_asked() {
        assert_eq!(
            oack_block_size(b"blksize\x001428\x00", Some(1428)).unwrap(),
            1428
        );
        assert_eq!(
            oack_block_size(b"BLKSIZE\x00512\x00", Some(1428)).unwrap(),
            512
        );
        assert_eq!(
            oack_block_size(b"tsize\x00900\x00", Some(1428)).unwrap(),
            512
        );
        for (oack, asked) in [
            (&b"blksize\x001429\x00"[..], Some(1428)),
            (b"blksize\x001428\x00", None),
            (b"blksize\x007\x00", Some(1428)),
            (b"blksize\x00x\x00", Some(1428)),
            (b"blksize\x00", Some(1428)),
            (b"blksize\x001428", Some(1428)),
        ] {
            assert!(oack_block_size(oack, asked).is_err(), "{oack:?}");
        }
    }
}
