use super::*;
use crate::model::Digest;
use crate::phone_config::format::identity::parse_certificate;
use crate::phone_config::format::sgn::FileKind;
use crate::phone_config::testpki::{enrolled, pki, signer, SEP_DOC};

const NOW: UnixTime = 1_700_000_000;
const MAC: &str = "001122334455";

fn request(form: ConfigForm) -> Request {
    Request::Config {
        mac: MAC.into(),
        form,
    }
}

fn device(encrypted: bool, lsc: Option<&[u8]>) -> DeviceRecord {
    let mut d = DeviceRecord::new(format!("SEP{MAC}"));
    d.encrypted_config = encrypted;
    d.lsc = lsc.map(enrolled);
    d
}

fn spki_of(der: &[u8]) -> Vec<u8> {
    parse_certificate(der).unwrap().public_key().raw.to_vec()
}

fn md5_hex(der: &[u8]) -> String {
    hex::encode(md5::Md5::digest(der))
}

#[test]
fn request_names_follow_e12() {
    assert_eq!(
        Request::parse("SEP00112233aabb.cnf.xml.sgn"),
        Some(Request::Config {
            mac: "00112233AABB".into(),
            form: ConfigForm::Signed
        })
    );
    assert_eq!(
        Request::parse("SEP00112233aabb.cnf.xml.enc.sgn")
            .unwrap()
            .served_name(),
        "SEP00112233AABB.cnf.xml.enc.sgn"
    );
    assert_eq!(
        Request::parse("SEP001122334455.cnf.xml")
            .unwrap()
            .device_name()
            .as_deref(),
        Some("SEP001122334455")
    );
    assert_eq!(Request::parse("ITLFile.tlv"), Some(Request::TrustList));
    assert_eq!(
        Request::parse("ITLSEP001122334455.tlv"),
        Some(Request::DeviceTrustList { mac: MAC.into() })
    );
    assert_eq!(
        Request::parse("CTLFile.tlv"),
        Some(Request::CertificateTrustList)
    );
    assert_eq!(
        Request::parse("CTLSEP001122334455.tlv"),
        Some(Request::CertificateTrustList)
    );
    for bad in [
        "SEP00112233445.cnf.xml",
        "SEP0011223344556.cnf.xml",
        "SEP00112233445G.cnf.xml",
        "SEP001122334455.cnf.xml.bak",
        "SEP001122334455.cnf",
        "../SEP001122334455.cnf.xml",
        "tftp/SEP001122334455.cnf.xml",
        "SEP001122334455.cnf.xml/..",
        "SEP..1122334455.cnf.xml",
        "SEP00\\122334455.cnf.xml",
        "XMLDefault.cnf.xml",
        "ITLSEP0011223344.tlv",
        "SEPé01122334455.cnf.xml",
        "",
    ] {
        assert_eq!(Request::parse(bad), None, "{bad}");
    }
}

