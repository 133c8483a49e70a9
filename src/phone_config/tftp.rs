//! TFTP delivery of configuration files and the ITL (config-files.md §2): the same
//! on-demand files as the HTTP server, for phones that fetch over TFTP.
//!
//! A small read-only server on tokio rather than a TFTP crate: the one crate with a
//! per-file callback (async-tftp) runs its own reactor beside tokio, and the files are
//! already built in memory, so all capf needs is RFC 1350's read path. A read request
//! (RRQ) gets a transfer on its own ephemeral socket, as the RFC's transfer IDs
//! require: an OACK if options were asked for (blksize RFC 2348, tsize and timeout
//! RFC 2349), then lock-step DATA blocks, each sent again on timeout a bounded number
//! of times. Block numbers wrap to 0 after 65535, so files of any size go through.
//!
//! What a client can cost is bounded, including a client that forges its source
//! address: a request is at most [`MAX_REQUEST`] bytes; the transfer table
//! (`tftp/table.rs`) holds at most [`MAX_TRANSFERS`], [`MAX_PER_SOURCE`] per
//! source address, and when full gives the new request the place of the stalest
//! transfer; the first packet of a transfer is sent at most [`MAX_UNPROVEN_SENDS`]
//! times before an acknowledgement proves the source real, within a per-address budget
//! of unacknowledged bytes; the client's `timeout` option is honoured only up to
//! [`MAX_CLIENT_TIMEOUT`]; and each transfer has a deadline. Only `octet` mode is
//! served: these are signed and encrypted files, and netascii translation would break
//! their signatures, so a netascii request is refused rather than silently altered.
//!
//! The requested name, without a leading `/`, must pass [`Request::parse`]; anything
//! else is error 1, *File not found*, exactly where HTTP answers 404.

use crate::metrics::Transport;
use crate::net::{loggable, BindError};
use crate::phone_config::plan::Request;
use crate::phone_config::service::{ConfigService, File, Refusal};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use table::{Table, Ticket};
use tokio::net::UdpSocket;

mod table;

pub use table::{BUDGET, MAX_PER_SOURCE, REFILL_PER_SEC};

/// Largest request packet read (RFC 2347 keeps requests within 512 bytes).
pub const MAX_REQUEST: usize = 512;
/// Concurrent transfers.
pub const MAX_TRANSFERS: usize = 128;
/// Time a whole transfer may take, building the file included.
pub const TRANSFER_DEADLINE: Duration = Duration::from_secs(120);
/// Wait for an acknowledgement before sending again, unless the client asks for
/// another with the timeout option.
pub const RETRANSMIT_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest `timeout` option honoured, seconds. RFC 2349 lets the server decline
/// the option but not change its value, so a larger one is left out of the OACK and
/// the default applies: a client asking for 255 s cannot hold a transfer for 255 s
/// per packet.
pub const MAX_CLIENT_TIMEOUT: u8 = 5;
/// Times a packet is sent again before the transfer is given up, once the client has
/// acknowledged something.
pub const MAX_RETRIES: u32 = 5;
/// Times the first packet of a transfer (the OACK, or block 1) is sent before any
/// acknowledgement: until then the source may be forged, and each send is traffic
/// aimed at whoever owns that address.
pub const MAX_UNPROVEN_SENDS: u32 = 2;

/// RFC 1350's block size.
const DEFAULT_BLOCK_SIZE: usize = 512;
/// RFC 2348's largest block size.
const MAX_BLOCK_SIZE: usize = 65464;
/// RFC 2348's smallest block size.
const MIN_BLOCK_SIZE: usize = 8;

const RRQ: u16 = 1;
const WRQ: u16 = 2;
const DATA: u16 = 3;
const ACK: u16 = 4;
const ERROR: u16 = 5;
const OACK: u16 = 6;

/// RFC 1350 error codes capf sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ErrorCode {
    /// "Not defined, see error message".
    Undefined = 0,
    FileNotFound = 1,
    AccessViolation = 2,
    IllegalOperation = 4,
}

/// A bound TFTP server, ready to run.
pub struct TftpServer {
    socket: UdpSocket,
    service: Arc<ConfigService>,
    transfers: Arc<Table>,
}

