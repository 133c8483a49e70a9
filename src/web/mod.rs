//! The web admin (issue #16): the operator's window on HTTPS, off by default
//! (`web = "127.0.0.1:8443"` in capf.toml, or `capf serve --web ADDR`).
//!
//! * `mod.rs`: the listener (TLS with `certs/web.pem`, connection cap, handshake,
//!   header, body and connection timeouts, size limits), the request dispatch, login,
//!   logout and the CSRF check, and [`Web::run_command`], through which every change
//!   goes: the page builds a `capf` command line and runs it with `cli::execute`, the
//!   very code `capf device …` runs, under the actor `web:<account>`. The web holds
//!   no state the CLI cannot see.
//! * `pages/`: the pages: routes and the dashboard (mod.rs), the phone list and phone page
//!   (phones.rs), bulk import (import.rs), the audit trail (events.rs).
//! * `form.rs`: posted forms, urlencoded or multipart, read within their limits.
//! * `session.rs`: sessions and their cookies; `password.rs`: argon2id;
//!   `html.rs`: escaping and the page frame.
//!
//! Server-rendered HTML with no JavaScript; nothing here touches the phone-facing
//! listeners.

mod form;
mod html;
mod pages;
pub mod password;
mod session;

use crate::model::{now, Event, UnixTime};
use crate::net::Listening;
use crate::settings::{DataDir, Settings};
use crate::store::Store;
use anyhow::{Context, Result};
use form::{read_form, Form};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use session::{Session, Sessions};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections served at once; past it new ones are closed at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Largest request head (request line and headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest form body.
pub const MAX_FORM: usize = 64 * 1024;
/// Largest import upload (about 500,000 rows of capf's CSV).
pub const MAX_UPLOAD: usize = 32 * 1024 * 1024;
/// Time a client has to send a request body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a connection is kept, however busy (keep-alive included).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);
/// Failed logins before an account is locked, and for how long.
pub const MAX_FAILED_LOGINS: u32 = 5;
pub const LOGIN_LOCKOUT_SECS: i64 = 15 * 60;

type Body = Full<Bytes>;

/// A capf command line as the web admin runs it, on the node's store.
pub struct CommandLine<'a> {
    pub data: &'a DataDir,
    pub store: &'a Store,
    /// `web:<account>`, for the audit trail.
    pub actor: String,
    /// The arguments after `capf`.
    pub args: &'a [String],
    pub serving: Option<Listening>,
}