#[test]
fn decision_table_rows() {
    let p = pki();
    let doc = Some(SEP_DOC.as_bytes());
    let plain = request(ConfigForm::Plain);
    let signed = request(ConfigForm::Signed);
    let encrypted = request(ConfigForm::Encrypted);
    let off = device(false, Some(&p.phone.der));
    let rsa = device(true, Some(&p.phone.der));
    let none = device(true, None);
    let ec = device(true, Some(&p.phone_ec));
    let hash = Some(md5_hex(&p.phone.der));

    for d in [None, Some(&off), Some(&rsa), Some(&none), Some(&ec)] {
        assert_eq!(decide(&Request::TrustList, d, doc, NOW), Served::Itl);
        assert_eq!(
            decide(&Request::DeviceTrustList { mac: MAC.into() }, d, doc, NOW),
            Served::NotFound(NotFound::DeviceTrustList)
        );
        assert_eq!(
            decide(&Request::CertificateTrustList, d, doc, NOW),
            Served::NotFound(NotFound::NoCtl)
        );
    }
    for d in [Some(&off), Some(&rsa), Some(&none), Some(&ec)] {
        assert_eq!(
            decide(&signed, d, None, NOW),
            Served::NotFound(NotFound::NoDocument)
        );
    }
    for form in [&plain, &signed, &encrypted] {
        assert_eq!(
            decide(form, None, doc, NOW),
            Served::NotFound(NotFound::UnknownDevice),
            "an unknown device gets nothing"
        );
    }
    assert_eq!(
        decide(&plain, Some(&off), doc, NOW),
        Served::FullUnsigned { capf_auth_mode: 0 }
    );
    assert_eq!(
        decide(&signed, Some(&off), doc, NOW),
        Served::FullSigned { capf_auth_mode: 0 }
    );
    assert_eq!(
        decide(&encrypted, Some(&off), doc, NOW),
        Served::NotFound(NotFound::EncryptionOff)
    );
    assert_eq!(
        decide(&plain, Some(&rsa), doc, NOW),
        Served::PartialUnsigned {
            cert_hash: hash.clone(),
            capf_auth_mode: 0
        }
    );
    assert_eq!(
        decide(&signed, Some(&rsa), doc, NOW),
        Served::PartialSigned {
            cert_hash: hash,
            capf_auth_mode: 0
        }
    );
    assert_eq!(
        decide(&encrypted, Some(&rsa), doc, NOW),
        Served::Encrypted {
            phone_key: spki_of(&p.phone.der),
            capf_auth_mode: 0
        }
    );
    for d in [&none, &ec] {
        assert_eq!(
            decide(&plain, Some(d), doc, NOW),
            Served::PartialUnsigned {
                cert_hash: None,
                capf_auth_mode: 0
            }
        );
        assert_eq!(
            decide(&signed, Some(d), doc, NOW),
            Served::PartialSigned {
                cert_hash: None,
                capf_auth_mode: 0
            }
        );
        assert_eq!(
            decide(&encrypted, Some(d), doc, NOW),
            Served::NotFound(NotFound::NoUsableCertificate)
        );
    }
}

#[test]
fn delivery_tells_the_operator_why_a_phone_gets_no_encrypted_file() {
    let p = pki();
    let off = device(false, Some(&p.phone.der));
    assert_eq!(delivery(&off), "full configuration (encryption off)");
    let rsa = device(true, Some(&p.phone.der));
    assert_eq!(
        delivery(&rsa),
        format!("encrypted to the phone's LSC ({})", md5_hex(&p.phone.der))
    );
    assert!(delivery(&device(true, None)).starts_with("partial only: no certificate known"));
    let ec = delivery(&device(true, Some(&p.phone_ec)));
    assert!(
        ec.starts_with("partial only:") && ec.contains("need RSA"),
        "{ec}"
    );
}

#[test]
fn the_mic_is_used_when_no_lsc_is_installed() {
    let p = pki();
    let mut d = device(true, None);
    d.mic = Some(enrolled(&p.phone_1024.der));
    assert_eq!(
        decide(
            &request(ConfigForm::Encrypted),
            Some(&d),
            Some(b"<device/>"),
            NOW
        ),
        Served::Encrypted {
            phone_key: spki_of(&p.phone_1024.der),
            capf_auth_mode: 0
        }
    );
}

#[test]
fn capf_auth_mode_reflects_a_pending_operation() {
    let mut d = device(true, None);
    assert_eq!(capf_auth_mode(&d, NOW), 0);
    d.operation = Operation::Install;
    d.status = OperationStatus::Pending;
    for (auth, mode) in [
        (AuthMode::String, 1),
        (AuthMode::Null, 2),
        (AuthMode::Lsc, 3),
        (AuthMode::Mic, 4),
    ] {
        d.auth = auth;
        assert_eq!(capf_auth_mode(&d, NOW), mode);
    }
    d.status = OperationStatus::UpgradeFailed("Invalid Authentication String".into());
    assert_eq!(capf_auth_mode(&d, NOW), 4, "a failure stays pending");
    d.deadline = Some(NOW - 1);
    assert_eq!(capf_auth_mode(&d, NOW), 0, "past the deadline");
    d.deadline = Some(NOW);
    d.status = OperationStatus::UpgradeSuccess;
    assert_eq!(capf_auth_mode(&d, NOW), 0, "done");
    let served = decide(
        &request(ConfigForm::Signed),
        Some(&device_pending()),
        Some(b"<device/>"),
        NOW,
    );
    assert!(matches!(
        served,
        Served::PartialSigned {
            capf_auth_mode: 2,
            ..
        }
    ));
}

