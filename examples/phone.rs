//! A simulated Cisco phone: enrolls with a capf node the way a phone does.
//!
//! ```text
//! cargo run --example phone -- --capf-cert capf-data/certs/capf.pem SEP001122334455
//! cargo run --example phone -- --password 123456 --out ./phone SEP001122334455
//! cargo run --example phone -- --config http://127.0.0.1:6970 SEP001122334455
//! ```
//!
//! With `--config` it runs the whole encrypted-configuration journey: fetch the ITL
//! and the signed partial (empty certHash), enroll, fetch the partial again (certHash
//! = MD5 of the new LSC), fetch the `.enc.sgn` and decrypt it with the new key.
//!
//! It connects with TLS trusting only the CAPF certificate, authenticates (null string
//! or `--password`), answers key generation (RSA or EC, generated, or `--key` loaded),
//! stores the issued LSC and its key as PEM in `--out`, answers fetch and delete with
//! `--cert`, and reports the END_SESSION reason.

use capf::phone::{connector, http_get, Phone, PhoneError, PhoneKey};
use capf::phone_config::format::enc;
use capf::phone_config::format::itl::{self, Role};
use capf::phone_config::format::sgn::{self, FileKind};
use capf::protocol::{CertificateType, WrappedCertificate};
use clap::Parser;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
struct Args {
    /// Device name, e.g. SEP001122334455.
    name: String,
    /// capf address.
    #[arg(long, default_value = "127.0.0.1:3804")]
    addr: SocketAddr,
    /// The CAPF certificate to trust (PEM).
    #[arg(long, default_value = "capf-data/certs/capf.pem")]
    capf_cert: PathBuf,
    /// Authentication string typed on the keypad (omit for null string).
    #[arg(long)]
    password: Option<String>,
    /// Protocol version to announce (2 behaves like the softphone client).
    #[arg(long, default_value_t = 3)]
    version: u8,
    /// Use this private key (PKCS#8 PEM, RSA) when the request matches.
    #[arg(long)]
    key: Option<PathBuf>,
    /// The certificate the phone holds (PEM), returned on troubleshoot.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Where to write the issued LSC and key.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Run the configuration journey against this HTTP base URL (e.g.
    /// http://127.0.0.1:6970); the decrypted configuration is written to --out.
    #[arg(long)]
    config: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let trust: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(&args.capf_cert)?.collect::<Result<_, _>>()?;
    let mut phone = Phone::new(&args.name);
    phone.password = Some(args.password.unwrap_or_default());
    phone.version = Some(args.version);
    if let Some(path) = &args.key {
        use rsa::pkcs8::DecodePrivateKey;
        let pem = std::fs::read_to_string(path)?;
        phone.key = Some(PhoneKey::Rsa(rsa::PrivateKey::from_pkcs8_pem(&pem)?));
    }
    if let Some(path) = &args.cert {
        let der = CertificateDer::from_pem_file(path)?;
        phone.certificate = Some(WrappedCertificate {
            cert_type: CertificateType::Lsc,
            der: der.to_vec(),
        });
    }

