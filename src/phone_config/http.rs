//! HTTP delivery of configuration files and the ITL (config-files.md §2, §6): the
//! phone's `GET /SEP<MAC>.cnf.xml.sgn` on port 6970.
//!
//! A small hand-written HTTP/1.1 server rather than a framework: phones only ever
//! `GET` one file per request, so the whole protocol capf needs is a request line, a
//! header block to skip and a response with a known length. An HTTP/1.1 connection
//! stays open for the client's next request (see [`serve_connection`]). What a hostile client can cost is
//! bounded: the request head is limited in size and in time (`http_head_timeout`),
//! the response write in time, and the number of open connections by the connection
//! table (`http_max_connections`). When the table is full, the oldest connection
//! still waiting for its request head is closed for the new one, as on the CAPF
//! listener: idle or slow clients cannot keep a phone from its files.
//!
//! Files are built on demand from the current store, so a phone that just enrolled
//! gets its new `certHash` on its next request. The only names answered are those of
//! the request grammar ([`Request::parse`]); anything else, including any path with
//! `/`, `..` or a percent escape, is *not found*.

use crate::metrics::{FileKind, Metrics, Transport};
use crate::model::now;
use crate::net::{accept_until, loggable, BindError, Connections, Slot};
use crate::phone_config::crl::{RevocationList, CRL_PATH};
use crate::phone_config::plan::Request;
use crate::phone_config::service::{ConfigService, File, Refusal};
use bytes::Buf;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head (request line and headers) read; a phone's is a few hundred
/// bytes.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Requests answered on one connection before capf closes it (the client opens
/// another): a bound on how long one connection can stay in the table.
pub const MAX_REQUESTS_PER_CONNECTION: usize = 100;
/// Time a client has to take the whole response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// A bound HTTP listener, ready to run.
pub struct HttpServer {
    listener: TcpListener,
    service: Arc<ConfigService>,
    connections: Arc<Connections>,
    /// Time a client has to send its whole request head (`http_head_timeout`).
    head_timeout: Duration,
    /// The CAPF CA's CRL at `/capf.crl`, when the node publishes it.
    crl: Option<Arc<RevocationList>>,
}

impl HttpServer {
    /// Binds `addr`; at most `max_connections` at once, each with `head_timeout` to
    /// send its request head.
    pub async fn bind(
        addr: SocketAddr,
        service: impl Into<Arc<ConfigService>>,
        max_connections: usize,
        head_timeout: Duration,
    ) -> Result<Self, BindError> {
        let listener = TcpListener::bind(addr).await.map_err(|source| BindError {
            addr,
            error: source,
        })?;
        Ok(HttpServer {
            listener,
            service: service.into(),
            connections: Connections::new("HTTP", max_connections),
            head_timeout,
            crl: None,
        })
    }

    /// Also serves the CAPF CA's revocation list at `/capf.crl`.
    pub fn with_crl(mut self, crl: RevocationList) -> Self {
        self.crl = Some(Arc::new(crl));
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Answers requests until `shutdown` completes. Connections in flight finish on
    /// their own; each is bounded by the timeouts above.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let head_timeout = self.head_timeout;
        let files = Arc::new(Files {
            service: self.service.clone(),
            crl: self.crl.clone(),
        });
        let serve =
            |tcp, peer, slot| serve_connection(files.clone(), head_timeout, tcp, peer, slot);
        accept_until(
            &self.listener,
            &self.connections,
            "HTTP",
            shutdown,
            |_| true,
            serve,
        )
        .await;
    }
}

/// An answer, before it is written.
pub(crate) struct Response {
    pub status: u16,
    pub content_type: &'static str,
    /// Shared, not copied, when it is a kept file or the kept CRL.
    pub body: Arc<[u8]>,
    /// What the log line says was served.
    pub served: String,
    /// What the request counts as once the whole response is written (a file served).
    pub written: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Response {
    pub(crate) fn error(status: u16, why: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain",
            body: format!("{}\n", reason_phrase(status)).into_bytes().into(),
            served: why.into(),
            written: None,
        }
    }

