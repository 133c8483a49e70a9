//! capf's certificate authority: its identities and the LSCs it issues.
//! (Temporary stub on main; the CA work replaces this file.)
use crate::store::EnrolledCert;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{0}")]
    Invalid(String),
}

pub fn cert_info(der: &[u8]) -> Result<EnrolledCert, CaError> {
    todo!("{der:?}")
}

// Temporary signatures on main; the CA work replaces this file.
pub struct Ca;
#[allow(unused_variables)]
impl Ca {
    pub fn load(certs_dir: &std::path::Path, lsc_validity_days: u32) -> Result<Ca, CaError> {
        todo!()
    }
    pub fn tls_identity(
        &self,
    ) -> (
        Vec<rustls_pki_types::CertificateDer<'static>>,
        rustls_pki_types::PrivateKeyDer<'static>,
    ) {
        todo!()
    }
    pub fn issue_lsc(
        &self,
        device_name: &str,
        spki_der: &[u8],
        now: crate::store::UnixTime,
    ) -> Result<EnrolledCert, CaError> {
        todo!()
    }
}
#[allow(unused_variables)]
pub fn check_public_key(spki_der: &[u8], expected: crate::store::KeySpec) -> Result<(), CaError> {
    todo!()
}
pub struct InitOptions {
    pub node_name: String,
    pub organization: Option<String>,
    pub org_unit: Option<String>,
    pub force: bool,
}
#[allow(unused_variables)]
pub fn init_identities(certs_dir: &std::path::Path, opts: &InitOptions) -> Result<(), CaError> {
    todo!()
}
impl Ca {
    pub fn certificate_der(&self) -> &[u8] {
        todo!()
    }
    pub fn certificate_pem(&self) -> String {
        todo!()
    }
}
