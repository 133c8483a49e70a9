//! The TLV element layer (capf-protocol.md §4): `tag` u8 · `length` u16 BE · `value`.
//!
//! Decoding turns a payload into [`Elements`], one typed slot per known tag, whatever
//! the message; each message then takes the slots it needs and ignores the rest. The
//! checks that protect a decision happen here for every payload: bounds (R4), fixed
//! sizes (R4), text termination (§4.1), duplicates (R6) and the composite values
//! (§4.2, §4.5, §4.6). Unknown tags are skipped (R5) and reported in
//! [`Elements::skipped_tags`].

use super::codec::Reader;
use super::wire::{
    AuthType, CertificateType, Command, CurveId, Header, KeyType, ProtocolError, Reason,
    Sha2SignedData, SudiData, WrappedCertificate, HEADER_LEN,
};

/// Element tags (§4).
pub mod tag {
    pub const REASON: u8 = 1;
    pub const REASON_INFO: u8 = 2;
    pub const CERTIFICATE_TYPE: u8 = 3;
    pub const CERTIFICATE: u8 = 4;
    pub const SIGNED_DATA: u8 = 6;
    pub const VERSION: u8 = 7;
    pub const AUTH_TYPE: u8 = 8;
    pub const PUBLIC_KEY: u8 = 9;
    pub const KEY_SIZE: u8 = 10;
    pub const PASSWORD: u8 = 11;
    pub const DEVICE_NAME: u8 = 13;
    pub const SUDI_DATA: u8 = 16;
    pub const KEY_TYPE: u8 = 17;
    pub const CURVE: u8 = 18;
    pub const SHA2_SIGNED_DATA: u8 = 20;
}

/// Every known element of one payload, decoded and checked.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Elements<'a> {
    pub reason: Option<Reason>,
    pub certificate_type: Option<CertificateType>,
    pub certificate: Option<WrappedCertificate>,
    pub signed_data: Option<&'a [u8]>,
    pub version: Option<u8>,
    pub auth_type: Option<AuthType>,
    pub public_key: Option<&'a [u8]>,
    pub key_size: Option<u16>,
    /// Without its NUL terminator.
    pub password: Option<&'a [u8]>,
    /// Without its NUL terminator.
    pub device_name: Option<&'a str>,
    pub sudi: Option<SudiData>,
    pub key_type: Option<KeyType>,
    pub curve: Option<CurveId>,
    pub sha2_signed_data: Option<Sha2SignedData>,
    /// Distinct unknown tags that were skipped, in order of first appearance.
    pub skipped_tags: Vec<u8>,
}

