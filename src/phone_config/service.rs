//! The configuration service: the one place that gathers a request's inputs (the
//! device record, read fresh from the store; the base document from `tftp/`; the
//! signer and the CAPF certificate loaded at start) and hands them to [`plan`].
//!
//! HTTP delivery, `capf config build`, `capf itl build` and `capf doctor` all go
//! through [`ConfigService::fetch`], so what an operator builds by hand is exactly
//! what a phone downloads.
//!
//! Deciding is cheap and signing is not, so the inputs are read and the decision made
//! on every request, and only the build is skipped: a signed file is kept in the
//! [`FileCache`] under the [`BuildKey`] of its inputs and served again while the key
//! of a new request is the same. A changed input is a different key, so a kept file is
//! never served after anything it was built from changed. On a serving node the
//! [`KeptFiles`] hold a copy of each on disk too, read when memory does not hold the
//! file (after a restart), under the same key.

use crate::metrics::{FileKind, Metrics};
use crate::model::{now, UnixTime};
use crate::phone_config::cache::FileCache;
use crate::phone_config::error::Error;
use crate::phone_config::format::checked::CheckedDocument;
use crate::phone_config::format::itl;
use crate::phone_config::kept::KeptFiles;
use crate::phone_config::plan::{
    self, BuildInputs, BuildKey, InputsDigest, NotFound, Request, Served, MAX_DOCUMENT,
};
use crate::phone_config::signer::Signer;
use crate::settings::{DataDir, Settings};
use crate::store::{Store, StoreError};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// What a base document is first read into: the tens of KiB of a real configuration.
const DOCUMENT_READ: usize = 64 * 1024;

/// What kind of file was served, for the request log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The base document, signed or not.
    Full,
    /// The partial configuration, signed or not.
    Partial,
    /// The `.enc.sgn`.
    Encrypted,
    /// `ITLFile.tlv`.
    Itl,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Full => "full",
            Kind::Partial => "partial",
            Kind::Encrypted => "encrypted",
            Kind::Itl => "itl",
        })
    }
}

/// A built file.
#[derive(Clone, Debug)]
pub struct File {
    /// The canonical served name (MAC in uppercase).
    pub name: String,
    pub kind: Kind,
    /// Whether it is signed (`.sgn`, `.enc.sgn`, the ITL).
    pub signed: bool,
    /// Shared with the cache when kept: a kept file is answered without a copy.
    pub bytes: Arc<[u8]>,
}

impl Kind {
    /// How `/metrics` counts a file of this kind.
    pub fn counted_as(self, signed: bool) -> FileKind {
        match self {
            Kind::Itl => FileKind::Itl,
            Kind::Encrypted => FileKind::EncSgn,
            Kind::Partial => FileKind::Partial,
            Kind::Full if signed => FileKind::Sgn,
            Kind::Full => FileKind::Other,
        }
    }
}

impl File {
    /// How `/metrics` counts this file.
    pub fn counted_as(&self) -> FileKind {
        self.kind.counted_as(self.signed)
    }
}

/// Why a request got no file.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The decision table serves nothing under this name.
    #[error("{0}")]
    NotServed(NotFound),
    /// Building failed: a bad base document (E1), no usable signer (E6), ...
    #[error("{0}")]
    Build(#[from] Error),
    /// The store or the `tftp/` directory could not be read: a fault of the node,
    /// not of the request.
    #[error("{0}")]
    Unavailable(String),
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Refusal::Unavailable(format!("store: {e}"))
    }
}

/// What a request comes to before anything is built.
enum Lookup {
    /// Kept from an earlier build.
    Found(File),
    /// To be built from what the lookup read.
    Build(Pending),
}

/// A build the lookup decided on: its inputs as read, and the key it is kept under.
struct Pending {
    request: Request,
    /// `request.served_name()`: what the file is served and kept under.
    name: String,
    served: Served,
    document: Option<Vec<u8>>,
    /// BLAKE3 of `document`, when the cache is on.
    digest: Option<blake3::Hash>,
    kind: Kind,
    key: Option<BuildKey>,
}

/// What signs and what the files name, as loaded at start.
struct Identities {
    signer: Result<Signer, Error>,
    capf_certificate: Option<Vec<u8>>,
    other_capf_certificate: Option<Vec<u8>>,
    recovery: Option<(Signer, bool)>,
}

