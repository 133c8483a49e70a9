//! Test material: a small CA with the signer, CAPF and phone certificates of
//! config-files.md §8.1 and §13, generated once per test run (RSA key generation is
//! the slow part), plus the §8.1 device document.

use crate::model::Digest;
use crate::model::{EcCurve, EnrolledCert, KeySpec};
use crate::phone_config::signer::Signer;
use md5::Digest as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    SerialNumber, SubjectPublicKeyInfo,
};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use std::sync::OnceLock;

/// `SEP001122334455.cnf.xml` of §8.1: 655 bytes, LF line endings.
pub const SEP_DOC: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<device>
  <fullConfig>true</fullConfig>
  <deviceProtocol>SIP</deviceProtocol>
  <ipAddressMode>0</ipAddressMode>
  <loadInformation>SIP75.9-4-2SR3-1S</loadInformation>
  <capfAuthMode>0</capfAuthMode>
  <capfList>
    <capf>
      <phonePort>3804</phonePort>
      <processNodeName>capf.example.net</processNodeName>
    </capf>
  </capfList>
  <sipProfile>
    <sipLines>
      <line button="1">
        <name>1001</name>
        <authName>1001</authName>
        <authPassword>s3cret</authPassword>
      </line>
    </sipLines>
  </sipProfile>
  <certHash></certHash>
  <encrConfig>false</encrConfig>
</device>
"#;

/// A 512-bit key: the rsa crate will not generate one, but the format allows it for
/// SHA-1 and E6 must refuse it for SHA-512.
const KEY_512: &str = "-----BEGIN PRIVATE KEY-----
MIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEA0fMv3ndp4ntqE3ns
ixRod38g3Qhg7mVFM8nunNGh7qQFrEP7XyH8k3UvJiJL8P3GeTqGKK/1+DBQtomf
RASwHQIDAQABAkEAv9jGzzSzLt+zaKSq/9PgOgGTGCcF3BHyEIbfYbE1lYfmqbZ/
T3larXd1RkEnr/2dTn0ThGZCadQK/cljtISfwQIhAP351+hjROEP6kF50Is7mJM5
mu0wVgG8Jykg5pOIgQBVAiEA05+Fy6NC92wtFcfJjLjlI5o0XmQCNMzwyxq+X1kF
mKkCIQD31GgyNUQOVmhhsgulAeeVqn2afDNBCCgygw9c4bP37QIgETODPZUsqU3a
sE2H/W89+NHc9dstLruFywyGctuaj9kCICW0gV5YtfvNIIRuIvtxLoXh3pARgTpi
UZgqIgPX/Yz1
-----END PRIVATE KEY-----
";

/// A certificate with its RSA private key.
pub struct Keyed {
    pub der: Vec<u8>,
    pub pkcs8: Vec<u8>,
    pub key: rsa::PrivateKey,
}

pub struct Pki {
    /// CN=tftp,OU=Voice,O=Example,C=NZ, RSA-2048, 16-byte serial with the top bit clear.
    pub signer: Keyed,
    /// The same subject with an RSA-1024 key.
    pub signer_1024: Keyed,
    /// An RSA-512 signer (SHA-1 only).
    pub signer_512: Keyed,
    /// An RSA-1536 key, which tag 11 cannot describe.
    pub signer_1536: Keyed,
    /// The CAPF TLS certificate; its serial has the top bit set.
    pub capf: Vec<u8>,
    /// Phone LSCs: RSA-2048, RSA-1024, and an EC P-256 one.
    pub phone: Keyed,
    pub phone_1024: Keyed,
    pub phone_ec: Vec<u8>,
}

pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(generate)
}

/// The §8.1 signer (RSA-2048) with `digest`.
pub fn signer(digest: Digest) -> Signer {
    let s = &pki().signer;
    Signer::from_der(s.der.clone(), &s.pkcs8, digest).unwrap()
}

/// A stored certificate record for `der`, as `ca::cert_info` would make it.
pub fn enrolled(der: &[u8]) -> EnrolledCert {
    let cert = crate::phone_config::format::identity::parse_certificate(der).unwrap();
    let key = match cert.public_key().parsed().unwrap() {
        x509_parser::public_key::PublicKey::RSA(rsa) => KeySpec::Rsa {
            bits: rsa.key_size() as u16,
        },
        _ => KeySpec::Ec {
            curve: EcCurve::P256,
        },
    };
    EnrolledCert {
        der: der.to_vec(),
        public_key: cert.public_key().raw.to_vec(),
        md5: hex::encode(md5::Md5::digest(der)),
        sha256: String::new(),
        serial: hex::encode(cert.raw_serial()),
        not_before: 0,
        not_after: 0,
        key,
        issuer: cert.issuer().to_string(),
        subject: cert.subject().to_string(),
    }
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationalUnitName, "Voice");
    dn.push(DnType::OrganizationName, "Example");
    dn.push(DnType::CountryName, "NZ");
    dn
}

fn params(cn: &str, serial: &[u8]) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(cn);
    params.serial_number = Some(SerialNumber::from_slice(serial));
    params
}

fn keyed(key: rsa::PrivateKey, cn: &str, serial: &[u8], ca: &Issuer<'_, KeyPair>) -> Keyed {
    let spki = key.to_public_key().to_public_key_der().unwrap();
    let spki = SubjectPublicKeyInfo::from_der(spki.as_bytes()).unwrap();
    let der = params(cn, serial)
        .signed_by(&spki, ca)
        .unwrap()
        .der()
        .to_vec();
    let pkcs8 = key.to_pkcs8_der().unwrap().as_bytes().to_vec();
    Keyed { der, pkcs8, key }
}

fn rsa_key(bits: usize) -> rsa::PrivateKey {
    rsa::PrivateKey::new(&mut rand::rng(), bits).unwrap()
}

fn generate() -> Pki {
    let ca_key = rsa_key(2048);
    let ca_pkcs8 = ca_key.to_pkcs8_der().unwrap();
    let ca_pair = KeyPair::try_from(ca_pkcs8.as_bytes()).unwrap();
    let mut ca_params = params("Example CA", &[0x01, 0x02, 0x03, 0x04]);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = Issuer::new(ca_params, ca_pair);

    let serial: Vec<u8> = (0x10..0x20).collect();
    let signer = keyed(rsa_key(2048), "tftp", &serial, &issuer);
    let signer_1024 = keyed(rsa_key(1024), "tftp", &serial, &issuer);
    let signer_512 = keyed(
        rsa::PrivateKey::from_pkcs8_pem(KEY_512).unwrap(),
        "tftp",
        &serial,
        &issuer,
    );
    let signer_1536 = keyed(rsa_key(1536), "tftp", &serial, &issuer);
    let capf_serial: Vec<u8> = (0x83..0x93).collect();
    let capf = keyed(rsa_key(2048), "capf.example.net", &capf_serial, &issuer).der;
    let phone = keyed(rsa_key(2048), "SEP001122334455", &[0x21, 0x22], &issuer);
    let phone_1024 = keyed(rsa_key(1024), "SEP001122334455", &[0x31, 0x32], &issuer);
    let ec_pair = KeyPair::generate().unwrap();
    let phone_ec = params("SEP001122334455", &[0x41, 0x42])
        .signed_by(&ec_pair, &issuer)
        .unwrap()
        .der()
        .to_vec();
    Pki {
        signer,
        signer_1024,
        signer_512,
        signer_1536,
        capf,
        phone,
        phone_1024,
        phone_ec,
    }
}

#[test]
fn the_section_8_1_document_is_655_bytes() {
    assert_eq!(SEP_DOC.len(), 655);
}
