//! LSC issuance (capf-protocol.md §9): a certificate for a public key whose private
//! half only the phone holds.

use super::keys::key_spec;
use super::rekey;
use super::{cert_info, random_serial, Ca, CaError, CLOCK_SKEW_SECS};
use crate::model::{EcCurve, EnrolledCert, KeySpec, UnixTime};
use rcgen::string::Ia5String;
use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use time::OffsetDateTime;
use x509_parser::parse_x509_certificate;

/// id-kp-ipsecEndSystem: CUCM's LSCs carry it, so phones may expect it.
const IPSEC_END_SYSTEM: [u64; 9] = [1, 3, 6, 1, 5, 5, 7, 3, 5];
const BASIC_CONSTRAINTS: [u64; 4] = [2, 5, 29, 19];
/// BasicConstraints with cA left at its DEFAULT FALSE: an empty SEQUENCE.
const NOT_A_CA: [u8; 2] = [0x30, 0x00];
/// Upper bound of a CN (RFC 5280 ub-common-name) and of a sane device name (R8).
const MAX_DEVICE_NAME: usize = 64;
const SECS_PER_DAY: i64 = 86_400;

impl Ca {
    /// Issues an LSC for `device_name` over exactly the SubjectPublicKeyInfo the phone
    /// sent (check it first with `check_public_key`). Validity runs from `now` (less
    /// a small clock-skew margin) for the configured number of days.
    pub fn issue_lsc(
        &self,
        device_name: &str,
        spki_der: &[u8],
        now: UnixTime,
    ) -> Result<EnrolledCert, CaError> {
        check_device_name(device_name)?;
        let key = key_spec(spki_der).map_err(CaError::UnsupportedKey)?;
        let params = self.lsc_params(device_name, now)?;
        let issued = if key
            == (KeySpec::Ec {
                curve: EcCurve::P521,
            }) {
            // rcgen on ring cannot encode a P-521 key: build around a placeholder key
            // and swap the phone's in (see rekey.rs).
            let placeholder = SubjectPublicKeyInfo::from_der(&rekey::PLACEHOLDER_SPKI)?;
            let template = params.signed_by(&placeholder, &self.issuer)?;
            rekey::with_subject_key(template.der(), spki_der, self.issuer.key())?
        } else {
            let public_key = SubjectPublicKeyInfo::from_der(spki_der)?;
            params.signed_by(&public_key, &self.issuer)?.der().to_vec()
        };
        let der = issued.as_slice();

        // rcgen re-encodes both the issuer name and the key; make sure neither changed.
        let (_, parsed) = parse_x509_certificate(der)
            .map_err(|_| CaError::SelfCheck("the new certificate does not parse"))?;
        if parsed.issuer().as_raw() != self.subject_der.as_slice() {
            return Err(CaError::SelfCheck("issuer differs from the CAPF subject"));
        }
        if parsed.public_key().raw != spki_der {
            return Err(CaError::SelfCheck("public key differs from the phone's"));
        }
        cert_info(der)
    }

    fn lsc_params(&self, device_name: &str, now: UnixTime) -> Result<CertificateParams, CaError> {
        let lifetime = i64::from(self.lsc_validity_days) * SECS_PER_DAY;
        let mut params = CertificateParams::default();
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        params.not_before = timestamp(now.checked_sub(CLOCK_SKEW_SECS))?;
        params.not_after = timestamp(now.checked_add(lifetime))?;

        let mut subject = DistinguishedName::new();
        subject.push(DnType::CommonName, device_name);
        for (ty, value) in &self.lsc_subject_tail {
            subject.push(ty.clone(), value.clone());
        }
        params.distinguished_name = subject;

        params.subject_alt_names = vec![SanType::URI(
            Ia5String::try_from(device_name)
                .map_err(|_| CaError::DeviceName(device_name.into()))?,
        )];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::Other(IPSEC_END_SYSTEM.to_vec()),
        ];
        // rcgen adds a SubjectKeyIdentifier whenever it writes BasicConstraints itself;
        // §9 wants none, so basic constraints go in as a custom (critical) extension.
        params.is_ca = IsCa::NoCa;
        let mut basic_constraints =
            CustomExtension::from_oid_content(&BASIC_CONSTRAINTS, NOT_A_CA.to_vec());
        basic_constraints.set_criticality(true);
        params.custom_extensions = vec![basic_constraints];
        if let Some(url) = &self.crl_url {
            params.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
                uris: vec![url.clone()],
            }];
        }
        Ok(params)
    }
}

/// The device name becomes the CN and the SAN URI: the session validates it (R8), and
/// this repeats the check because a certificate is forever.
fn check_device_name(name: &str) -> Result<(), CaError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_DEVICE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(CaError::DeviceName(name.into()))
    }
}

fn timestamp(secs: Option<UnixTime>) -> Result<OffsetDateTime, CaError> {
    secs.and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or_else(|| CaError::Certificate("validity outside the representable range".into()))
}