fn device_pending() -> DeviceRecord {
    let mut d = device(true, None);
    d.operation = Operation::Install;
    d.status = OperationStatus::Pending;
    d
}

fn inputs(signer: &Signer) -> BuildInputs<'_> {
    BuildInputs {
        signer: Some(signer),
        capf_certificate: Some(&pki().capf),
        other_capf_certificate: None,
        recovery: None,
        node_name: "capf.example.net",
        capf_port: 3804,
    }
}

/// Decides and builds `form` for `device` with `document`.
fn serve(
    form: ConfigForm,
    device: &DeviceRecord,
    document: &[u8],
    signer: &Signer,
) -> Result<Vec<u8>> {
    let request = request(form);
    let served = decide(&request, Some(device), Some(document), NOW);
    // As the service does: the document is checked for what is built from it.
    let checked = match served.reads_document() {
        true => Some(CheckedDocument::check(document)?),
        false => None,
    };
    build(
        &request,
        &served,
        checked.as_ref().map(|checked| (document, checked)),
        &inputs(signer),
        NOW,
        &mut rand::rng(),
    )
}

#[test]
fn encryption_off_serves_the_full_document_signed_and_unsigned() {
    let s = signer(Digest::Sha1);
    let d = device(false, Some(&pki().phone.der));
    assert_eq!(
        serve(ConfigForm::Plain, &d, SEP_DOC.as_bytes(), &s).unwrap(),
        SEP_DOC.as_bytes()
    );
    let file = serve(ConfigForm::Signed, &d, SEP_DOC.as_bytes(), &s).unwrap();
    let parsed = sgn::parse(&file, FileKind::Sgn).unwrap();
    assert_eq!(parsed.body, SEP_DOC.as_bytes());
    assert_eq!(parsed.filename, "SEP001122334455.cnf.xml.sgn");
    assert_eq!(parsed.timestamp, NOW as u32);
    sgn::verify(&parsed, &pki().signer.der).unwrap();
}

#[test]
fn encryption_on_serves_a_signed_partial_and_the_encrypted_full_document() {
    let p = pki();
    let s = signer(Digest::Sha1);
    let d = device(true, Some(&p.phone.der));
    let file = serve(ConfigForm::Signed, &d, SEP_DOC.as_bytes(), &s).unwrap();
    let parsed = sgn::parse(&file, FileKind::Sgn).unwrap();
    assert_eq!(parsed.header_length, 424);
    assert_eq!(parsed.body.len(), 444);
    assert_eq!(file.len(), 868);
    sgn::verify(&parsed, &p.signer.der).unwrap();
    let body = std::str::from_utf8(parsed.body).unwrap();
    let hash = md5_hex(&p.phone.der);
    assert!(body.contains(&format!("  <certHash>{hash}</certHash>\n")));
    assert!(
        body.contains("<encrConfig>true</encrConfig>")
            && body.contains("<fullConfig>false</fullConfig>")
    );
    assert!(!body.contains("s3cret"));

    let unsigned = serve(ConfigForm::Plain, &d, SEP_DOC.as_bytes(), &s).unwrap();
    assert_eq!(unsigned, parsed.body);

    let encrypted = serve(ConfigForm::Encrypted, &d, SEP_DOC.as_bytes(), &s).unwrap();
    let parsed = sgn::parse(&encrypted, FileKind::EncSgn).unwrap();
    assert_eq!(parsed.filename, "SEP001122334455.cnf.xml.enc.sgn");
    sgn::verify(&parsed, &p.signer.der).unwrap();
    assert_eq!(
        enc::decrypt(&encrypted, &p.phone.key).unwrap(),
        SEP_DOC.as_bytes()
    );
}