impl<'a> Elements<'a> {
    pub fn decode(payload: &'a [u8]) -> Result<Elements<'a>, ProtocolError> {
        let mut elements = Elements::default();
        let mut reader = Reader::new(payload);
        while !reader.is_empty() {
            let offset = payload.len() - reader.remaining();
            let truncated = ProtocolError::TruncatedElement(offset);
            if reader.remaining() < 3 {
                return Err(truncated);
            }
            let tag = reader.u8().ok_or(truncated.clone())?;
            let len = usize::from(reader.u16().ok_or(truncated)?);
            let value = reader
                .take(len)
                .ok_or(ProtocolError::ElementOverrun { tag, len })?;
            elements.add(tag, value)?;
        }
        Ok(elements)
    }

    fn add(&mut self, tag: u8, value: &'a [u8]) -> Result<(), ProtocolError> {
        match tag {
            // R6 lets a repeated REASON keep the first: it never decides anything.
            tag::REASON => {
                let [code] = fixed(tag, value)?;
                self.reason.get_or_insert(Reason::from_u8(code));
            }
            // Never seen in traffic and not used: checked for shape, then dropped.
            tag::REASON_INFO => {
                text(tag, value)?;
            }
            tag::CERTIFICATE_TYPE => once(&mut self.certificate_type, tag, || {
                fixed(tag, value).map(|[v]| CertificateType::from_u8(v))
            })?,
            tag::CERTIFICATE => once(&mut self.certificate, tag, || {
                WrappedCertificate::decode_value(value)
            })?,
            tag::SIGNED_DATA => once(&mut self.signed_data, tag, || Ok(value))?,
            tag::VERSION => once(&mut self.version, tag, || fixed(tag, value).map(|[v]| v))?,
            tag::AUTH_TYPE => once(&mut self.auth_type, tag, || {
                fixed(tag, value).map(|[v]| AuthType::from_u8(v))
            })?,
            tag::PUBLIC_KEY => once(&mut self.public_key, tag, || Ok(value))?,
            tag::KEY_SIZE => once(&mut self.key_size, tag, || {
                fixed(tag, value).map(u16::from_be_bytes)
            })?,
            tag::PASSWORD => once(&mut self.password, tag, || text(tag, value))?,
            tag::DEVICE_NAME => once(&mut self.device_name, tag, || {
                let name = text(tag, value)?;
                std::str::from_utf8(name).map_err(|_| ProtocolError::Malformed(tag, "not UTF-8"))
            })?,
            tag::SUDI_DATA => once(&mut self.sudi, tag, || SudiData::decode_value(value))?,
            tag::KEY_TYPE => once(&mut self.key_type, tag, || {
                fixed(tag, value).map(|[v]| KeyType::from_u8(v))
            })?,
            tag::CURVE => once(&mut self.curve, tag, || {
                fixed(tag, value).map(|[v]| CurveId::from_u8(v))
            })?,
            tag::SHA2_SIGNED_DATA => once(&mut self.sha2_signed_data, tag, || {
                Sha2SignedData::decode_value(value)
            })?,
            _ => {
                if !self.skipped_tags.contains(&tag) {
                    self.skipped_tags.push(tag);
                }
            }
        }
        Ok(())
    }
}

/// Fills `slot` from `decode`, refusing a second occurrence of the tag (R6): keeping
/// either copy would resolve an ambiguity silently.
fn once<T>(
    slot: &mut Option<T>,
    tag: u8,
    decode: impl FnOnce() -> Result<T, ProtocolError>,
) -> Result<(), ProtocolError> {
    if slot.is_some() {
        return Err(ProtocolError::Duplicate(tag));
    }
    *slot = Some(decode()?);
    Ok(())
}

/// A fixed-size value; any other length is an error (R4), never truncated or padded.
fn fixed<const N: usize>(tag: u8, value: &[u8]) -> Result<[u8; N], ProtocolError> {
    <[u8; N]>::try_from(value).map_err(|_| ProtocolError::BadFixedLength {
        tag,
        len: value.len(),
        expected: N,
    })
}

/// A text value (§4.1): the characters, then exactly one NUL. Returns the characters.
fn text(tag: u8, value: &[u8]) -> Result<&[u8], ProtocolError> {
    match value.split_last() {
        Some((0, chars)) if !chars.contains(&0) => Ok(chars),
        Some((0, _)) => Err(ProtocolError::Malformed(tag, "interior NUL")),
        _ => Err(ProtocolError::Malformed(tag, "not NUL-terminated")),
    }
}

/// Builds one message in one buffer: header, then elements (R14, §10 item 1).
/// Callers add elements in ascending tag order.
pub(crate) struct MessageWriter {
    buf: Vec<u8>,
}

impl MessageWriter {
    pub fn new() -> MessageWriter {
        MessageWriter {
            buf: vec![0; HEADER_LEN],
        }
    }

    fn payload_len(&self) -> usize {
        self.buf.len() - HEADER_LEN
    }

    fn element_header(&mut self, tag: u8, len: usize) -> Result<(), ProtocolError> {
        let encoded_len = u16::try_from(len)
            .map_err(|_| ProtocolError::TooLongToEncode(self.payload_len() + 3 + len))?;
        self.buf.push(tag);
        self.buf.extend_from_slice(&encoded_len.to_be_bytes());
        Ok(())
    }

    pub fn element(&mut self, tag: u8, value: &[u8]) -> Result<(), ProtocolError> {
        self.element_header(tag, value.len())?;
        self.buf.extend_from_slice(value);
        Ok(())
    }

    pub fn u8_element(&mut self, tag: u8, value: u8) -> Result<(), ProtocolError> {
        self.element(tag, &[value])
    }

    /// Appends the NUL terminator; refuses text that would not decode back (§4.1).
    pub fn text_element(&mut self, tag: u8, chars: &[u8]) -> Result<(), ProtocolError> {
        if chars.contains(&0) {
            return Err(ProtocolError::Malformed(tag, "interior NUL"));
        }
        self.element_header(tag, chars.len() + 1)?;
        self.buf.extend_from_slice(chars);
        self.buf.push(0);
        Ok(())
    }

    /// Writes the header; its length is the number of payload bytes actually written.
    pub fn finish(mut self, command: Command, session_id: u32) -> Result<Vec<u8>, ProtocolError> {
        let payload_len = self.payload_len();
        let header = Header {
            command,
            session_id,
            payload_len: u16::try_from(payload_len)
                .map_err(|_| ProtocolError::TooLongToEncode(payload_len))?,
        };
        self.buf[..HEADER_LEN].copy_from_slice(&header.encode());
        Ok(self.buf)
    }
}

#[cfg(test)]
mod tests;
