//! An HTTP/1.1 client that fetches a file the way a phone fetches its configuration:
//! one GET with `Connection: close`, the whole answer read within a timeout. `capf
//! doctor` uses it to check what phones get from the running node.

use super::FetchError;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An HTTP answer as a phone sees it.
#[cfg_attr(not(feature = "phone-sim"), allow(dead_code))]
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[cfg_attr(not(feature = "phone-sim"), allow(dead_code))]
impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How long a phone waits for a whole configuration download.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest response the phone reads.
const MAX_HTTP_RESPONSE: u64 = 16 * 1024 * 1024;

/// What a response is first read into (a phone's files are a few KiB; larger ones
/// grow it).
const RESPONSE_BUFFER: usize = 16 * 1024;

/// GETs `http://HOST[:PORT]/PATH` the way a phone fetches its configuration files.
pub async fn http_get(url: &str) -> Result<HttpResponse, FetchError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| FetchError::Http(format!("{url}: only http:// URLs are supported")))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let authority = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    http_request(&authority, "GET", path).await
}

/// Sends one HTTP/1.1 request with `Connection: close` to `authority` (`host:port`)
/// and reads the whole answer. The path is sent exactly as given.
pub async fn http_request(
    authority: &str,
    method: &str,
    path: &str,
) -> Result<HttpResponse, FetchError> {
    let exchange = async {
        let mut tcp = TcpStream::connect(authority).await?;
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await?;
        // Room for a phone's file from the start: reading into an empty vector starts
        // with 32 bytes and doubles, a system call per step (eight for a 6 KiB ITL).
        let mut raw = Vec::with_capacity(RESPONSE_BUFFER);
        // Done once the body is as long as its Content-Length says, as a phone is: the
        // read that would only see the server's close is not made.
        let head_only = method == "HEAD";
        while whole_length(&raw, head_only).is_none_or(|whole| raw.len() < whole) {
            if raw.len() == raw.capacity() {
                raw.reserve(raw.len());
            }
            if tcp.read_buf(&mut raw).await? == 0 {
                break;
            }
            if raw.len() as u64 > MAX_HTTP_RESPONSE {
                return Err(FetchError::Http("response too large".into()));
            }
        }
        Ok::<_, FetchError>(raw)
    };
    let raw = tokio::time::timeout(HTTP_TIMEOUT, exchange)
        .await
        .map_err(|_| FetchError::Timeout)??;
    parse_http_response(&raw, method == "HEAD")
}

/// One HTTP/1.1 connection kept open for several GETs, as a client that reuses its
/// connection fetches a phone's three files (the load generator's `--http-reuse`).
#[cfg(feature = "phone-sim")]
pub struct HttpConnection {
    tcp: TcpStream,
    host: String,
    /// What was read past the end of the last response.
    unread: Vec<u8>,
}

#[cfg(feature = "phone-sim")]
impl HttpConnection {
    /// Connects to `authority` (`host:port`).
    pub async fn open(authority: &str) -> Result<HttpConnection, FetchError> {
        let tcp = tokio::time::timeout(HTTP_TIMEOUT, TcpStream::connect(authority))
            .await
            .map_err(|_| FetchError::Timeout)??;
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        Ok(HttpConnection {
            tcp,
            host: host.to_owned(),
            unread: Vec::new(),
        })
    }

    /// GETs `path` on this connection. The answer must carry a `Content-Length`; an
    /// error leaves the connection unusable.
    pub async fn get(&mut self, path: &str) -> Result<HttpResponse, FetchError> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.host);
        let exchange = async {
            self.tcp.write_all(request.as_bytes()).await?;
            let mut chunk = [0u8; 8192];
            loop {
                if let Some(end) = head_end(&self.unread) {
                    let head =
                        parse_http_response(self.unread.get(..end + 4).unwrap_or_default(), true)?;
                    let length = head
                        .header("content-length")
                        .and_then(|v| v.parse::<usize>().ok())
                        .ok_or_else(|| FetchError::Http("no Content-Length".into()))?;
                    if length as u64 > MAX_HTTP_RESPONSE {
                        return Err(FetchError::Http("response too large".into()));
                    }
                    let whole = end + 4 + length;
                    while self.unread.len() < whole {
                        let n = self.tcp.read(&mut chunk).await?;
                        if n == 0 {
                            return Err(FetchError::Http("closed inside the body".into()));
                        }
                        self.unread
                            .extend_from_slice(chunk.get(..n).unwrap_or_default());
                    }
                    let body = self.unread.get(end + 4..whole).unwrap_or_default().to_vec();
                    self.unread.drain(..whole);
                    return Ok(HttpResponse { body, ..head });
                }
                if self.unread.len() > 64 * 1024 {
                    return Err(FetchError::Http("response head too large".into()));
                }
                let n = self.tcp.read(&mut chunk).await?;
                if n == 0 {
                    return Err(FetchError::Http("closed before the response".into()));
                }
                self.unread
                    .extend_from_slice(chunk.get(..n).unwrap_or_default());
            }
        };
        tokio::time::timeout(HTTP_TIMEOUT, exchange)
            .await
            .map_err(|_| FetchError::Timeout)?
    }
}

/// Where the blank line that ends the response head in `raw` starts, once it is there.
fn head_end(raw: &[u8]) -> Option<usize> {
    raw.windows(4).position(|w| w == b"\r\n\r\n")
}

/// How long the whole response in `raw` is, once its head has arrived and says
/// (`Content-Length`); `None` while the head is incomplete or names no length.
fn whole_length(raw: &[u8], head_only: bool) -> Option<usize> {
    let end = head_end(raw)? + 4;
    if head_only {
        return Some(end);
    }
    let head = std::str::from_utf8(raw.get(..end)?).ok()?;
    let length = head.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    })?;
    end.checked_add(length)
}

fn parse_http_response(raw: &[u8], head_only: bool) -> Result<HttpResponse, FetchError> {
    let bad = |why: &str| FetchError::Http(why.to_owned());
    let end = head_end(raw).ok_or_else(|| bad("no end of the response head"))?;
    let (head, body) = raw.split_at(end);
    let head = std::str::from_utf8(head).map_err(|_| bad("response head is not text"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1."))
        .and_then(|l| l.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = body.get(4..).unwrap_or_default().to_vec();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    if let Some(length) = length.filter(|_| !head_only) {
        if body.len() < length {
            return Err(bad("the body is shorter than Content-Length"));
        }
        body.truncate(length);
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_whole_at_its_content_length() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-LENGTH: 5\r\n\r\n";
        assert_eq!(whole_length(b"HTTP/1.1 200 OK\r\nContent-Le", false), None);
        assert_eq!(whole_length(head, false), Some(head.len() + 5));
        assert_eq!(whole_length(head, true), Some(head.len()));
        assert_eq!(whole_length(b"HTTP/1.1 200 OK\r\n\r\nbody", false), None);
        let huge = b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n";
        assert_eq!(whole_length(huge, false), None);
    }

    /// A phone stops reading once it has the body; it does not wait for the close.
    #[tokio::test]
    async fn the_answer_is_read_without_waiting_for_the_close() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = tcp.read(&mut request).await.unwrap();
            tcp.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody")
                .await
                .unwrap();
            // Held open well past the test's patience below.
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            http_request(&authority, "GET", "/f"),
        )
        .await
        .expect("answered before the connection closed")
        .unwrap();
        assert_eq!((answer.status, answer.body.as_slice()), (200, &b"body"[..]));
        server.abort();
    }
}
