//! The service with its cache: a kept file is served again only while every input of
//! its build is unchanged, each input changed in turn changes the next fetch, and the
//! cache stays within its budget.

use super::*;
use crate::model::{AuthMode, DeviceRecord, Digest, Event, Operation, OperationStatus};
use crate::phone_config::format::capf_section::{splice, CapfFacts};
use crate::phone_config::format::enc;
use crate::phone_config::format::itl;
use crate::phone_config::format::sgn::{self, FileKind};
use crate::phone_config::testpki::{enrolled, pki, signer, SEP_DOC};

const NOW: UnixTime = 1_700_000_000;
const NAME: &str = "SEP001122334455";
const SGN: &str = "SEP001122334455.cnf.xml.sgn";
const ENC: &str = "SEP001122334455.cnf.xml.enc.sgn";
const ITL: &str = "ITLFile.tlv";

/// A store, a `tftp/` directory and a directory of kept files in a temporary
/// directory.
struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    tftp: PathBuf,
    kept: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let tftp = dir.path().join("tftp");
        std::fs::create_dir(&tftp).unwrap();
        let kept = dir.path().join("kept-files");
        Fixture {
            _dir: dir,
            store,
            tftp,
            kept,
        }
    }

    /// A service that keeps its files in memory only.
    fn service(&self) -> ConfigService {
        self.service_with(Ok(signer(Digest::Sha1)), pki().capf.clone(), &settings())
    }

    /// A service that keeps its files on disk too, as a node's does: a new one is a
    /// node restarted, its memory empty and its kept files where they were.
    fn node_service(&self) -> ConfigService {
        self.keeping(self.service())
    }

    fn keeping(&self, service: ConfigService) -> ConfigService {
        service.with_kept_files(KeptFiles::open(self.kept.clone()).unwrap())
    }

    fn kept_names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.kept)
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The service with `config_cache_mib = 0`: every fetch a build from scratch.
    fn uncached_service(&self) -> ConfigService {
        self.service_with(
            Ok(signer(Digest::Sha1)),
            pki().capf.clone(),
            &Settings {
                config_cache_mib: 0,
                ..settings()
            },
        )
    }

    fn service_with(
        &self,
        signer: Result<Signer, Error>,
        capf_certificate: Vec<u8>,
        settings: &Settings,
    ) -> ConfigService {
        ConfigService::new(
            self.store.clone(),
            self.tftp.clone(),
            signer,
            Some(capf_certificate),
            settings,
        )
    }

    fn put(&self, device: &DeviceRecord) {
        let event = Event {
            id: 0,
            time: NOW,
            actor: "test".into(),
            device: Some(device.name.clone()),
            action: "device-set".into(),
            result: "ok".into(),
            details: Default::default(),
        };
        self.store.put_device(device, event).unwrap();
    }

    fn document(&self, name: &str, text: &str) {
        std::fs::write(self.tftp.join(format!("{name}.cnf.xml")), text).unwrap();
    }
}

fn settings() -> Settings {
    Settings {
        node_name: "capf.test".into(),
        ..Settings::default()
    }
}

fn fetch(service: &ConfigService, name: &str, now: UnixTime) -> Vec<u8> {
    service
        .fetch(&Request::parse(name).unwrap(), now)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .bytes
        .to_vec()
}

fn refused(service: &ConfigService, name: &str, now: UnixTime) -> bool {
    matches!(
        service.fetch(&Request::parse(name).unwrap(), now),
        Err(Refusal::NotServed(_))
    )
}

/// The verified body of a `.sgn`, as text.
fn body(file: &[u8]) -> String {
    let parsed = sgn::parse(file, FileKind::Sgn).unwrap();
    sgn::verify(&parsed, &pki().signer.der).unwrap();
    String::from_utf8(parsed.body.to_vec()).unwrap()
}

fn timestamp(file: &[u8], kind: FileKind) -> u32 {
    sgn::parse(file, kind).unwrap().timestamp
}

