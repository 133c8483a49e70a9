//! The encrypted configuration `SEP<MAC>.cnf.xml.enc.sgn` (config-files.md §4).
//!
//! A fresh AES-128 key and IV per build; the plaintext padded with `n` carriage
//! returns (1–16, never PKCS#7) and encrypted with AES-128-CBC; the key wrapped with
//! RSAES-PKCS1-v1_5 to the phone certificate's RSA key; the header signed like any
//! `.sgn`, so the signature covers the ciphertext.
//!
//! The wrap is OpenSSL's, like the signature: the rsa crate's public-key operation
//! cost a build a fifth of its time, OpenSSL's costs it a few percent. Decryption,
//! which only tools and tests do, stays with the rsa crate.

use crate::model::UnixTime;
use crate::phone_config::error::{Error, Result};
use crate::phone_config::format::document::DeviceDocument;
use crate::phone_config::format::sgn::{self, FileKind};
use crate::phone_config::format::tlv::{length16, Writer};
use crate::phone_config::signer::Signer;
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use openssl::rsa::{Padding, Rsa};
use rand::CryptoRng;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

type Encryptor = cbc::Encryptor<aes::Aes128>;
type Decryptor = cbc::Decryptor<aes::Aes128>;

/// The plaintext pad byte: carriage return, harmless trailing XML whitespace.
const PAD: u8 = 0x0D;
const BLOCK: usize = 16;

/// Builds the `.enc.sgn` of `plaintext` (the full device document, already validated)
/// for the phone whose SubjectPublicKeyInfo is `phone_key` (DER).
///
/// `rng` chooses the AES key and IV; the random bytes of the key wrap's padding come
/// from OpenSSL's generator.
///
/// E5: an EC phone key is refused; there is no key transport for it.
pub fn build<R: CryptoRng + ?Sized>(
    signer: &Signer,
    filename: &str,
    plaintext: &[u8],
    phone_key: &[u8],
    now: UnixTime,
    rng: &mut R,
) -> Result<Vec<u8>> {
    let phone_key = rsa_phone_key(phone_key)?;
    let digest = signer.digest();
    let plaintext_digest = digest.hash(plaintext);

    let mut key = [0u8; BLOCK];
    let mut iv = [0u8; BLOCK];
    rng.fill_bytes(&mut key);
    rng.fill_bytes(&mut iv);

    let pad_count = BLOCK - plaintext.len() % BLOCK;
    let mut ciphertext = Vec::with_capacity(plaintext.len() + pad_count);
    ciphertext.extend_from_slice(plaintext);
    ciphertext.resize(plaintext.len() + pad_count, PAD);
    let len = ciphertext.len();
    Encryptor::new_from_slices(&key, &iv)
        .map_err(|e| Error::Encrypt(format!("cipher setup: {e}")))?
        .encrypt_padded::<NoPadding>(&mut ciphertext, len)
        .map_err(|e| Error::Encrypt(e.to_string()))?;
    let mut wrapped = vec![0; phone_key.size() as usize];
    let wrapped_len = phone_key
        .public_encrypt(&key, &mut wrapped, Padding::PKCS1)
        .map_err(|e| Error::PhoneKey(format!("key wrap failed: {e}")))?;
    wrapped.truncate(wrapped_len);

    let mut extra = Writer::new();
    extra.container(16, |w| {
        w.container(17, |w| {
            w.u8(18, 0)?;
            w.element(19, &iv)?;
            w.u16(20, pad_count as u16)
        })?;
        w.container(21, |w| {
            w.u8(22, 0)?;
            w.u16(23, length16("wrapped key bits", 8 * wrapped.len())?)?;
            w.u8(24, 1)?;
            w.element(25, &wrapped)
        })
    })?;
    extra.u8(26, digest.id())?;
    extra.element(27, &plaintext_digest)?;
    sgn::build_signed(
        FileKind::EncSgn,
        signer,
        filename,
        extra.as_bytes(),
        &ciphertext,
        now,
    )
}