#[test]
fn the_sgn_signer_is_the_itl_tftp_record() {
    let p = pki();
    let s = signer(Digest::Sha1);
    let d = device(true, Some(&p.phone.der));
    let config = serve(ConfigForm::Signed, &d, SEP_DOC.as_bytes(), &s).unwrap();
    let config = sgn::parse(&config, FileKind::Sgn).unwrap();
    let served = decide(&Request::TrustList, Some(&d), None, NOW);
    let list = build(
        &Request::TrustList,
        &served,
        None,
        &inputs(&s),
        NOW,
        &mut rand::rng(),
    )
    .unwrap();
    let list = itl::parse(&list).unwrap();
    itl::verify(&list).unwrap();
    let tftp = list
        .records
        .iter()
        .find(|r| r.role == itl::Role::Tftp.value())
        .unwrap();
    assert_eq!(tftp.issuer, config.issuer_name);
    assert_eq!(tftp.subject, config.signer_name);
    assert_eq!(tftp.serial, config.serial);
    sgn::verify(&config, tftp.certificate).unwrap();
    let capf = list
        .records
        .iter()
        .find(|r| r.role == itl::Role::Capf.value())
        .unwrap();
    assert_eq!(capf.certificate, p.capf.as_slice());
}

#[test]
fn a_new_certificate_changes_both_the_hash_and_the_wrap_key() {
    let p = pki();
    let s = signer(Digest::Sha1);
    let mut d = device(true, Some(&p.phone.der));
    let before = serve(ConfigForm::Signed, &d, SEP_DOC.as_bytes(), &s).unwrap();
    d.lsc = Some(enrolled(&p.phone_1024.der));
    let after = serve(ConfigForm::Signed, &d, SEP_DOC.as_bytes(), &s).unwrap();
    let hash_of = |file: &[u8]| {
        let body = sgn::parse(file, FileKind::Sgn).unwrap().body.to_vec();
        let body = String::from_utf8(body).unwrap();
        let start = body.find("<certHash>").unwrap() + 10;
        body[start..start + 32].to_owned()
    };
    assert_eq!(hash_of(&before), md5_hex(&p.phone.der));
    assert_eq!(hash_of(&after), md5_hex(&p.phone_1024.der));
    let encrypted = serve(ConfigForm::Encrypted, &d, SEP_DOC.as_bytes(), &s).unwrap();
    assert_eq!(
        enc::decrypt(&encrypted, &p.phone_1024.key).unwrap(),
        SEP_DOC.as_bytes()
    );
    assert!(enc::decrypt(&encrypted, &p.phone.key).is_err());
}

#[test]
fn toggling_encryption_switches_between_full_and_partial() {
    let p = pki();
    let s = signer(Digest::Sha1);
    let mut d = device(true, Some(&p.phone.der));
    let on = serve(ConfigForm::Signed, &d, SEP_DOC.as_bytes(), &s).unwrap();
    assert_eq!(sgn::parse(&on, FileKind::Sgn).unwrap().body.len(), 444);
    d.encrypted_config = false;
    let off = serve(ConfigForm::Signed, &d, SEP_DOC.as_bytes(), &s).unwrap();
    assert_eq!(
        sgn::parse(&off, FileKind::Sgn).unwrap().body,
        SEP_DOC.as_bytes()
    );
    assert!(matches!(
        serve(ConfigForm::Encrypted, &d, SEP_DOC.as_bytes(), &s),
        Err(Error::NotServed(_))
    ));
}