/// `doc` as served in full by a node named `capf.test` on port 3804.
fn full(doc: &str, capf_auth_mode: u8) -> String {
    let facts = CapfFacts {
        node_name: "capf.test",
        capf_port: 3804,
        capf_auth_mode,
    };
    String::from_utf8(splice(doc.as_bytes(), &facts).unwrap()).unwrap()
}

fn encrypted_device() -> DeviceRecord {
    let mut device = DeviceRecord::new(NAME);
    device.encrypted_config = true;
    device.lsc = Some(enrolled(&pki().phone.der));
    device
}

#[test]
fn an_unchanged_file_is_served_again_byte_for_byte_with_the_timestamp_of_its_build() {
    let f = Fixture::new();
    f.put(&encrypted_device());
    f.document(NAME, SEP_DOC);
    let service = f.service();
    for (name, kind) in [
        (SGN, FileKind::Sgn),
        (ENC, FileKind::EncSgn),
        (ITL, FileKind::Tlv),
    ] {
        let first = fetch(&service, name, NOW);
        // An hour later a new build would carry another timestamp (and, for the
        // .enc.sgn, another AES key): the same bytes are the kept file.
        let again = fetch(&service, name, NOW + 3600);
        assert_eq!(first, again, "{name}");
        assert_eq!(timestamp(&again, kind), NOW as u32, "{name}");
    }
    assert_eq!(
        enc::decrypt(&fetch(&service, ENC, NOW + 7200), &pki().phone.key).unwrap(),
        full(SEP_DOC, 0).as_bytes()
    );
    assert_eq!(service.cache().len(), 3);

    // Unsigned names cost no signature and are not kept.
    fetch(&service, "SEP001122334455.cnf.xml", NOW);
    assert_eq!(service.cache().len(), 3);
}

#[test]
fn a_document_is_checked_once_for_every_file_built_from_its_bytes() {
    let f = Fixture::new();
    f.put(&encrypted_device());
    f.document(NAME, SEP_DOC);
    let service = f.service();
    let counts = || (service.cache().len(), service.cache().documents());
    let partial = fetch(&service, SGN, NOW);
    assert_eq!(counts(), (1, 1));
    let encrypted = fetch(&service, ENC, NOW);
    assert_eq!(
        counts(),
        (2, 1),
        "the encrypted build used the partial's check"
    );
    // What was built from the kept check is what a build checking afresh makes.
    let uncached = f.uncached_service();
    assert_eq!(partial, fetch(&uncached, SGN, NOW));
    assert_eq!(
        enc::decrypt(&encrypted, &pki().phone.key).unwrap(),
        full(SEP_DOC, 0).as_bytes()
    );

    // Edited, the document has another digest: checked again, and its edit served.
    let edited = SEP_DOC.replace("1001", "1002");
    f.document(NAME, &edited);
    let file = fetch(&service, ENC, NOW);
    assert_eq!(
        enc::decrypt(&file, &pki().phone.key).unwrap(),
        full(&edited, 0).as_bytes()
    );
    assert_eq!(counts(), (3, 2));

    // A document that fails its check is refused every time and nothing is kept of it.
    f.document(NAME, "<device><line></device>");
    for name in [ENC, SGN] {
        assert!(matches!(
            service.fetch(&Request::parse(name).unwrap(), NOW),
            Err(Refusal::Build(Error::Document(_)))
        ));
    }
    assert_eq!(counts(), (3, 2));
    f.document(NAME, SEP_DOC);
    assert_eq!(
        fetch(&service, ENC, NOW + 60),
        encrypted,
        "kept from the first build"
    );
}

#[test]
fn each_input_changed_in_turn_changes_the_next_fetch() {
    let f = Fixture::new();
    let service = std::rc::Rc::new(f.service());
    each_input_changed_in_turn(&f, &|| service.clone());
}

/// The same with the node restarted before every fetch: every kept file comes from
/// disk, and none is served once an input changed.
#[test]
fn each_input_changed_in_turn_changes_the_next_fetch_after_a_restart() {
    let f = Fixture::new();
    each_input_changed_in_turn(&f, &|| std::rc::Rc::new(f.node_service()));
    assert_eq!(f.kept_names(), [ENC, SGN], "one copy per name");
}