/// Everything a build needs that does not change per request.
pub struct ConfigService {
    store: Store,
    tftp_dir: PathBuf,
    /// The signer, or why it cannot sign (E6): signed names are then not served.
    signer: Result<Signer, Error>,
    capf_certificate: Option<Vec<u8>>,
    /// During a CA rollover, the staged or previous CAPF certificate (ITL only).
    other_capf_certificate: Option<Vec<u8>>,
    /// The ITL recovery identity, and whether it signs the ITL (`ca::recovery`).
    recovery: Option<(Signer, bool)>,
    node_name: String,
    capf_port: u16,
    /// Serve a device capf does not know as a known one without encryption: its full
    /// base document in the clear (`serve_unknown_devices_plaintext`).
    serve_unknown_plaintext: bool,
    /// Signed files already built, by the digest of their inputs.
    cache: FileCache,
    /// The node's copies of them on disk, read when memory does not hold a file (after
    /// a restart, or once evicted). Only the serving node keeps them
    /// ([`ConfigService::with_kept_files`]).
    kept: Option<KeptFiles>,
    /// Cache hits and misses, build times and files served (`capf_*` on /metrics).
    metrics: Arc<Metrics>,
    /// [`BuildInputs::digest`] of this service's inputs, part of every kept file's key.
    inputs_digest: InputsDigest,
}

impl ConfigService {
    /// Loads the signer (`certs/tftp.pem` and `.key`, with the configured digest) and
    /// the CAPF certificate once. Neither failing is fatal here: the affected names
    /// are refused, and [`ConfigService::signer`] says why.
    pub fn load(data: &DataDir, settings: &Settings, store: Store) -> ConfigService {
        let signer = Signer::load(&data.tftp_cert(), &data.tftp_key(), settings.config_digest);
        let capf_certificate = CertificateDer::from_pem_file(data.capf_cert())
            .ok()
            .map(|c| c.to_vec());
        let certs = data.certs();
        let other_capf_certificate = crate::ca::rollover::next_certificate(&certs)
            .or_else(|| crate::ca::rollover::previous_certificate(&certs));
        let identities = Identities {
            signer,
            capf_certificate,
            other_capf_certificate,
            recovery: load_recovery(data, settings),
        };
        ConfigService::assemble(store, data.tftp(), identities, settings)
    }

    pub fn new(
        store: Store,
        tftp_dir: PathBuf,
        signer: Result<Signer, Error>,
        capf_certificate: Option<Vec<u8>>,
        settings: &Settings,
    ) -> ConfigService {
        let identities = Identities {
            signer,
            capf_certificate,
            other_capf_certificate: None,
            recovery: None,
        };
        ConfigService::assemble(store, tftp_dir, identities, settings)
    }

    /// The service, with the digest of its inputs computed once they are all known.
    fn assemble(
        store: Store,
        tftp_dir: PathBuf,
        identities: Identities,
        settings: &Settings,
    ) -> ConfigService {
        let mut service = ConfigService {
            store,
            tftp_dir,
            signer: identities.signer,
            capf_certificate: identities.capf_certificate,
            other_capf_certificate: identities.other_capf_certificate,
            recovery: identities.recovery,
            node_name: settings.node_name.clone(),
            capf_port: settings.capf_port,
            serve_unknown_plaintext: settings.serve_unknown_devices_plaintext,
            cache: FileCache::new(settings.config_cache_bytes()),
            kept: None,
            metrics: Arc::new(Metrics::new()),
            inputs_digest: InputsDigest::default(),
        };
        service.inputs_digest = service.build_inputs().digest();
        service
    }

    /// Keeps the signed files it builds in `kept` too, and serves them from there when
    /// memory does not hold them. Nothing is kept when the cache is off
    /// (`config_cache_mib = 0`).
    pub fn with_kept_files(mut self, kept: KeptFiles) -> ConfigService {
        self.kept = self.cache.is_on().then_some(kept);
        self
    }

    pub fn kept_files(&self) -> Option<&KeptFiles> {
        self.kept.as_ref()
    }