#[test]
fn a_cucm_root_is_kept_byte_exact() {
    let p = pki();
    let s = signer(Digest::Sha1);
    let doc = SEP_DOC.replace(
        "<device>",
        "<device xsi:type=\"axl:XIPPhone\" ctiid=\"94\">",
    );
    let doc = doc.as_bytes();
    let mut d = device(false, Some(&p.phone.der));
    let full = serve(ConfigForm::Signed, &d, doc, &s).unwrap();
    assert_eq!(sgn::parse(&full, FileKind::Sgn).unwrap().body, doc);
    d.encrypted_config = true;
    let encrypted = serve(ConfigForm::Encrypted, &d, doc, &s).unwrap();
    assert_eq!(enc::decrypt(&encrypted, &p.phone.key).unwrap(), doc);
    let partial = serve(ConfigForm::Plain, &d, doc, &s).unwrap();
    assert!(partial.starts_with(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<device>\n"));
}

#[test]
fn bad_documents_are_never_served() {
    let p = pki();
    let s = signer(Digest::Sha1);
    for doc in [
        "<device><a></device>",
        "<Default><a/></Default>",
        "<device/><x/>",
    ] {
        for encrypted in [false, true] {
            let d = device(encrypted, Some(&p.phone.der));
            for form in [ConfigForm::Plain, ConfigForm::Signed, ConfigForm::Encrypted] {
                let result = serve(form, &d, doc.as_bytes(), &s);
                if !encrypted && form == ConfigForm::Encrypted {
                    assert!(matches!(result, Err(Error::NotServed(_))));
                } else {
                    assert!(matches!(result, Err(Error::Document(_))), "{doc} {form:?}");
                }
            }
        }
    }
}

#[test]
fn a_bom_is_not_served() {
    let s = signer(Digest::Sha1);
    let d = device(false, None);
    let doc = [b"\xEF\xBB\xBF".as_slice(), SEP_DOC.as_bytes()].concat();
    assert_eq!(
        serve(ConfigForm::Plain, &d, &doc, &s).unwrap(),
        SEP_DOC.as_bytes()
    );
}

#[test]
fn signed_names_need_signing_material() {
    let d = device(false, None);
    let request = request(ConfigForm::Signed);
    let served = decide(&request, Some(&d), Some(SEP_DOC.as_bytes()), NOW);
    let no_signer = BuildInputs {
        signer: None,
        capf_certificate: Some(&pki().capf),
        other_capf_certificate: None,
        recovery: None,
        node_name: "capf.example.net",
        capf_port: 3804,
    };
    let checked = CheckedDocument::check(SEP_DOC.as_bytes()).unwrap();
    let result = build(
        &request,
        &served,
        Some((SEP_DOC.as_bytes(), &checked)),
        &no_signer,
        NOW,
        &mut rand::rng(),
    );
    assert!(matches!(result, Err(Error::NoSigner)));
    let itl = build(
        &Request::TrustList,
        &Served::Itl,
        None,
        &no_signer,
        NOW,
        &mut rand::rng(),
    );
    assert!(matches!(itl, Err(Error::NoSigner)));
    let s = signer(Digest::Sha1);
    let no_capf = BuildInputs {
        capf_certificate: None,
        other_capf_certificate: None,
        recovery: None,
        ..inputs(&s)
    };
    let itl = build(
        &Request::TrustList,
        &Served::Itl,
        None,
        &no_capf,
        NOW,
        &mut rand::rng(),
    );
    assert!(matches!(itl, Err(Error::NoCapfCertificate)));
}

/// The cache's guarantee rests on this: the key changes with every input of `build`
/// (the clock and the random generator aside), and only with them.
#[test]
fn the_build_key_changes_with_every_input_of_build() {
    let p = pki();
    let sha1 = signer(Digest::Sha1);
    let sha512 = signer(Digest::Sha512);
    let other_signer = Signer::from_der(
        p.signer_1024.der.clone(),
        &p.signer_1024.pkcs8,
        Digest::Sha1,
    )
    .unwrap();
    let signed = request(ConfigForm::Signed);
    let hash = Some(md5_hex(&p.phone.der));
    let partial = Served::PartialSigned {
        cert_hash: hash.clone(),
        capf_auth_mode: 0,
    };
    let document = SEP_DOC.as_bytes();
    let edited = SEP_DOC.replace("1001", "1002");
    let base = inputs(&sha1);
    let key =
        |request: &Request, served: &Served, document: Option<&[u8]>, inputs: BuildInputs<'_>| {
            let digest = document.map(blake3::hash);
            BuildKey::of(request, served, digest.as_ref(), &inputs.digest())
        };
    let reference = key(&signed, &partial, Some(document), base);
    assert_eq!(
        reference,
        key(&signed, &partial.clone(), Some(document), inputs(&sha1)),
        "equal inputs, equal keys"
    );

    let encrypted = |phone_key: Vec<u8>, capf_auth_mode| Served::Encrypted {
        phone_key,
        capf_auth_mode,
    };
    let changed = [
        // The name (another phone, another form).
        key(
            &Request::Config {
                mac: "AABBCCDDEEFF".into(),
                form: ConfigForm::Signed,
            },
            &partial,
            Some(document),
            base,
        ),
        key(&request(ConfigForm::Plain), &partial, Some(document), base),
        // The decision: each field of each variant.
        key(
            &signed,
            &Served::PartialSigned {
                cert_hash: None,
                capf_auth_mode: 0,
            },
            Some(document),
            base,
        ),
        key(
            &signed,
            &Served::PartialSigned {
                cert_hash: Some(md5_hex(&p.phone_1024.der)),
                capf_auth_mode: 0,
            },
            Some(document),
            base,
        ),
        key(
            &signed,
            &Served::PartialSigned {
                cert_hash: hash.clone(),
                capf_auth_mode: 2,
            },
            Some(document),
            base,
        ),
        key(
            &signed,
            &Served::PartialUnsigned {
                cert_hash: hash.clone(),
                capf_auth_mode: 0,
            },
            Some(document),
            base,
        ),
        key(
            &signed,
            &Served::FullSigned { capf_auth_mode: 0 },
            Some(document),
            base,
        ),
        key(
            &signed,
            &Served::FullSigned { capf_auth_mode: 3 },
            Some(document),
            base,
        ),
        key(
            &signed,
            &Served::FullUnsigned { capf_auth_mode: 0 },
            Some(document),
            base,
        ),
        key(
            &signed,
            &encrypted(spki_of(&p.phone.der), 0),
            Some(document),
            base,
        ),
        key(
            &signed,
            &encrypted(spki_of(&p.phone_1024.der), 0),
            Some(document),
            base,
        ),
        key(
            &signed,
            &encrypted(spki_of(&p.phone.der), 1),
            Some(document),
            base,
        ),
        key(&signed, &Served::Itl, Some(document), base),
        // The document: one edit, or none at all.
        key(&signed, &partial, Some(edited.as_bytes()), base),
        key(&signed, &partial, None, base),
        // The signer: none, another digest, another certificate.
        key(
            &signed,
            &partial,
            Some(document),
            BuildInputs {
                signer: None,
                ..base
            },
        ),
        key(&signed, &partial, Some(document), inputs(&sha512)),
        key(&signed, &partial, Some(document), inputs(&other_signer)),
        // The CAPF certificate of the ITL, and the node's published name and port.
        key(
            &signed,
            &partial,
            Some(document),
            BuildInputs {
                capf_certificate: None,
                ..base
            },
        ),
        key(
            &signed,
            &partial,
            Some(document),
            BuildInputs {
                capf_certificate: Some(&p.phone.der),
                ..base
            },
        ),
        // A CA rollover's second CAPF certificate in the ITL.
        key(
            &signed,
            &partial,
            Some(document),
            BuildInputs {
                other_capf_certificate: Some(&p.phone.der),
                ..base
            },
        ),
        key(
            &signed,
            &partial,
            Some(document),
            BuildInputs {
                node_name: "capf2.example.net",
                ..base
            },
        ),
        key(
            &signed,
            &partial,
            Some(document),
            BuildInputs {
                capf_port: 3805,
                ..base
            },
        ), // The recovery identity: listed, then signing.
        key(
            &signed,
            &Served::Itl,
            Some(document),
            BuildInputs {
                recovery: Some(crate::phone_config::format::itl::Recovery {
                    signer: &other_signer,
                    signs: false,
                }),
                ..base
            },
        ),
        key(
            &signed,
            &Served::Itl,
            Some(document),
            BuildInputs {
                recovery: Some(crate::phone_config::format::itl::Recovery {
                    signer: &other_signer,
                    signs: true,
                }),
                ..base
            },
        ),
    ];
    let mut seen = std::collections::HashSet::from([reference]);
    for (i, k) in changed.iter().enumerate() {
        assert!(seen.insert(*k), "change {i} gave a key already seen");
    }
}

#[test]
fn only_signed_files_count_as_signed() {
    assert!(Served::FullSigned { capf_auth_mode: 0 }.is_signed());
    assert!(Served::PartialSigned {
        cert_hash: None,
        capf_auth_mode: 0
    }
    .is_signed());
    assert!(Served::Encrypted {
        phone_key: Vec::new(),
        capf_auth_mode: 0
    }
    .is_signed());
    assert!(Served::Itl.is_signed());
    assert!(!Served::FullUnsigned { capf_auth_mode: 0 }.is_signed());
    assert!(!Served::PartialUnsigned {
        cert_hash: None,
        capf_auth_mode: 0
    }
    .is_signed());
    assert!(!Served::NotFound(NotFound::NoDocument).is_signed());
}