/// Changes each input of the files in turn; `service` gives the service of each fetch.
fn each_input_changed_in_turn(f: &Fixture, service: &dyn Fn() -> std::rc::Rc<ConfigService>) {
    let mut device = DeviceRecord::new(NAME);
    f.put(&device);
    f.document(NAME, SEP_DOC);
    // The clock moves on between fetches, so a file built again would differ at least
    // in its timestamp.
    let clock = std::cell::Cell::new(NOW);
    let now = || clock.get();
    // Fetches `name` a minute later, and a second after that: the second is kept.
    let fetch_twice = |name: &str| {
        clock.set(clock.get() + 60);
        let file = fetch(&service(), name, now());
        assert_eq!(file, fetch(&service(), name, now() + 1), "{name} is kept");
        file
    };
    let refused = |name: &str, now: UnixTime| refused(&service(), name, now);

    // Encryption off, nothing pending: the full document, capfAuthMode 0.
    let full_0 = fetch_twice(SGN);
    assert_eq!(body(&full_0), full(SEP_DOC, 0));

    // The base document.
    let edited_doc = SEP_DOC.replace("s3cret", "n3w-s3cret");
    f.document(NAME, &edited_doc);
    let edited = fetch_twice(SGN);
    assert_ne!(edited, full_0);
    assert_eq!(body(&edited), full(&edited_doc, 0));

    // An operation pending: capfAuthMode 2 (null authentication).
    device.operation = Operation::Install;
    device.auth = AuthMode::Null;
    device.status = OperationStatus::Pending;
    device.deadline = Some(now() + 1000);
    f.put(&device);
    let pending = fetch_twice(SGN);
    assert_ne!(pending, edited);
    assert_eq!(body(&pending), full(&edited_doc, 2));

    // No field of the record changes, but the deadline passes: capfAuthMode 0 again.
    clock.set(now() + 2000);
    let expired = fetch_twice(SGN);
    assert_ne!(expired, pending);
    assert_eq!(body(&expired), full(&edited_doc, 0));

    // Encryption on, no certificate yet: the partial with an empty hash, no .enc.sgn.
    device.deadline = None;
    device.encrypted_config = true;
    f.put(&device);
    let partial = fetch_twice(SGN);
    assert_ne!(partial, expired);
    assert!(body(&partial).contains("<certHash></certHash>"));
    assert!(body(&partial).contains("<capfAuthMode>2</capfAuthMode>"));
    assert!(refused(ENC, now()));

    // The phone enrolls: the hash of its LSC, the .enc.sgn wrapped to its key.
    let p = pki();
    device.lsc = Some(enrolled(&p.phone.der));
    device.status = OperationStatus::UpgradeSuccess;
    f.put(&device);
    let enrolled_partial = fetch_twice(SGN);
    assert_ne!(enrolled_partial, partial);
    let hash = device.lsc.as_ref().unwrap().md5.clone();
    assert!(body(&enrolled_partial).contains(&format!("<certHash>{hash}</certHash>")));
    assert!(body(&enrolled_partial).contains("<capfAuthMode>0</capfAuthMode>"));
    let encrypted = fetch_twice(ENC);
    assert_eq!(
        enc::decrypt(&encrypted, &p.phone.key).unwrap(),
        full(&edited_doc, 0).as_bytes()
    );

    // A new LSC: the new hash, the .enc.sgn wrapped to the new key only.
    device.lsc = Some(enrolled(&p.phone_1024.der));
    f.put(&device);
    let renewed_partial = fetch_twice(SGN);
    assert_ne!(renewed_partial, enrolled_partial);
    let hash = device.lsc.as_ref().unwrap().md5.clone();
    assert!(body(&renewed_partial).contains(&format!("<certHash>{hash}</certHash>")));
    let renewed = fetch_twice(ENC);
    assert_ne!(renewed, encrypted);
    assert!(enc::decrypt(&renewed, &p.phone.key).is_err());
    assert_eq!(
        enc::decrypt(&renewed, &p.phone_1024.key).unwrap(),
        full(&edited_doc, 0).as_bytes()
    );

    // An operation scheduled again: capfAuthMode in the partial and the .enc.sgn.
    device.operation = Operation::Install;
    device.auth = AuthMode::String;
    device.status = OperationStatus::Pending;
    f.put(&device);
    let scheduled_partial = fetch_twice(SGN);
    assert!(body(&scheduled_partial).contains("<capfAuthMode>1</capfAuthMode>"));
    let scheduled = fetch_twice(ENC);
    assert_eq!(
        enc::decrypt(&scheduled, &p.phone_1024.key).unwrap(),
        full(&edited_doc, 1).as_bytes()
    );

    // The document again, now under encryption.
    f.document(NAME, SEP_DOC);
    let reverted = fetch_twice(ENC);
    assert_eq!(
        enc::decrypt(&reverted, &p.phone_1024.key).unwrap(),
        full(SEP_DOC, 1).as_bytes()
    );

    // Encryption off again: the full document, and no .enc.sgn.
    device.encrypted_config = false;
    f.put(&device);
    assert_eq!(body(&fetch_twice(SGN)), full(SEP_DOC, 1));
    assert!(refused(ENC, now()));
}