    /// Counts into `metrics` (the node's, which /metrics shows) instead of its own.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> ConfigService {
        self.metrics = metrics;
        self
    }

    /// What the service and the servers on top of it count into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The signed files kept for reuse.
    pub fn cache(&self) -> &FileCache {
        &self.cache
    }

    /// The signer, or the reason signed names are refused.
    pub fn signer(&self) -> Result<&Signer, &Error> {
        self.signer.as_ref()
    }

    pub fn capf_certificate(&self) -> Option<&[u8]> {
        self.capf_certificate.as_deref()
    }

    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    pub fn capf_port(&self) -> u16 {
        self.capf_port
    }

    /// Where the base document of `device` lives.
    pub fn document_path(&self, device: &str) -> PathBuf {
        self.tftp_dir.join(format!("{device}.cnf.xml"))
    }

    /// What a phone gets for `request` now, from the current store and document: the
    /// kept file when one was built from exactly these inputs, else a new build (kept
    /// when signed). A kept file carries the timestamp of its build, and a kept
    /// `.enc.sgn` the AES key of its build.
    pub fn fetch(&self, request: &Request, now: UnixTime) -> Result<File, Refusal> {
        match self.lookup(request, now)? {
            Lookup::Found(file) => Ok(file),
            Lookup::Build(build) => self.build(build, now),
        }
    }

    /// [`ConfigService::fetch`] from the async runtime. A file that needs no signature
    /// (kept from an earlier build, or unsigned) is answered on the calling task: in a
    /// boot storm nearly every request is one, and handing each to the blocking pool
    /// and back cost more than the lookup itself (two thread wake-ups per file). The
    /// lookup reads the device record and the base document on the calling task when
    /// both come from memory (sled's cache, the page cache); on PostgreSQL it runs on
    /// the blocking pool. Only a build that signs goes there too, with what the
    /// lookup read.
    pub async fn fetch_async(self: &Arc<Self>, request: Request) -> Result<File, Refusal> {
        // On a shared database the record is a network round trip away: the lookup
        // then runs on the blocking pool, not on a runtime worker.
        let service = self.clone();
        let looked_up = self
            .store
            .read_async(move |_| Ok(service.lookup(&request, now())))
            .await??;
        let build = match looked_up {
            Lookup::Found(file) => return Ok(file),
            Lookup::Build(build) if !build.served.is_signed() => return self.build(build, now()),
            Lookup::Build(build) => build,
        };
        let service = self.clone();
        tokio::task::spawn_blocking(move || service.build(build, now()))
            .await
            .map_err(|e| Refusal::Unavailable(format!("build task failed: {e}")))?
    }

    /// The kept file for `request`, or what building it needs: the device record and
    /// the base document are read once, here.
    fn lookup(&self, request: &Request, now: UnixTime) -> Result<Lookup, Refusal> {
        let device_name = request.device_name();
        let device = match &device_name {
            Some(name) => self.store.get_device(name)?.or_else(|| {
                // The operator's opt-in: an unknown device as a known one with
                // encryption off, so its base document is served in full.
                self.serve_unknown_plaintext
                    .then(|| crate::model::DeviceRecord::new(name.as_str()))
            }),
            None => None,
        };
        let document = match &device_name {
            Some(name) => self.read_document(name)?,
            None => None,
        };
        let served = plan::decide(request, device.as_ref(), document.as_deref(), now);
        let kind = match &served {
            Served::FullUnsigned { .. } | Served::FullSigned { .. } => Kind::Full,
            Served::PartialUnsigned { .. } | Served::PartialSigned { .. } => Kind::Partial,
            Served::Encrypted { .. } => Kind::Encrypted,
            Served::Itl => Kind::Itl,
            Served::NotFound(reason) => return Err(Refusal::NotServed(reason.clone())),
        };
        // Only signed files are kept: the others cost no more to build than to look up.
        let signed = served.is_signed();
        // The document's digest finds its kept files and its kept check; with the
        // cache off nothing is kept, and every build checks its document afresh.
        let digest = document
            .as_deref()
            .filter(|_| self.cache.is_on())
            .map(blake3::hash);
        let key = (self.cache.is_on() && signed)
            .then(|| BuildKey::of(request, &served, digest.as_ref(), &self.inputs_digest));
        let name = request.served_name();
        if let Some(key) = &key {
            let kept = self.cache.get(key).or_else(|| {
                let from_disk = self.kept.as_ref()?.read(&name, key)?;
                self.metrics.kept_file_read();
                self.cache.insert(*key, from_disk.clone());
                Some(from_disk)
            });
            if let Some(kept) = kept {
                self.metrics.cache_hit();
                return Ok(Lookup::Found(File {
                    name,
                    kind,
                    signed,
                    bytes: kept,
                }));
            }
            self.metrics.cache_miss();
        }
        Ok(Lookup::Build(Pending {
            request: request.clone(),
            name,
            served,
            document,
            digest,
            kind,
            key,
        }))
    }

    /// Builds what [`ConfigService::lookup`] found missing, and keeps it when signed.
    fn build(&self, pending: Pending, now: UnixTime) -> Result<File, Refusal> {
        let Pending {
            request,
            name,
            served,
            document,
            digest,
            kind,
            key,
        } = pending;
        let signed = served.is_signed();
        let started = std::time::Instant::now();
        let checked = match &document {
            Some(bytes) if served.reads_document() => {
                Some((bytes.as_slice(), self.checked(bytes, digest.as_ref())?))
            }
            _ => None,
        };
        let bytes: Arc<[u8]> = plan::build(
            &request,
            &served,
            checked
                .as_ref()
                .map(|(bytes, checked)| (*bytes, &**checked)),
            &self.build_inputs(),
            now,
            &mut rand::rng(),
        )?
        .into();
        self.metrics
            .file_built(kind.counted_as(signed), started.elapsed());
        if let Some(key) = key {
            self.cache.insert(key, bytes.clone());
            if let Some(kept) = &self.kept {
                kept.write(&name, &key, bytes.clone());
            }
        }
        Ok(File {
            name,
            kind,
            signed,
            bytes,
        })
    }

    /// The check of the base document `bytes`, whose digest is `digest`: kept from an
    /// earlier build of any file from the same bytes (a phone's partial and its
    /// `.enc.sgn` share one), else made now and kept. A document that fails is not
    /// kept, and refuses the build. Without a digest (the cache is off) it is checked
    /// afresh.
    fn checked(
        &self,
        bytes: &[u8],
        digest: Option<&blake3::Hash>,
    ) -> Result<Arc<CheckedDocument>, Refusal> {
        if let Some(checked) = digest.and_then(|digest| self.cache.checked(digest)) {
            return Ok(checked);
        }
        let checked = Arc::new(CheckedDocument::check(bytes)?);
        if let Some(digest) = digest {
            self.cache.insert_checked(digest, checked.clone());
        }
        Ok(checked)
    }

    /// What every build shares: the service's identities and settings.
    fn build_inputs(&self) -> BuildInputs<'_> {
        BuildInputs {
            signer: self.signer.as_ref().ok(),
            capf_certificate: self.capf_certificate.as_deref(),
            other_capf_certificate: self.other_capf_certificate.as_deref(),
            recovery: self.recovery.as_ref().map(|(signer, signs)| itl::Recovery {
                signer,
                signs: *signs,
            }),
            node_name: &self.node_name,
            capf_port: self.capf_port,
        }
    }

    /// The base document, or `None` when there is none. Read on every request, so an
    /// edited document is served at once. Larger than `MAX_DOCUMENT` is refused rather
    /// than read: a runaway file must not take the server's memory with it.
    fn read_document(&self, device: &str) -> Result<Option<Vec<u8>>, Refusal> {
        use std::io::Read;
        let path = self.document_path(device);
        let read = std::fs::File::open(&path).and_then(|f| {
            // Room for a usual document from the start, so it takes two reads (the
            // bytes, then the end) rather than a buffer grown from 32 bytes, a read
            // per step, and no `stat` for its length. The `take` bounds the read.
            let mut bytes = Vec::with_capacity(DOCUMENT_READ);
            f.take(MAX_DOCUMENT + 1).read_to_end(&mut bytes)?;
            Ok(bytes)
        });
        match read {
            Ok(bytes) if bytes.len() as u64 > MAX_DOCUMENT => Err(Refusal::Unavailable(format!(
                "{} is larger than {MAX_DOCUMENT} bytes",
                path.display()
            ))),
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Refusal::Unavailable(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }
}

/// The recovery identity, if it can sign. One that cannot (a missing or broken file)
/// is left out of the ITL, which the signer then signs, and said once: the ITL phones
/// get stays one they accept, only without the way to replace the signer.
fn load_recovery(data: &DataDir, settings: &Settings) -> Option<(Signer, bool)> {
    use crate::ca::recovery::{itl_signing, ItlSigning, RECOVERY_CERT_FILE, RECOVERY_KEY_FILE};
    let certs = data.certs();
    let signing = itl_signing(&certs);
    if signing == ItlSigning::SignerOnly {
        tracing::warn!(
            "no ITL recovery certificate (certs/{RECOVERY_CERT_FILE}): the ITL lists the \
             signer alone, and replacing it would need every phone's ITL deleted by hand"
        );
        return None;
    }
    match Signer::load(
        &certs.join(RECOVERY_CERT_FILE),
        &certs.join(RECOVERY_KEY_FILE),
        settings.config_digest,
    ) {
        Ok(signer) => Some((signer, signing == ItlSigning::Recovery)),
        Err(e) => {
            tracing::warn!(
                "the ITL recovery identity cannot sign ({e}): the ITL lists the signer alone"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests;