    /// A short plain-text answer (`/healthz`, `/readyz`).
    pub(crate) fn text(status: u16, body: impl Into<String>) -> Response {
        let body: String = body.into();
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            served: body.trim_end().to_string(),
            body: body.into_bytes().into(),
            written: None,
        }
    }

    fn file(file: File, metrics: Arc<Metrics>) -> Response {
        let kind = file.counted_as();
        Response {
            written: Some(Box::new(move || metrics.file_served(kind, Transport::Http))),
            status: 200,
            content_type: if file.name.ends_with(".xml") {
                "text/xml"
            } else {
                "application/octet-stream"
            },
            served: file.kind.to_string(),
            body: file.bytes,
        }
    }
}

/// What an HTTP listener answers: the phones' files here, the admin endpoints in
/// `metrics::server`. Both share the connection handling below and its bounds.
pub(crate) trait Answer: Send + Sync + 'static {
    /// Whether each request is logged at debug rather than info (scrapes every few
    /// seconds would drown the phones' requests).
    const QUIET: bool = false;

    fn answer(&self, method: &str, target: &str) -> impl Future<Output = Response> + Send;
}

/// What the HTTP server answers from.
struct Files {
    service: Arc<ConfigService>,
    crl: Option<Arc<RevocationList>>,
}

impl Answer for Files {
    fn answer(&self, method: &str, target: &str) -> impl Future<Output = Response> + Send {
        answer(self, method, target)
    }
}

/// One connection: request heads read within `head_timeout` each (giving way to a
/// newer connection until each is whole), each answered within [`WRITE_TIMEOUT`].
///
/// HTTP/1.1 keeps a connection open unless the client says `Connection: close`, so a
/// phone (or a proxy in front of many) may fetch its three files over one
/// connection: a TCP connection costs both sides more than serving a kept file. Between
/// requests the connection waits like a new one ([`Slot::wait_again`]): a client that
/// keeps it open and idle holds nothing a phone needs. HTTP/1.0, a request with a body
/// (phones send none) and a malformed request end the connection after the answer, as
/// does the [`MAX_REQUESTS_PER_CONNECTION`]th request.
pub(crate) async fn serve_connection<A: Answer>(
    files: Arc<A>,
    head_timeout: Duration,
    mut tcp: TcpStream,
    peer: SocketAddr,
    mut slot: Slot,
) {
    // Bytes read past the end of one request head: the start of the next (pipelining).
    let mut unread = Vec::new();
    for served in 1..=MAX_REQUESTS_PER_CONNECTION {
        let read = tokio::time::timeout(head_timeout, read_head(&mut tcp, &mut unread));
        let read = tokio::select! {
            read = read => read,
            () = slot.give_way() => {
                tracing::debug!(%peer, "http connection closed before its request head to make room");
                return;
            }
        };
        // Anything but a whole head is a stall of the address: it only moves its waiting
        // connections forward in the line to give way, never refuses it. A client that
        // was served and then closes, or leaves its connection idle, stalled nothing.
        let idle = served > 1 && unread.is_empty();
        let head = match read {
            Ok(Ok(Some(head))) => head,
            // Closed or reset between requests: the client went away.
            Ok(Ok(None)) | Ok(Err(_)) if idle => return,
            Ok(Ok(None)) => {
                slot.stalled();
                return;
            }
            Ok(Err(e)) => {
                slot.stalled();
                tracing::info!(%peer, "http request not read: {e}");
                return;
            }
            Err(_) if idle => {
                tracing::debug!(%peer, "idle http connection closed");
                return;
            }
            Err(_) => {
                slot.stalled();
                tracing::info!(%peer, "http request head timed out");
                return;
            }
        };
        // From here the request is bounded by the build and the write timeout, and no
        // longer gives way.
        if !slot.progress() {
            return;
        }
        let request = RequestHead::parse(&head);
        let (method, target, mut response) = match &request {
            Some(request) => {
                let response = files.answer(request.method, request.target).await;
                (request.method, request.target, response)
            }
            None => ("-", "-", Response::error(400, "malformed request")),
        };
        let keep_open = served < MAX_REQUESTS_PER_CONNECTION
            && request.as_ref().is_some_and(RequestHead::keeps_connection);
        let head_only = method == "HEAD";
        let outcome = tokio::time::timeout(
            WRITE_TIMEOUT,
            write_response(&mut tcp, &response, head_only, keep_open),
        );
        let written = match outcome.await {
            Ok(Ok(())) => {
                if keep_open {
                    // Answered: from now on the connection waits for its client.
                    slot.wait_again();
                }
                if let Some(count) = response.written.take().filter(|_| !head_only) {
                    count();
                }
                ""
            }
            Ok(Err(_)) => " (client went away)",
            Err(_) => " (write timed out)",
        };
        let bytes = if head_only { 0 } else { response.body.len() };
        let name = loggable(target);
        if A::QUIET {
            tracing::debug!(%peer, method, name = %name, status = response.status, served = %response.served, bytes, "http {}{written}", response.status);
        } else {
            tracing::info!(%peer, method, name = %name, status = response.status, served = %response.served, bytes, "http {}{written}", response.status);
        }
        if !keep_open || !written.is_empty() {
            return;
        }
    }
}