/// Phone key sizes a key is wrapped to: what phones have (1024 to 4096 bits) with room
/// above. A policy bound (tag 23, the wrapped key's length in bits, is a u16), so that
/// a stored key of absurd size cannot make every build slow.
const PHONE_KEY_BITS: std::ops::RangeInclusive<u32> = 1024..=8192;

/// Reads the phone's RSA key from its SubjectPublicKeyInfo.
fn rsa_phone_key(spki: &[u8]) -> Result<Rsa<openssl::pkey::Public>> {
    let parsed = match SubjectPublicKeyInfo::from_der(spki) {
        Ok(([], parsed)) => parsed,
        _ => return Err(Error::PhoneKey("not a DER SubjectPublicKeyInfo".into())),
    };
    match parsed.parsed() {
        Ok(PublicKey::RSA(_)) => {}
        Ok(PublicKey::EC(_)) => return Err(Error::EcPhoneKey),
        _ => return Err(Error::PhoneKey("neither RSA nor EC".into())),
    }
    let key = Rsa::public_key_from_der(spki)
        .map_err(|e| Error::PhoneKey(format!("unusable RSA key: {e}")))?;
    let bits = key.n().num_bits().unsigned_abs();
    if !PHONE_KEY_BITS.contains(&bits) {
        return Err(Error::PhoneKey(format!(
            "a {bits}-bit RSA key is outside {}..={} bits",
            PHONE_KEY_BITS.start(),
            PHONE_KEY_BITS.end()
        )));
    }
    Ok(key)
}

/// Why a file does not decrypt when its wrapped key does not unwrap to an AES key.
const WRONG_KEY: &str =
    "this key does not match the file (the wrapped AES key does not unwrap with it)";

/// Decrypts an `.enc.sgn` with the phone's private key and checks it as V4 asks: the
/// structure, a body of whole blocks, a 16-byte key, `n` pad bytes that are all `0x0D`
/// (E10: n = 0 and n > 16 are refused by the parser), the plaintext digest, and a
/// `<device>` root. It does not check the signature; see [`sgn::verify`].
pub fn decrypt(file: &[u8], phone_key: &rsa::PrivateKey) -> Result<Vec<u8>> {
    let parsed = sgn::parse(file, FileKind::EncSgn)?;
    let info = parsed
        .encryption
        .ok_or_else(|| Error::Decrypt("no encryption elements".into()))?;
    let body = parsed.body;
    if body.is_empty() || !body.len().is_multiple_of(BLOCK) {
        return Err(Error::Decrypt(format!(
            "ciphertext of {} bytes is not a non-zero multiple of 16",
            body.len()
        )));
    }
    let key = phone_key
        .pkcs1v15_decrypt(info.wrapped_key)
        .map_err(|_| Error::Decrypt(WRONG_KEY.into()))?;
    // RSA decryption with the wrong key does not always fail: it can yield bytes of
    // any length. Either way the likely cause is the operator's key, so say that.
    if key.len() != BLOCK {
        return Err(Error::Decrypt(WRONG_KEY.into()));
    }
    let mut plaintext = body.to_vec();
    Decryptor::new_from_slices(&key, info.iv)
        .map_err(|e| Error::Decrypt(format!("cipher setup: {e}")))?
        .decrypt_padded::<NoPadding>(&mut plaintext)
        .map_err(|e| Error::Decrypt(format!("decryption: {e}")))?;
    let keep = plaintext
        .len()
        .checked_sub(usize::from(info.pad_count))
        .ok_or_else(|| Error::Decrypt("pad count exceeds the plaintext".into()))?;
    if plaintext[keep..].iter().any(|&b| b != PAD) {
        return Err(Error::Decrypt("the pad bytes are not all 0x0D".into()));
    }
    plaintext.truncate(keep);
    if info.digest.hash(&plaintext) != info.plaintext_digest {
        return Err(Error::Decrypt(
            "the plaintext digest does not match tag 27".into(),
        ));
    }
    DeviceDocument::parse(&plaintext)?;
    Ok(plaintext)
}

#[cfg(test)]
mod tests;
