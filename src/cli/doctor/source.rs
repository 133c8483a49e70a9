//! Where `capf doctor` gets what phones get: the running node's HTTP and TFTP
//! listeners (reached over the loopback), or files built here when it is down.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::super::Listening;
use crate::phone_config::plan::Request;
use crate::phone_config::service::ConfigService;

/// Where doctor gets the files a phone would get: from the running node over each of
/// its file listeners, or, with the node down or both listeners off, built here.
pub(super) struct Source<'a> {
    pub(super) service: &'a ConfigService,
    pub(super) serving: Option<Listening>,
}

impl Source<'_> {
    /// Each way the file reaches phones, and what came back that way.
    pub(super) fn files(
        &self,
        request: &Request,
        now: i64,
    ) -> Vec<(String, Result<Vec<u8>, String>)> {
        let name = request.served_name();
        let mut files = Vec::new();
        if let Some(node) = self.serving {
            if let Some(http) = node.http {
                let http = loopback(http);
                let url = format!("http://{http}/{name}");
                let got = block_on(crate::server::client::http_get(&url)).and_then(|r| {
                    match r.map_err(|e| e.to_string())? {
                        r if r.status == 200 => Ok(r.body),
                        r => Err(format!("HTTP {}", r.status)),
                    }
                });
                files.push((format!("over HTTP from {http}"), got));
            }
            if let Some(tftp) = node.tftp {
                let tftp = loopback(tftp);
                let got = block_on(crate::server::client::tftp_get(tftp, &name, None))
                    .and_then(|r| r.map_err(|e| e.to_string()));
                files.push((format!("over TFTP from {tftp}"), got));
            }
        }
        if files.is_empty() {
            let why = if self.serving.is_some() {
                "built here: HTTP and TFTP are off"
            } else {
                "built here: the node is not running"
            };
            let built = self
                .service
                .fetch(request, now)
                .map(|f| f.bytes.to_vec())
                .map_err(|e| e.to_string());
            files.push((format!("({why})"), built));
        }
        files
    }
}

/// An address to reach a listener bound to all addresses at: the loopback.
pub(super) fn loopback(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, listen.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, listen.port()).into(),
        _ => listen,
    }
}

/// Runs a future to completion on a thread of its own, so this works both from the
/// CLI and inside the server's admin-socket worker.
pub(super) fn block_on<F>(future: F) -> Result<F::Output, String>
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(future))
        })
        .join()
    })
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    .map_err(|e| format!("cannot start a runtime: {e}"))
}