/// Decides and builds the answer to one request.
async fn answer(files: &Files, method: &str, target: &str) -> Response {
    if method != "GET" && method != "HEAD" {
        return Response::error(405, "method not allowed");
    }
    if let (CRL_PATH, Some(crl)) = (target, &files.crl) {
        let crl = crl.clone();
        let metrics = files.service.metrics().clone();
        // The kept list is answered here; only a build (a scan of every serial and a
        // signature) goes to the blocking pool.
        let built = match crl.current() {
            Some(der) => Ok(Ok(der)),
            None => tokio::task::spawn_blocking(move || crl.build(now())).await,
        };
        return match built {
            Ok(Ok(der)) => Response {
                status: 200,
                content_type: "application/pkix-crl",
                served: "crl".into(),
                body: der,
                written: Some(Box::new(move || {
                    metrics.file_served(FileKind::Crl, Transport::Http)
                })),
            },
            Ok(Err(why)) => {
                tracing::error!("revocation list: {why}");
                Response::error(500, why)
            }
            Err(e) => Response::error(500, format!("build task failed: {e}")),
        };
    }
    let service = &files.service;
    let Some(request) = target.strip_prefix('/').and_then(Request::parse) else {
        return Response::error(404, "not a served name");
    };
    let metrics = service.metrics().clone();
    match service.fetch_async(request).await {
        Ok(file) => Response::file(file, metrics),
        // A fault of the node (its store or `tftp/` unreadable), which the phone can
        // try again later or at another node.
        Err(Refusal::Unavailable(why)) => {
            tracing::error!("configuration service: {why}");
            Response::error(503, why)
        }
        Err(refusal) => Response::error(404, refusal.to_string()),
    }
}

/// Reads up to the blank line that ends the request head, starting with what an
/// earlier read left in `unread` and leaving there what follows the head; `None` if
/// the client closed before sending anything.
async fn read_head(tcp: &mut TcpStream, unread: &mut Vec<u8>) -> std::io::Result<Option<Vec<u8>>> {
    let mut chunk = [0u8; 1024];
    loop {
        if let Some((end, next)) = find_head_end(unread) {
            let head = unread.get(..end).unwrap_or_default().to_vec();
            unread.drain(..next);
            return Ok(Some(head));
        }
        if unread.len() > MAX_REQUEST_HEAD {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("request head larger than {MAX_REQUEST_HEAD} bytes"),
            ));
        }
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            if unread.is_empty() {
                return Ok(None);
            }
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed inside the request head",
            ));
        }
        unread.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

/// The end of the request head: the first empty line (CRLF CRLF, or bare LF LF as
/// lenient servers accept), as the head's length and where what follows it starts.
fn find_head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) if b < a => Some((b, b + 2)),
        (Some(a), _) => Some((a, a + 4)),
        (None, Some(b)) => Some((b, b + 2)),
        (None, None) => None,
    }
}

/// What capf reads of a request head.
struct RequestHead<'a> {
    method: &'a str,
    target: &'a str,
    /// HTTP/1.1 (rather than 1.0).
    http11: bool,
    /// `Connection: close`.
    close: bool,
    /// A `Content-Length` other than 0 or a `Transfer-Encoding`: a body capf does not
    /// read, so the connection cannot carry another request.
    body: bool,
}