    let journey = match &args.config {
        Some(base) => Some(Journey::start(base, &args.name).await?),
        None => None,
    };
    // Like a phone, try again while nothing listens yet (a node that is starting).
    let connector = connector(&trust)?;
    let mut attempts = 0;
    let outcome = loop {
        match phone.run(args.addr, &connector).await {
            Err(PhoneError::Io(e))
                if e.kind() == std::io::ErrorKind::ConnectionRefused && attempts < 50 =>
            {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            other => break other?,
        }
    };
    println!("TLS: {}", outcome.tls_version);
    println!("server said: {:?}", outcome.commands);
    if let Some((der, key)) = &outcome.issued {
        std::fs::create_dir_all(&args.out)?;
        let cert_path = args.out.join(format!("{}.pem", args.name));
        let key_path = args.out.join(format!("{}.key", args.name));
        std::fs::write(&cert_path, capf::ca::certificate_pem(der))?;
        write_private(&key_path, &key.to_pem()?)?;
        println!(
            "LSC stored in {} (key {})",
            cert_path.display(),
            key_path.display()
        );
    }
    if outcome.delete_requested {
        println!("server asked the phone to delete its LSC");
    }
    match outcome.end_reason {
        Some(reason) => println!("END_SESSION reason {}", reason.to_u8()),
        None => println!("server closed the connection without END_SESSION"),
    }
    if let (Some(journey), Some((der, key))) = (journey, &outcome.issued) {
        journey.finish(der, key, &args.out).await?;
    }
    Ok(())
}

/// The phone's side of config-files.md §5.4.
struct Journey {
    base: String,
    name: String,
    /// The TFTP signer, as the ITL names it (role 3).
    signer: Vec<u8>,
}

impl Journey {
    /// Steps 1 and 2: the ITL, then the partial that sends the phone to CAPF.
    async fn start(base: &str, name: &str) -> anyhow::Result<Journey> {
        let base = base.trim_end_matches('/').to_owned();
        let list = fetch(&base, "ITLFile.tlv").await?;
        let parsed = itl::parse(&list)?;
        itl::verify(&parsed)?;
        let signer = parsed
            .records
            .iter()
            .find(|r| r.role == Role::Tftp.value())
            .map(|r| r.certificate.to_vec())
            .ok_or_else(|| anyhow::anyhow!("the ITL has no TFTP record"))?;
        println!("ITL: {} records, signature OK", parsed.records.len());
        let journey = Journey {
            base,
            name: name.to_owned(),
            signer,
        };
        let hash = journey.partial_hash().await?;
        println!("partial config: certHash '{hash}' -> enrolling with CAPF");
        Ok(journey)
    }

    /// Steps 3 and 4: the new hash, then the encrypted configuration.
    async fn finish(self, der: &[u8], key: &PhoneKey, out: &std::path::Path) -> anyhow::Result<()> {
        use md5::Digest;
        let expected = hex::encode(md5::Md5::digest(der));
        let hash = self.partial_hash().await?;
        println!("partial config: certHash '{hash}' (LSC MD5 {expected})");
        anyhow::ensure!(hash == expected, "certHash does not match the new LSC");
        let name = format!("{}.cnf.xml.enc.sgn", self.name);
        let file = fetch(&self.base, &name).await?;
        sgn::verify(&sgn::parse(&file, FileKind::EncSgn)?, &self.signer)?;
        let PhoneKey::Rsa(key) = key else {
            anyhow::bail!("the LSC key is not RSA; encrypted config needs RSA");
        };
        let config = enc::decrypt(&file, key)?;
        let path = out.join(format!("{}.cnf.xml", self.name));
        std::fs::write(&path, &config)?;
        println!(
            "{name}: signature OK, decrypted {} bytes to {}",
            config.len(),
            path.display()
        );
        Ok(())
    }

    /// Fetches and verifies the `.sgn`, and returns its certHash.
    async fn partial_hash(&self) -> anyhow::Result<String> {
        let file = fetch(&self.base, &format!("{}.cnf.xml.sgn", self.name)).await?;
        let parsed = sgn::parse(&file, FileKind::Sgn)?;
        sgn::verify(&parsed, &self.signer)?;
        let body = String::from_utf8_lossy(parsed.body);
        anyhow::ensure!(
            body.contains("<encrConfig>true</encrConfig>"),
            "the .sgn is not a partial: encrypted config is off for this phone"
        );
        let hash = body
            .split_once("<certHash>")
            .and_then(|(_, rest)| rest.split_once("</certHash>"))
            .map_or("", |(hash, _)| hash);
        Ok(hash.to_owned())
    }
}

async fn fetch(base: &str, name: &str) -> anyhow::Result<Vec<u8>> {
    let response = http_get(&format!("{base}/{name}")).await?;
    anyhow::ensure!(
        response.status == 200,
        "GET {name}: HTTP {}",
        response.status
    );
    println!("GET {name}: {} bytes", response.body.len());
    Ok(response.body)
}

/// Private keys are written owner-only.
fn write_private(path: &std::path::Path, pem: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(pem.as_bytes())
}