/// The signer, the CAPF certificate and the node's settings are loaded once per
/// service; a node restarted with others starts with an empty cache, but with the
/// files it kept on disk. The key covers them: here the new service is handed the old
/// one's memory and its directory of kept files.
#[test]
fn a_changed_signer_capf_certificate_or_node_setting_is_a_different_key() {
    let f = Fixture::new();
    f.put(&encrypted_device());
    f.document(NAME, SEP_DOC);
    let mut service = f.node_service();
    let sgn = fetch(&service, SGN, NOW);
    let enc_file = fetch(&service, ENC, NOW);
    let itl_file = fetch(&service, ITL, NOW);
    let mut changed = |signer: Signer, capf: Vec<u8>, settings: Settings| {
        let kept = std::mem::replace(&mut service.cache, FileCache::new(0));
        let mut next = f.keeping(f.service_with(Ok(signer), capf, &settings));
        next.cache = kept;
        let files = [
            fetch(&next, SGN, NOW),
            fetch(&next, ENC, NOW),
            fetch(&next, ITL, NOW),
        ];
        service = next;
        files
    };

    let [s, e, i] = changed(signer(Digest::Sha512), pki().capf.clone(), settings());
    assert_ne!(s, sgn);
    assert_eq!(
        sgn::parse(&s, FileKind::Sgn).unwrap().digest,
        Digest::Sha512
    );
    assert_ne!(e, enc_file);
    assert_ne!(i, itl_file);

    let other = &pki().signer_1024;
    let other = Signer::from_der(other.der.clone(), &other.pkcs8, Digest::Sha1).unwrap();
    let [s, _, i] = changed(other, pki().capf.clone(), settings());
    assert_eq!(
        sgn::parse(&s, FileKind::Sgn).unwrap().signature.len(),
        128,
        "signed by the 1024-bit signer"
    );
    assert_eq!(
        itl::parse(&i).unwrap().records[0].certificate,
        pki().signer_1024.der.as_slice()
    );

    let capf = pki().phone.der.clone();
    let [_, _, i] = changed(signer(Digest::Sha1), capf.clone(), settings());
    let list = itl::parse(&i).unwrap();
    assert!(list
        .records
        .iter()
        .any(|r| r.role == itl::Role::Capf.value() && r.certificate == capf.as_slice()));

    let renamed = Settings {
        node_name: "capf2.test".into(),
        ..settings()
    };
    let [s, e, _] = changed(signer(Digest::Sha1), pki().capf.clone(), renamed);
    assert!(body(&s).contains("<processNodeName>capf2.test</processNodeName>"));
    let plain = enc::decrypt(&e, &pki().phone.key).unwrap();
    assert!(String::from_utf8(plain)
        .unwrap()
        .contains("<processNodeName>capf2.test</processNodeName>"));

    let moved = Settings {
        capf_port: 3805,
        ..settings()
    };
    let [s, _, _] = changed(signer(Digest::Sha1), pki().capf.clone(), moved);
    assert!(body(&s).contains("<phonePort>3805</phonePort>"));
}