impl<'a> RequestHead<'a> {
    fn parse(head: &'a [u8]) -> Option<RequestHead<'a>> {
        let (method, target, version) = parse_request_line(head)?;
        let mut request = RequestHead {
            method,
            target,
            http11: version == "HTTP/1.1",
            close: false,
            body: false,
        };
        let text = String::from_utf8_lossy(head);
        for line in text.lines().skip(1) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("connection") {
                request.close |= value
                    .split(',')
                    .any(|token| token.trim().eq_ignore_ascii_case("close"));
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                || (name.eq_ignore_ascii_case("content-length") && value != "0")
            {
                request.body = true;
            }
        }
        Some(request)
    }

    /// Whether the connection stays open for another request after this one.
    fn keeps_connection(&self) -> bool {
        self.http11 && !self.close && !self.body
    }
}

/// `METHOD SP request-target SP HTTP/1.x` from the first line of the head. Only the
/// origin form (`/name`) can name a file; the target is taken as raw bytes, with no
/// percent-decoding, so an escaped `..` stays an unknown name.
fn parse_request_line(head: &[u8]) -> Option<(&str, &str, &str)> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
        || !version.starts_with("HTTP/1.")
        || target.is_empty()
    {
        return None;
    }
    Some((method, target, version))
}

async fn write_response(
    tcp: &mut TcpStream,
    response: &Response,
    head_only: bool,
    keep_open: bool,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n",
        response.status,
        reason_phrase(response.status),
        response.content_type,
        response.body.len(),
    );
    if !keep_open {
        head.push_str("Connection: close\r\n");
    }
    if response.status == 405 {
        head.push_str("Allow: GET, HEAD\r\n");
    }
    head.push_str("\r\n");
    // Head and body in one write: one system call and, for a file that fits, one TCP
    // segment instead of two (a phone's files are a few KiB), without copying the body
    // (tokio writes a chained buffer with `writev`).
    let body: &[u8] = if head_only { &[] } else { &response.body };
    tcp.write_all_buf(&mut Buf::chain(head.as_bytes(), body))
        .await?;
    if keep_open {
        return Ok(());
    }
    tcp.shutdown().await
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_parsed_strictly() {
        assert_eq!(
            parse_request_line(b"GET /ITLFile.tlv HTTP/1.1\r\nHost: x"),
            Some(("GET", "/ITLFile.tlv", "HTTP/1.1"))
        );
        assert_eq!(
            parse_request_line(b"HEAD /a HTTP/1.0"),
            Some(("HEAD", "/a", "HTTP/1.0"))
        );
        for bad in [
            &b"GET /a"[..],
            b"GET  /a HTTP/1.1",
            b"GET /a HTTP/2",
            b"get /a HTTP/1.1",
            b"GET /a HTTP/1.1 extra",
            b"\xffGET /a HTTP/1.1",
        ] {
            assert_eq!(parse_request_line(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_head_ends_at_the_first_empty_line() {
        assert_eq!(
            find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"),
            Some((20, 24))
        );
        assert_eq!(find_head_end(b"GET / HTTP/1.0\n\nGET"), Some((14, 16)));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }

    #[test]
    fn only_a_plain_http11_request_keeps_its_connection() {
        let keeps = |head: &[u8]| RequestHead::parse(head).unwrap().keeps_connection();
        assert!(keeps(b"GET /a HTTP/1.1\r\nHost: x"));
        assert!(keeps(
            b"GET /a HTTP/1.1\r\nConnection: keep-alive\r\nContent-Length: 0"
        ));
        assert!(!keeps(b"GET /a HTTP/1.1\r\nconnection: Keep-Alive, Close"));
        assert!(!keeps(b"GET /a HTTP/1.0\r\nHost: x"));
        assert!(!keeps(b"GET /a HTTP/1.1\r\nContent-Length: 5"));
        assert!(!keeps(b"GET /a HTTP/1.1\r\nTransfer-Encoding: chunked"));
    }

    #[test]
    fn log_names_are_bounded_and_escaped() {
        assert_eq!(loggable("/a\nb"), "/a\\nb");
        assert_eq!(loggable(&"x".repeat(500)).len(), 128);
    }
}