/// Runs a command line as the CLI runs a command that came over the admin socket,
/// and says whether it succeeded and what it printed. The CLI provides it
/// (`cli::web_commands`): the web admin turns forms into command lines, and runs
/// exactly the commands operators type, but does not depend on the CLI that starts it.
pub type Commands = Arc<dyn Fn(CommandLine<'_>) -> (bool, String) + Send + Sync>;

/// A bound web admin listener, ready to run.
pub struct WebServer {
    listener: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    web: Arc<Web>,
    handshake_timeout: Duration,
    head_timeout: Duration,
}

/// What the pages share.
pub(crate) struct Web {
    pub(crate) data: DataDir,
    pub(crate) store: Store,
    sessions: Sessions,
    listening: OnceLock<Listening>,
    commands: Commands,
    /// The node's assessment, shared with `/metrics` (one pass over every device).
    health: Arc<crate::health::Latest>,
    /// Password checks at once: argon2 costs 19 MiB and tens of milliseconds each.
    logins: Semaphore,
}

impl WebServer {
    /// Binds `addr` with the certificate and key in `certs/web.pem|key`; `commands`
    /// runs what the pages ask for.
    pub async fn bind(
        addr: SocketAddr,
        data: &DataDir,
        store: Store,
        settings: &Settings,
        commands: Commands,
        health: Arc<crate::health::Latest>,
    ) -> Result<WebServer> {
        let tls = tls_acceptor(data)?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot bind the web admin on {addr}"))?;
        Ok(WebServer {
            listener,
            tls,
            web: Arc::new(Web {
                data: data.clone(),
                sessions: Sessions::new(store.clone()),
                store,
                listening: OnceLock::new(),
                commands,
                health,
                logins: Semaphore::new(2),
            }),
            handshake_timeout: settings.handshake_timeout(),
            head_timeout: settings.http_head_timeout(),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes; open connections are then closed.
    pub async fn run(
        self,
        listening: Listening,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) {
        let _ = self.web.listening.set(listening);
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut connections = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => accepted,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("web admin: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tracing::warn!("web admin: {MAX_CONNECTIONS} connections open; closed {peer}");
                continue;
            };
            let (tls, web) = (self.tls.clone(), self.web.clone());
            let (handshake, head) = (self.handshake_timeout, self.head_timeout);
            connections.spawn(async move {
                let _permit = permit;
                let stream = match tokio::time::timeout(handshake, tls.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    _ => return,
                };
                let service = hyper::service::service_fn(move |req| {
                    let web = web.clone();
                    async move { Ok::<_, Infallible>(web.handle(peer, req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(head)
                    .max_buf_size(MAX_HEAD)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
            });
        }
        connections.shutdown().await;
    }
}

fn tls_acceptor(data: &DataDir) -> Result<tokio_rustls::TlsAcceptor> {
    let (cert, key) = (data.web_cert(), data.web_key());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .with_context(|| {
            format!(
                "cannot read the web admin certificate {} (`capf init --upgrade` creates it)",
                cert.display()
            )
        })?;
    let key = PrivateKeyDer::from_pem_file(&key)
        .with_context(|| format!("cannot read the web admin key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the web admin certificate and key do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// A request as the pages see it.
pub(crate) struct Req {
    pub method: Method,
    pub path: String,
    pub query: HashMap<String, String>,
    pub peer: SocketAddr,
}

impl Req {
    pub fn q(&self, name: &str) -> &str {
        self.query.get(name).map_or("", String::as_str)
    }
}

/// A logged-in operator.
pub(crate) struct Operator {
    pub token: String,
    pub session: Session,
}

impl Operator {
    pub fn viewer(&self) -> html::Viewer<'_> {
        html::Viewer {
            account: &self.session.account,
            csrf: &self.session.csrf,
        }
    }
}

impl Web {
    async fn handle(self: Arc<Self>, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
        let mut response = self.route(peer, req).await;
        let headers = response.headers_mut();
        for (name, value) in [
            ("content-security-policy", "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
            ("x-frame-options", "DENY"),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
            ("cache-control", "no-store"),
            ("strict-transport-security", "max-age=31536000"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        response
    }

    async fn route(self: Arc<Self>, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let r = Req {
            method: parts.method.clone(),
            path: parts.uri.path().to_string(),
            query: parts
                .uri
                .query()
                .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default(),
            peer,
        };
        let cookies = parts
            .headers
            .get(header::COOKIE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let is_post = r.method == Method::POST;
        if r.method != Method::GET && r.method != Method::HEAD && !is_post {
            return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        }
        let login_cookie = session::cookie(cookies, session::LOGIN_COOKIE);
        if r.path == "/favicon.ico" {
            return text(StatusCode::NOT_FOUND, "not found");
        }
        if r.path == "/login" {
            if !is_post {
                return pages::login_page(login_cookie, None, StatusCode::OK);
            }
            let form = match read_form(&parts.headers, body, MAX_FORM).await {
                Ok(f) => f,
                Err(e) => return e,
            };
            let expected = login_cookie.unwrap_or("");
            if expected.is_empty() || !session::tokens_equal(expected, form.get("csrf")) {
                return pages::login_page(
                    None,
                    Some("The login form expired: please try again."),
                    StatusCode::FORBIDDEN,
                );
            }
            return self.login(&r, form, login_cookie).await;
        }
        // Everything else needs a session.
        let operator = session::cookie(cookies, session::COOKIE).and_then(|token| {
            let session = self.sessions.get(token)?;
            Some(Operator {
                token: token.to_string(),
                session,
            })
        });
        let Some(operator) = operator else {
            return if is_post {
                text(StatusCode::FORBIDDEN, "not logged in")
            } else {
                redirect("/login")
            };
        };
        // A session ends at its next request once its account is gone, or is not the
        // one it logged in as any more (removed and added again: a new password). The
        // account is read from the store, so this holds for sessions on every node.
        match self.store.web_account(&operator.session.account) {
            Ok(Some(account)) if operator.session.logged_in_as(&account) => {}
            found => {
                match found {
                    Ok(None) => self.sessions.remove_account(&operator.session.account),
                    Ok(Some(_)) => self.sessions.remove(&operator.token),
                    // The store did not answer: refused, and the session kept for when
                    // it does.
                    Err(_) => {}
                }
                return if is_post {
                    text(StatusCode::FORBIDDEN, "not logged in")
                } else {
                    redirect("/login")
                };
            }
        }
        if !is_post {
            return self.get(&r, &operator).await;
        }
        let limit = if r.path == "/import" {
            MAX_UPLOAD
        } else {
            MAX_FORM
        };
        let form = match read_form(&parts.headers, body, limit).await {
            Ok(f) => f,
            Err(e) => return e,
        };
        if !session::tokens_equal(&operator.session.csrf, form.get("csrf")) {
            let mut event = self.event(&operator.session.account, "web-request", None);
            event.result = "refused: bad CSRF token".into();
            event.details.insert("path".into(), r.path.clone().into());
            event
                .details
                .insert("address".into(), peer.ip().to_string().into());
            let _ = self.store.record_event(event);
            return text(
                StatusCode::FORBIDDEN,
                "refused: the form's security token does not match this session (reload the page)",
            );
        }
        if r.path == "/logout" {
            self.sessions.remove(&operator.token);
            let mut event = self.event(&operator.session.account, "web-logout", None);
            event.result = "logged out".into();
            let _ = self.store.record_event(event);
            let mut response = redirect("/login");
            set_cookie(
                &mut response,
                &session::set_cookie(session::COOKIE, "", Duration::ZERO),
            );
            return response;
        }
        self.post(&r, &operator, form).await
    }

    async fn login(self: &Arc<Self>, r: &Req, form: Form, held: Option<&str>) -> Response<Body> {
        let name = form.get("name").trim().to_string();
        let password = form.get("password").to_string();
        let _permit = self.logins.acquire().await;
        let web = self.clone();
        let peer = r.peer;
        let outcome = tokio::task::spawn_blocking(move || web.check_login(&name, &password, peer))
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("{e}")));
        match outcome {
            Ok(Some((account, credential))) => {
                let token = match self.sessions.create(&account, credential) {
                    Ok(token) => token,
                    Err(e) => {
                        tracing::error!("web admin login: cannot store the session: {e}");
                        return text(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "login failed: the store does not answer",
                        );
                    }
                };
                let mut response = redirect("/");
                set_cookie(
                    &mut response,
                    &session::set_cookie(session::COOKIE, &token, session::LIFETIME),
                );
                set_cookie(
                    &mut response,
                    &session::set_cookie(session::LOGIN_COOKIE, "", Duration::ZERO),
                );
                response
            }
            Ok(None) => pages::login_page(
                held,
                Some(&format!(
                    "Wrong account name or password. After {MAX_FAILED_LOGINS} failures in a row \
                     an account is locked for {} minutes.",
                    LOGIN_LOCKOUT_SECS / 60
                )),
                StatusCode::UNAUTHORIZED,
            ),
            Err(e) => {
                tracing::error!("web admin login: {e:#}");
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "login failed: see the log",
                )
            }
        }
    }

    /// Checks a login and records its outcome; the account's name and the credential
    /// it logged in with if it succeeded.
    fn check_login(
        &self,
        name: &str,
        password: &str,
        peer: SocketAddr,
    ) -> Result<Option<(String, session::Credential)>> {
        let now = now();
        let shown: String = name.chars().take(64).collect();
        let refused = |reason: &str| {
            let mut event = self.event(&shown, "web-login", None);
            event.result = format!("refused: {reason}");
            event
                .details
                .insert("address".into(), peer.ip().to_string().into());
            event
        };
        let account = match password::check_account_name(name) {
            Ok(()) => self.store.web_account(name)?,
            Err(_) => None,
        };
        let Some(account) = account else {
            password::verify_nothing(password);
            self.store.record_event(refused("no such account"))?;
            return Ok(None);
        };
        if account.locked_until.is_some_and(|t| t > now) {
            self.store.record_event(refused("account locked"))?;
            return Ok(None);
        }
        let good = password::verify_password(&account.password_hash, password);
        let accepted = self.store.update_web_account(name, |a| {
            if good {
                a.failed_logins = 0;
                a.locked_until = None;
                a.last_login = Some(now);
                let mut event = self.event(name, "web-login", None);
                event.result = "logged in".into();
                event
                    .details
                    .insert("address".into(), peer.ip().to_string().into());
                return (Some(event), true);
            }
            a.failed_logins += 1;
            let mut event = refused("wrong password");
            if a.failed_logins >= MAX_FAILED_LOGINS {
                a.failed_logins = 0;
                a.locked_until = Some(now + LOGIN_LOCKOUT_SECS);
                event.result = format!(
                    "refused: wrong password; locked for {} minutes",
                    LOGIN_LOCKOUT_SECS / 60
                );
            }
            (Some(event), false)
        })?;
        self.store.flush()?;
        // The credential of the account as verified: should it have been replaced in
        // between, the session ends at its first request.
        Ok((accepted == Some(true)).then(|| (name.to_string(), session::credential(&account))))
    }

    /// An audit event by `web:<account>`.
    pub(crate) fn event(&self, account: &str, action: &str, device: Option<&str>) -> Event {
        Event {
            id: 0,
            time: now(),
            actor: format!("web:{account}"),
            device: device.map(str::to_string),
            action: action.into(),
            result: String::new(),
            details: Default::default(),
        }
    }

    /// Runs `capf ARGS…` as `web:<account>` through the CLI's own code; whether it
    /// succeeded, and what it printed (and its error).
    pub(crate) async fn run_command(
        self: &Arc<Self>,
        account: &str,
        args: Vec<String>,
    ) -> (bool, String) {
        let web = self.clone();
        let actor = format!("web:{account}");
        tokio::task::spawn_blocking(move || web.run_command_blocking(actor, &args))
            .await
            .unwrap_or_else(|e| (false, format!("error: {e}")))
    }

    fn run_command_blocking(&self, actor: String, args: &[String]) -> (bool, String) {
        (self.commands)(CommandLine {
            data: &self.data,
            store: &self.store,
            actor,
            args,
            serving: self.listening.get().copied(),
        })
    }

    /// The dashboard's figures: the node's latest assessment.
    pub(crate) async fn health(self: &Arc<Self>) -> Result<Arc<crate::health::Health>> {
        Ok(self.health.get().await?.health)
    }

    /// After a change made from a page: the next figures are read afresh.
    pub(crate) fn forget_dashboard(&self) {
        self.health.forget();
    }
}

pub(crate) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: String,
) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

pub(crate) fn html_response(status: StatusCode, body: String) -> Response<Body> {
    respond(status, "text/html; charset=utf-8", body)
}

pub(crate) fn text(status: StatusCode, body: &str) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", format!("{body}\n"))
}

pub(crate) fn redirect(location: &str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

pub(crate) fn set_cookie(response: &mut Response<Body>, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// Days from `now` to `t`, rounded down (negative when past).
pub(crate) fn days_until(t: UnixTime, now: UnixTime) -> i64 {
    (t - now).div_euclid(86_400)
}
