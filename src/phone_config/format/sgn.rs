//! The signed-file header shared by `.sgn`, `.enc.sgn` and `.tlv` (config-files.md §3).
//!
//! Building follows §3.3: every element but the signature is written, the pad count is
//! chosen so that the header length (signature included) is a multiple of 4, the
//! header length is patched in, the body appended, and the signature over all of that
//! spliced in after tag 11. The signature therefore covers the final header length,
//! the filename, the timestamp, any encryption elements, the pad bytes and the body.

use crate::model::Digest;
use crate::model::UnixTime;
use crate::phone_config::error::{Error, Result};
use crate::phone_config::format::identity::CertIdentity;
use crate::phone_config::format::tlv::{
    length16, read_item, value_string, value_u16, value_u8, Item, Writer,
};
use crate::phone_config::signer::{verify_signature, Signer};
use std::collections::BTreeMap;

/// Which of the three signed formats a file is. It fixes the version (tag 1) and the
/// tags a reader knows (§3.2): tag 28 only in `.tlv`, tags 16–27 only in `.enc.sgn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// `X.sgn`, version 1.0.
    Sgn,
    /// `SEP<MAC>.cnf.xml.enc.sgn`, version 2.0.
    EncSgn,
    /// `ITLFile.tlv` / `CTLFile.tlv`, version 1.2.
    Tlv,
}

impl FileKind {
    pub fn version(self) -> [u8; 2] {
        match self {
            FileKind::Sgn => [1, 0],
            FileKind::EncSgn => [2, 0],
            FileKind::Tlv => [1, 2],
        }
    }

    /// The format a served name implies, as the reference tools decide it.
    pub fn from_name(name: &str) -> Option<FileKind> {
        if name.ends_with(".enc.sgn") {
            Some(FileKind::EncSgn)
        } else if name.ends_with(".sgn") {
            Some(FileKind::Sgn)
        } else if name.ends_with(".tlv") {
            Some(FileKind::Tlv)
        } else {
            None
        }
    }

    fn knows(self, tag: u8) -> bool {
        match self {
            FileKind::Sgn => (3..=15).contains(&tag),
            FileKind::EncSgn => (3..=27).contains(&tag),
            FileKind::Tlv => (3..=15).contains(&tag) || tag == 28,
        }
    }
}

/// Tag 28's value in every `.tlv` capf builds: signer version 1.0. (1.1 would send
/// phones to HTTPS provisioning, which capf does not offer.)
const SIGNER_VERSION: [u8; 2] = [1, 0];

/// The offset of the header-length value: after tag 1 (5 bytes) and tag 2's own 3.
const HEADER_LENGTH_VALUE: usize = 8;

/// E13: the format's timestamp is a `u32` of Unix seconds.
pub fn timestamp(now: UnixTime) -> Result<u32> {
    u32::try_from(now).map_err(|_| Error::TimestampOutOfRange(now))
}

/// Builds a signed `.sgn` (version 1.0) holding `body`, under the name it is served as.
pub fn build(signer: &Signer, filename: &str, body: &[u8], now: UnixTime) -> Result<Vec<u8>> {
    build_signed(FileKind::Sgn, signer, filename, &[], body, now)
}

/// Builds any of the three formats. `extra` holds already-encoded header elements that
/// go after the timestamp (the `.enc.sgn` encryption elements).
pub(crate) fn build_signed(
    kind: FileKind,
    signer: &Signer,
    filename: &str,
    extra: &[u8],
    body: &[u8],
    now: UnixTime,
) -> Result<Vec<u8>> {
    if !filename.is_ascii() {
        return Err(Error::NotServed(format!(
            "file name {filename:?} is not ASCII"
        )));
    }
    let time = timestamp(now)?;
    let identity = signer.identity();
    let mut w = Writer::new();
    w.element(1, &kind.version())?;
    w.u16(2, 0)?;
    if kind == FileKind::Tlv {
        w.element(28, &SIGNER_VERSION)?;
    }
    w.container(3, |w| {
        w.string(4, &identity.subject)?;
        w.element(5, &identity.serial)?;
        w.string(6, &identity.issuer)
    })?;
    w.container(7, |w| {
        w.u8(8, signer.digest().id())?;
        w.container(9, |w| {
            w.u8(10, 0)?;
            w.u8(11, signer.modulus_index())
        })
    })?;
    let signature_at = w.position();
    w.string(14, filename)?;
    w.element(15, &time.to_be_bytes())?;
    w.extend(extra);
    let signature_element = 3 + signer.signature_len();
    let pad = (4 - (w.position() + signature_element) % 4) % 4;
    w.pad(pad);
    let header_length = length16("header", w.position() + signature_element)?;
    w.patch_u16(HEADER_LENGTH_VALUE, header_length);
    w.extend(body);

    let signature = signer.sign(w.as_bytes())?;
    let mut element = Writer::new();
    element.element(12, &signature)?;
    let mut file = w.into_bytes();
    file.splice(signature_at..signature_at, element.into_bytes());
    Ok(file)
}