#[test]
fn the_cache_stays_within_its_budget_and_rebuilds_what_it_dropped() {
    let f = Fixture::new();
    let mut service = f.service();
    // Room for about ten partials of ~0.9 KiB each.
    let budget = 10 * 1024;
    service.cache = FileCache::new(budget);
    let names: Vec<String> = (0..40).map(|n| format!("SEP0000000000{n:02}")).collect();
    for name in &names {
        let mut device = DeviceRecord::new(name.as_str());
        device.encrypted_config = true;
        f.put(&device);
        f.document(name, SEP_DOC);
    }
    for (n, name) in names.iter().enumerate() {
        fetch(
            &service,
            &format!("{name}.cnf.xml.sgn"),
            NOW + n as UnixTime,
        );
        assert!(service.cache().bytes() <= budget);
    }
    let kept = service.cache().len();
    assert!((5..40).contains(&kept), "{kept} kept");

    // The first phone's file went long ago: it is built again, and kept again.
    let first = format!("{}.cnf.xml.sgn", names[0]);
    let rebuilt = fetch(&service, &first, NOW + 1000);
    assert_eq!(timestamp(&rebuilt, FileKind::Sgn), (NOW + 1000) as u32);
    assert_eq!(fetch(&service, &first, NOW + 2000), rebuilt);
    assert!(service.cache().bytes() <= budget);
}

#[test]
fn a_zero_budget_keeps_nothing_and_builds_every_time() {
    let f = Fixture::new();
    f.put(&encrypted_device());
    f.document(NAME, SEP_DOC);
    let service = f.keeping(f.uncached_service());
    assert!(
        service.kept_files().is_none(),
        "nothing kept on disk either"
    );
    let first = fetch(&service, ENC, NOW);
    let again = fetch(&service, ENC, NOW);
    assert_ne!(first, again, "a fresh AES key every build");
    assert_eq!(
        timestamp(&fetch(&service, SGN, NOW + 5), FileKind::Sgn),
        (NOW + 5) as u32
    );
    assert!(service.cache().is_empty());
    assert!(f.kept_names().is_empty());
}

/// After a restart the files built before it are served from disk byte for byte (the
/// `.enc.sgn` with its AES key), not signed again; a copy damaged on disk is never
/// served, but built again and kept in its place.
#[test]
fn a_restarted_node_serves_its_kept_files_and_builds_again_what_is_damaged() {
    let f = Fixture::new();
    f.put(&encrypted_device());
    f.document(NAME, SEP_DOC);
    let names = [ITL, SGN, ENC];
    let built = names.map(|name| fetch(&f.node_service(), name, NOW));
    assert_eq!(f.kept_names(), [ITL, ENC, SGN]);

    let restarted = f.node_service();
    assert!(restarted.cache().is_empty());
    assert_eq!(names.map(|name| fetch(&restarted, name, NOW + 60)), built);
    assert_eq!(restarted.cache().len(), 3, "read once, then from memory");

    for damage in [
        |file: &mut Vec<u8>| *file.last_mut().unwrap() ^= 1,
        |file: &mut Vec<u8>| file.truncate(file.len() / 2),
        |file: &mut Vec<u8>| file.clear(),
    ] {
        let path = f.kept.join(ENC);
        let mut file = std::fs::read(&path).unwrap();
        damage(&mut file);
        std::fs::write(&path, file).unwrap();
        let rebuilt = fetch(&f.node_service(), ENC, NOW + 120);
        assert_eq!(timestamp(&rebuilt, FileKind::EncSgn), (NOW + 120) as u32);
        assert_eq!(
            enc::decrypt(&rebuilt, &pki().phone.key).unwrap(),
            full(SEP_DOC, 0).as_bytes()
        );
        assert_eq!(
            fetch(&f.node_service(), ENC, NOW + 180),
            rebuilt,
            "kept again"
        );
    }
}