impl TftpServer {
    pub async fn bind(
        addr: SocketAddr,
        service: impl Into<Arc<ConfigService>>,
    ) -> Result<Self, BindError> {
        let socket = UdpSocket::bind(addr).await.map_err(|source| BindError {
            addr,
            error: source,
        })?;
        Ok(TftpServer {
            socket,
            service: service.into(),
            transfers: Table::new(MAX_TRANSFERS),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Answers requests until `shutdown` completes. Transfers in flight finish on
    /// their own; each is bounded by [`TRANSFER_DEADLINE`].
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut buf = [0u8; MAX_REQUEST + 1];
        loop {
            let received = tokio::select! {
                received = self.socket.recv_from(&mut buf) => received,
                () = &mut shutdown => break,
            };
            match received {
                Ok((n, peer)) => self.answer(buf.get(..n).unwrap_or_default(), peer).await,
                Err(e) => {
                    tracing::warn!("tftp receive failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    /// Starts a transfer for a read request; answers anything else with an error
    /// from the server port.
    async fn answer(&self, packet: &[u8], peer: SocketAddr) {
        let (code, message) = match parse_request(packet) {
            // Errors are never answered: two servers must not trade them forever.
            Ok(Incoming::Error) => return,
            _ if packet.len() > MAX_REQUEST => (ErrorCode::IllegalOperation, "request too long"),
            Ok(Incoming::Read(read)) => return self.start(read, peer),
            Ok(Incoming::Write) => (ErrorCode::AccessViolation, "read-only server"),
            Ok(Incoming::Other) | Err(Malformed) => {
                (ErrorCode::IllegalOperation, "Illegal TFTP operation")
            }
        };
        let result = format!("error {}", code as u16);
        tracing::info!(%peer, result = %result, served = message, "tftp {result}");
        let _ = self
            .socket
            .send_to(&error_packet(code, message), peer)
            .await;
    }

    fn start(&self, read: ReadRequest, peer: SocketAddr) {
        let ticket = match self.transfers.admit(peer.ip()) {
            Ok(ticket) => ticket,
            Err(why) => {
                // The client sends its request again; by then one may have finished.
                tracing::info!(%peer, "tftp request dropped: {why}");
                return;
            }
        };
        let local = match self.socket.local_addr() {
            Ok(local) => SocketAddr::new(local.ip(), 0),
            Err(e) => {
                tracing::warn!("tftp local address: {e}");
                return;
            }
        };
        let service = self.service.clone();
        tokio::spawn(async move {
            serve_transfer(service, local, peer, read, ticket).await;
        });
    }
}

/// A parsed packet that arrived on the server port.
#[derive(Debug, PartialEq, Eq)]
enum Incoming {
    Read(ReadRequest),
    Write,
    Error,
    Other,
}

/// An RRQ: the name as sent, and the negotiated options.
#[derive(Debug, PartialEq, Eq)]
struct ReadRequest {
    name: String,
    /// `octet` mode; `false` for netascii (or mail), which are refused.
    octet: bool,
    options: Options,
}

/// The options the server acknowledges; `None`/`false` ones are not sent in the OACK.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Options {
    block_size: Option<usize>,
    transfer_size: bool,
    timeout_secs: Option<u8>,
}

impl Options {
    fn any(&self) -> bool {
        self.block_size.is_some() || self.transfer_size || self.timeout_secs.is_some()
    }
    fn block_size(&self) -> usize {
        self.block_size.unwrap_or(DEFAULT_BLOCK_SIZE)
    }
    fn timeout(&self) -> Duration {
        self.timeout_secs
            .map_or(RETRANSMIT_TIMEOUT, |s| Duration::from_secs(u64::from(s)))
    }
}

/// Why a packet on the server port is not a request.
#[derive(Debug, PartialEq, Eq)]
struct Malformed;

fn parse_request(packet: &[u8]) -> Result<Incoming, Malformed> {
    let (opcode, body) = split_opcode(packet).ok_or(Malformed)?;
    match opcode {
        RRQ => {}
        WRQ => return Ok(Incoming::Write),
        ERROR => return Ok(Incoming::Error),
        _ => return Ok(Incoming::Other),
    }
    // name NUL mode NUL { option NUL value NUL }
    let body = body.strip_suffix(&[0]).ok_or(Malformed)?;
    let mut fields = body.split(|&b| b == 0);
    let name = fields.next().ok_or(Malformed)?;
    let mode = fields.next().ok_or(Malformed)?;
    let mode = std::str::from_utf8(mode).map_err(|_| Malformed)?;
    let octet = match mode.to_ascii_lowercase().as_str() {
        "octet" => true,
        "netascii" | "mail" => false,
        _ => return Err(Malformed),
    };
    let mut options = Options::default();
    while let Some(option) = fields.next() {
        let value = fields.next().ok_or(Malformed)?;
        let (Ok(option), Ok(value)) = (std::str::from_utf8(option), std::str::from_utf8(value))
        else {
            continue;
        };
        // Values the RFCs do not allow leave the option unacknowledged (RFC 2347).
        match option.to_ascii_lowercase().as_str() {
            "blksize" => {
                options.block_size = value
                    .parse::<usize>()
                    .ok()
                    .filter(|&size| size >= MIN_BLOCK_SIZE)
                    .map(|size| size.min(MAX_BLOCK_SIZE));
            }
            // In a read request the client sends 0 and the server answers the size.
            "tsize" => options.transfer_size = value == "0",
            "timeout" => {
                options.timeout_secs = value
                    .parse::<u8>()
                    .ok()
                    .filter(|s| (1..=MAX_CLIENT_TIMEOUT).contains(s));
            }
            _ => {}
        }
    }
    Ok(Incoming::Read(ReadRequest {
        // A name that is not UTF-8 is no served name; lossy keeps it loggable.
        name: String::from_utf8_lossy(name).into_owned(),
        octet,
        options,
    }))
}

fn split_opcode(packet: &[u8]) -> Option<(u16, &[u8])> {
    let (opcode, body) = packet.split_first_chunk::<2>()?;
    Some((u16::from_be_bytes(*opcode), body))
}

fn error_packet(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut packet = Vec::with_capacity(5 + message.len());
    packet.extend_from_slice(&ERROR.to_be_bytes());
    packet.extend_from_slice(&(code as u16).to_be_bytes());
    packet.extend_from_slice(message.as_bytes());
    packet.push(0);
    packet
}

fn oack_packet(options: &Options, file_size: usize) -> Vec<u8> {
    let mut packet = OACK.to_be_bytes().to_vec();
    let mut option = |name: &str, value: String| {
        packet.extend_from_slice(name.as_bytes());
        packet.push(0);
        packet.extend_from_slice(value.as_bytes());
        packet.push(0);
    };
    if let Some(size) = options.block_size {
        option("blksize", size.to_string());
    }
    if options.transfer_size {
        option("tsize", file_size.to_string());
    }
    if let Some(secs) = options.timeout_secs {
        option("timeout", secs.to_string());
    }
    packet
}

/// How a transfer ended, for the log line.
struct Outcome {
    result: String,
    /// What was served: the file's kind, or why nothing was.
    served: String,
    /// Bytes the client acknowledged.
    bytes: usize,
}

async fn serve_transfer(
    service: Arc<ConfigService>,
    local: SocketAddr,
    peer: SocketAddr,
    read: ReadRequest,
    ticket: Ticket,
) {
    let block_size = read.options.block_size();
    let transfer = tokio::time::timeout(
        TRANSFER_DEADLINE,
        transfer(&service, local, peer, &read, &ticket),
    );
    let outcome = tokio::select! {
        outcome = transfer => match outcome {
            Ok(outcome) => outcome,
            Err(_) => failed("deadline exceeded".into(), "-"),
        },
        () = ticket.give_way() => failed("gave way to a newer request".into(), "-"),
    };
    tracing::info!(
        %peer,
        name = %loggable(&read.name),
        result = %outcome.result,
        served = %outcome.served,
        bytes = outcome.bytes,
        block_size,
        "tftp {}",
        outcome.result
    );
}

/// One read request, from the transfer's own socket: the file, or an error packet.
async fn transfer(
    service: &Arc<ConfigService>,
    local: SocketAddr,
    peer: SocketAddr,
    read: &ReadRequest,
    ticket: &Ticket,
) -> Outcome {
    let socket = match bind_transfer_socket(local, peer).await {
        Ok(socket) => socket,
        Err(e) => return failed(format!("no transfer socket: {e}"), "-"),
    };
    if !read.octet {
        return refuse(
            &socket,
            ErrorCode::Undefined,
            "only octet mode is served",
            "netascii refused".into(),
        )
        .await;
    }
    let name = read.name.strip_prefix('/').unwrap_or(&read.name);
    let Some(request) = Request::parse(name) else {
        return refuse(
            &socket,
            ErrorCode::FileNotFound,
            "File not found",
            "not a served name".into(),
        )
        .await;
    };
    let file = match build(service, request).await {
        Ok(file) => file,
        Err(Refused::Internal(why)) => {
            tracing::error!("configuration service: {why}");
            return refuse(&socket, ErrorCode::Undefined, "server error", why).await;
        }
        Err(Refused::NotFound(why)) => {
            return refuse(&socket, ErrorCode::FileNotFound, "File not found", why).await;
        }
    };
    let served = file.kind.to_string();
    let mut sender = Sender {
        socket: &socket,
        ticket,
        timeout: read.options.timeout(),
        acknowledged: 0,
    };
    let result = match sender.send_file(&file.bytes, &read.options).await {
        Ok(()) => {
            service
                .metrics()
                .file_served(file.counted_as(), Transport::Tftp);
            "sent".to_string()
        }
        Err(failure) => failure,
    };
    Outcome {
        result,
        served,
        bytes: sender.acknowledged,
    }
}

fn failed(result: String, served: impl Into<String>) -> Outcome {
    Outcome {
        result,
        served: served.into(),
        bytes: 0,
    }
}

/// Answers the request with an error packet instead of the file.
async fn refuse(socket: &UdpSocket, code: ErrorCode, message: &str, why: String) -> Outcome {
    let _ = socket.send(&error_packet(code, message)).await;
    failed(format!("error {}", code as u16), why)
}

/// Why no file was built.
enum Refused {
    /// The name serves nothing now: error 1, like HTTP's 404.
    NotFound(String),
    /// A fault of the node (store, `tftp/` directory), not of the request.
    Internal(String),
}

/// A socket on a fresh port (the server's transfer ID) that hears only the client's.
async fn bind_transfer_socket(local: SocketAddr, peer: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind(local).await?;
    socket.connect(peer).await?;
    Ok(socket)
}

/// The file for `request` (built off the reactor when it needs a signature).
async fn build(service: &Arc<ConfigService>, request: Request) -> Result<File, Refused> {
    match service.fetch_async(request).await {
        Ok(file) => Ok(file),
        Err(Refusal::Unavailable(why)) => Err(Refused::Internal(why)),
        Err(refusal) => Err(Refused::NotFound(refusal.to_string())),
    }
}

/// The lock-step sending side of one transfer.
struct Sender<'a> {
    socket: &'a UdpSocket,
    /// Its place in the table: the budget before the first acknowledgement.
    ticket: &'a Ticket,
    timeout: Duration,
    acknowledged: usize,
}

impl Sender<'_> {
    /// OACK (when options were asked for), then every block; the last one is shorter
    /// than the block size, empty if the file is a multiple of it.
    async fn send_file(&mut self, bytes: &[u8], options: &Options) -> Result<(), String> {
        if options.any() {
            self.exchange(&oack_packet(options, bytes.len()), 0).await?;
        }
        let block_size = options.block_size();
        let mut packet = Vec::with_capacity(4 + block_size);
        let mut chunks = bytes.chunks(block_size);
        let mut last_len = block_size;
        let mut block: u16 = 1;
        while last_len == block_size {
            let chunk = chunks.next().unwrap_or_default();
            last_len = chunk.len();
            packet.clear();
            packet.extend_from_slice(&DATA.to_be_bytes());
            packet.extend_from_slice(&block.to_be_bytes());
            packet.extend_from_slice(chunk);
            self.exchange(&packet, block).await?;
            self.acknowledged += chunk.len();
            // Past 65535 the block number wraps to 0, as common clients expect.
            block = block.wrapping_add(1);
        }
        Ok(())
    }

    /// Sends `packet` until the client acknowledges `block`, at most
    /// 1 + [`MAX_RETRIES`] times, or [`MAX_UNPROVEN_SENDS`] times and within the
    /// address's budget while the client has acknowledged nothing. Acknowledgements of
    /// earlier blocks are ignored rather than answered, so a delayed ACK cannot double
    /// every later packet (the "Sorcerer's Apprentice" bug of RFC 1350).
    async fn exchange(&self, packet: &[u8], block: u16) -> Result<(), String> {
        let mut reply = [0u8; 4 + MAX_REQUEST];
        let proven = self.ticket.proven();
        let sends = if proven {
            1 + MAX_RETRIES
        } else {
            MAX_UNPROVEN_SENDS
        };
        for _ in 0..sends {
            if !self.ticket.may_send(packet.len()) {
                return Err("budget of unacknowledged bytes for this address spent".into());
            }
            self.socket
                .send(packet)
                .await
                .map_err(|e| format!("send failed: {e}"))?;
            let deadline = tokio::time::Instant::now() + self.timeout;
            loop {
                let received = tokio::time::timeout_at(deadline, self.socket.recv(&mut reply));
                let n = match received.await {
                    Err(_) => break,
                    Ok(Ok(n)) => n,
                    Ok(Err(e)) => return Err(format!("client gone: {e}")),
                };
                let reply = reply.get(..n).unwrap_or_default();
                match split_opcode(reply) {
                    Some((ACK, number)) if number == block.to_be_bytes() => {
                        self.ticket.acknowledged();
                        return Ok(());
                    }
                    Some((ACK, _)) => continue,
                    Some((ERROR, body)) => return Err(client_error(body)),
                    _ => {
                        let illegal = error_packet(ErrorCode::IllegalOperation, "expected ACK");
                        let _ = self.socket.send(&illegal).await;
                        return Err("error 4 (client sent no ACK)".into());
                    }
                }
            }
        }
        Err(format!(
            "no ACK for block {block} after {} retries",
            sends - 1
        ))
    }
}

/// The client's ERROR packet, for the log.
fn client_error(body: &[u8]) -> String {
    let code = body
        .first_chunk::<2>()
        .map_or(0, |code| u16::from_be_bytes(*code));
    let message = body.get(2..).unwrap_or_default();
    let message = message.split(|&b| b == 0).next().unwrap_or_default();
    format!(
        "client error {code}: {}",
        loggable(&String::from_utf8_lossy(message))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrq(fields: &[&str]) -> Vec<u8> {
        let mut packet = RRQ.to_be_bytes().to_vec();
        for field in fields {
            packet.extend_from_slice(field.as_bytes());
            packet.push(0);
        }
        packet
    }

    fn read(packet: &[u8]) -> ReadRequest {
        match parse_request(packet) {
            Ok(Incoming::Read(read)) => read,
            other => panic!("not a read request: {other:?}"),
        }
    }

    #[test]
    fn read_requests_and_their_options_are_parsed() {
        let plain = read(&rrq(&["ITLFile.tlv", "octet"]));
        assert_eq!(plain.name, "ITLFile.tlv");
        assert!(plain.octet);
        assert!(!plain.options.any());
        assert_eq!(plain.options.block_size(), 512);
        assert_eq!(plain.options.timeout(), RETRANSMIT_TIMEOUT);

        let asked = read(&rrq(&[
            "/a",
            "OCTET",
            "BlkSize",
            "1428",
            "tsize",
            "0",
            "timeout",
            "3",
            "windowsize",
            "8",
        ]));
        assert_eq!(
            asked.options,
            Options {
                block_size: Some(1428),
                transfer_size: true,
                timeout_secs: Some(3),
            }
        );
        assert_eq!(asked.options.timeout(), Duration::from_secs(3));
        assert!(!read(&rrq(&["a", "netascii"])).octet);
    }

    #[test]
    fn out_of_range_options_are_clamped_or_left_unacknowledged() {
        let options = |fields: &[&str]| read(&rrq(fields)).options;
        assert_eq!(
            options(&["a", "octet", "blksize", "70000"]).block_size,
            Some(65464)
        );
        for bad in [
            &["a", "octet", "blksize", "7"][..],
            &["a", "octet", "blksize", "-1"],
            &["a", "octet", "timeout", "0"],
            &["a", "octet", "timeout", "6"],
            &["a", "octet", "timeout", "255"],
            &["a", "octet", "timeout", "256"],
            &["a", "octet", "tsize", "12"],
        ] {
            assert!(!options(bad).any(), "{bad:?}");
        }
    }

    #[test]
    fn other_packets_are_classified_and_malformed_ones_refused() {
        let mut wrq = rrq(&["a", "octet"]);
        wrq[1] = WRQ as u8;
        assert_eq!(parse_request(&wrq), Ok(Incoming::Write));
        assert_eq!(parse_request(&[0, 5, 0, 1, 0]), Ok(Incoming::Error));
        assert_eq!(parse_request(&[0, 4, 0, 1]), Ok(Incoming::Other));
        assert_eq!(parse_request(&[0, 9]), Ok(Incoming::Other));
        for bad in [
            &[][..],
            &[0],
            &[0, 1],
            &[0, 1, b'a', 0],
            &[0, 1, b'a', 0, b'o', b'c', b't', b'e', b't'],
            &[0, 1, b'a', 0, b'x', 0],
            &[0, 1, b'a', 0, 0xff, 0],
        ] {
            assert_eq!(parse_request(bad), Err(Malformed), "{bad:?}");
        }
        assert_eq!(
            parse_request(&rrq(&["a", "octet", "blksize"])),
            Err(Malformed)
        );
    }

    #[test]
    fn replies_are_encoded_as_the_rfcs_say() {
        assert_eq!(
            error_packet(ErrorCode::FileNotFound, "File not found"),
            b"\x00\x05\x00\x01File not found\x00"
        );
        let options = Options {
            block_size: Some(1428),
            transfer_size: true,
            timeout_secs: None,
        };
        assert_eq!(
            oack_packet(&options, 4526),
            b"\x00\x06blksize\x001428\x00tsize\x004526\x00"
        );
        assert_eq!(
            client_error(b"\x00\x08bad option\x00"),
            "client error 8: bad option"
        );
    }
}