/// The `.enc.sgn` elements 16–27 of a parsed file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encryption<'a> {
    pub iv: &'a [u8],
    /// Tag 20: how many `0x0D` bytes end the plaintext (1–16).
    pub pad_count: u16,
    /// Tag 23: the wrapped key's size in bits.
    pub key_size_bits: u16,
    pub wrapped_key: &'a [u8],
    /// Tag 26.
    pub digest: Digest,
    /// Tag 27: digest of the unpadded plaintext.
    pub plaintext_digest: &'a [u8],
}

/// A parsed signed file. Everything borrows from the file bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedFile<'a> {
    pub kind: FileKind,
    pub version: [u8; 2],
    pub header_length: usize,
    /// Tag 28 (`.tlv` only, optional).
    pub signer_version: Option<[u8; 2]>,
    /// Tag 4, without its NUL.
    pub signer_name: String,
    /// Tag 5.
    pub serial: &'a [u8],
    /// Tag 6, without its NUL.
    pub issuer_name: String,
    /// Tag 8.
    pub digest: Digest,
    /// Tag 11.
    pub modulus_index: u8,
    /// Tag 12's value.
    pub signature: &'a [u8],
    /// Where the tag-12 element starts.
    pub signature_offset: usize,
    /// Tag 14, without its NUL.
    pub filename: String,
    /// Tag 15.
    pub timestamp: u32,
    /// How many pad bytes the header holds.
    pub pad_bytes: usize,
    pub encryption: Option<Encryption<'a>>,
    /// Everything after the header.
    pub body: &'a [u8],
    file: &'a [u8],
}

impl SignedFile<'_> {
    /// The signature input: the file without the tag-12 element (§3.4).
    pub fn signed_message(&self) -> Vec<u8> {
        let end = self.signature_offset + 3 + self.signature.len();
        let mut message = Vec::with_capacity(self.file.len() - (end - self.signature_offset));
        message.extend_from_slice(&self.file[..self.signature_offset]);
        message.extend_from_slice(&self.file[end..]);
        message
    }
}

/// Verifies the signature with the RSA key of `signer_certificate` (DER).
pub fn verify(file: &SignedFile<'_>, signer_certificate: &[u8]) -> Result<()> {
    let identity = CertIdentity::from_der(signer_certificate)?;
    verify_signature(
        &identity.key,
        file.digest,
        &file.signed_message(),
        file.signature,
    )
}

/// The container a tag lives in, or `None` for the top level.
fn parent(tag: u8) -> Option<u8> {
    match tag {
        4..=6 => Some(3),
        8 | 9 => Some(7),
        10 | 11 => Some(9),
        17 | 21 => Some(16),
        18..=20 => Some(17),
        22..=25 => Some(21),
        _ => None,
    }
}

fn is_container(tag: u8) -> bool {
    matches!(tag, 3 | 7 | 9 | 16 | 17 | 21)
}

/// Parses and structurally checks a signed file (V1, and for `.enc.sgn` the V4
/// structure). Elements may come in any order within their container and pad bytes
/// may sit anywhere at the top level; every tag must appear exactly once and in its
/// own container, and containers must be exactly tiled by their children.
pub fn parse(file: &[u8], kind: FileKind) -> Result<SignedFile<'_>> {
    let version = match read_item(file, 0, file.len(), false)? {
        Item::Element { tag: 1, value, .. } if value.len() == 2 => [value[0], value[1]],
        _ => {
            return Err(Error::malformed(
                0,
                "tag 1 (version, 2 bytes) must open the file",
            ))
        }
    };
    if version != kind.version() {
        return Err(Error::malformed(
            3,
            format!(
                "version {}.{} is not {}.{} ({kind:?})",
                version[0],
                version[1],
                kind.version()[0],
                kind.version()[1]
            ),
        ));
    }
    let header_length = match read_item(file, 5, file.len(), false)? {
        Item::Element { tag: 2, value, .. } => usize::from(value_u16(2, 5, value)?),
        _ => {
            return Err(Error::malformed(
                5,
                "tag 2 (header length) must follow tag 1",
            ))
        }
    };
    if header_length % 4 != 0 || header_length > file.len() || header_length < 10 {
        return Err(Error::malformed(
            5,
            format!("header length {header_length} is not a multiple of 4 within the file"),
        ));
    }

    let mut elements: BTreeMap<u8, (usize, &[u8])> = BTreeMap::new();
    let mut open: Vec<(u8, usize)> = Vec::new();
    let mut pad_bytes = 0;
    let mut pos = 10;
    loop {
        while open.last().is_some_and(|&(_, end)| end == pos) {
            open.pop();
        }
        if pos == header_length {
            break;
        }
        let region_end = open.last().map_or(header_length, |&(_, end)| end);
        match read_item(file, pos, region_end, open.is_empty())? {
            Item::Pad { .. } => {
                pad_bytes += 1;
                pos += 1;
            }
            Item::Element { tag, offset, value } => {
                if !kind.knows(tag) {
                    return Err(Error::malformed(
                        offset,
                        format!("tag {tag} is not known in {kind:?}"),
                    ));
                }
                if parent(tag) != open.last().map(|&(t, _)| t) {
                    return Err(Error::malformed(
                        offset,
                        format!("tag {tag} is in the wrong container"),
                    ));
                }
                if elements.insert(tag, (offset, value)).is_some() {
                    return Err(Error::malformed(offset, format!("tag {tag} appears twice")));
                }
                if is_container(tag) {
                    open.push((tag, offset + 3 + value.len()));
                    pos = offset + 3;
                } else {
                    pos = offset + 3 + value.len();
                }
            }
        }
    }

    let get = |tag: u8| {
        elements
            .get(&tag)
            .copied()
            .ok_or_else(|| Error::malformed(header_length, format!("tag {tag} is missing")))
    };
    for (tag, expected) in [(7, 15), (9, 8)] {
        let (offset, value) = get(tag)?;
        if value.len() != expected {
            return Err(Error::malformed(
                offset,
                format!("tag {tag} must be {expected} bytes long"),
            ));
        }
    }
    get(3)?;
    let (offset, value) = get(8)?;
    let digest = Digest::from_id(value_u8(8, offset, value)?)
        .ok_or_else(|| Error::malformed(offset, "tag 8 must be 1 (SHA-1) or 3 (SHA-512)"))?;
    let (offset, value) = get(10)?;
    if value_u8(10, offset, value)? != 0 {
        return Err(Error::malformed(offset, "tag 10 must be 0 (RSA)"));
    }
    let (offset, value) = get(11)?;
    let modulus_index = value_u8(11, offset, value)?;
    let (signature_offset, signature) = get(12)?;
    if modulus_index > 3 || signature.len() != 64 << modulus_index {
        return Err(Error::malformed(
            offset,
            "tag 12's length does not match tag 11",
        ));
    }
    let (offset, value) = get(15)?;
    let timestamp = match value {
        [a, b, c, d] => u32::from_be_bytes([*a, *b, *c, *d]),
        _ => return Err(Error::malformed(offset, "tag 15 must hold 4 bytes")),
    };
    let signer_version = match elements.get(&28) {
        Some((_, [major, minor])) => Some([*major, *minor]),
        Some((offset, _)) => return Err(Error::malformed(*offset, "tag 28 must hold 2 bytes")),
        None => None,
    };
    let string = |tag: u8| -> Result<String> {
        let (offset, value) = get(tag)?;
        value_string(tag, offset, value)
    };
    let encryption = match kind {
        FileKind::EncSgn => Some(parse_encryption(&get)?),
        _ => None,
    };
    Ok(SignedFile {
        kind,
        version,
        header_length,
        signer_version,
        signer_name: string(4)?,
        serial: get(5)?.1,
        issuer_name: string(6)?,
        digest,
        modulus_index,
        signature,
        signature_offset,
        filename: string(14)?,
        timestamp,
        pad_bytes,
        encryption,
        body: &file[header_length..],
        file,
    })
}

/// Reads and checks tags 16–27 (V4 structure, E10).
fn parse_encryption<'a>(get: &impl Fn(u8) -> Result<(usize, &'a [u8])>) -> Result<Encryption<'a>> {
    for tag in [16, 17, 21] {
        get(tag)?;
    }
    for tag in [18, 22] {
        let (offset, value) = get(tag)?;
        value_u8(tag, offset, value)?;
    }
    let (offset, iv) = get(19)?;
    if iv.len() != 16 {
        return Err(Error::malformed(offset, "tag 19 (IV) must hold 16 bytes"));
    }
    let (offset, value) = get(20)?;
    let pad_count = value_u16(20, offset, value)?;
    if !(1..=16).contains(&pad_count) {
        return Err(Error::malformed(
            offset,
            format!("pad count {pad_count} is not 1 to 16"),
        ));
    }
    let (_, wrapped_key) = get(25)?;
    let (offset, value) = get(23)?;
    let key_size_bits = value_u16(23, offset, value)?;
    if usize::from(key_size_bits) != 8 * wrapped_key.len() {
        return Err(Error::malformed(
            offset,
            "tag 23 is not the bit size of tag 25",
        ));
    }
    let (offset, value) = get(24)?;
    if value_u8(24, offset, value)? != 1 {
        return Err(Error::malformed(offset, "tag 24 must be 1 (AES-128)"));
    }
    let (offset, value) = get(26)?;
    let digest = Digest::from_id(value_u8(26, offset, value)?)
        .ok_or_else(|| Error::malformed(offset, "tag 26 must be 1 (SHA-1) or 3 (SHA-512)"))?;
    let (offset, plaintext_digest) = get(27)?;
    if plaintext_digest.len() != digest.output_len() {
        return Err(Error::malformed(
            offset,
            "tag 27's length does not match tag 26",
        ));
    }
    Ok(Encryption {
        iv,
        pad_count,
        key_size_bits,
        wrapped_key,
        digest,
        plaintext_digest,
    })
}

#[cfg(test)]
mod tests;
