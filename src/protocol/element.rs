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
mod tests {
    use super::*;

    fn decode(payload: &[u8]) -> Result<Elements<'_>, ProtocolError> {
        Elements::decode(payload)
    }

    #[test]
    fn empty_payload_has_no_elements() {
        let elements = decode(&[]).unwrap();
        assert_eq!(elements.reason, None);
        assert!(elements.skipped_tags.is_empty());
    }

    #[test]
    fn truncated_element_header_reports_its_offset() {
        assert_eq!(decode(&[0x07]), Err(ProtocolError::TruncatedElement(0)));
        assert_eq!(
            decode(&[0x07, 0x00, 0x01, 0x03, 0x01, 0x00]),
            Err(ProtocolError::TruncatedElement(4))
        );
    }

    #[test]
    fn value_beyond_the_payload_is_an_overrun() {
        assert_eq!(
            decode(&[0x0D, 0x00, 0x05, b'S', b'E', 0x00]),
            Err(ProtocolError::ElementOverrun { tag: 13, len: 5 })
        );
        assert_eq!(
            decode(&[0x09, 0xFF, 0xFF]),
            Err(ProtocolError::ElementOverrun { tag: 9, len: 65535 })
        );
    }

    #[test]
    fn fixed_size_elements_reject_other_lengths() {
        for t in [1u8, 3, 7, 8, 17, 18] {
            assert_eq!(
                decode(&[t, 0x00, 0x02, 0x01, 0x01]),
                Err(ProtocolError::BadFixedLength {
                    tag: t,
                    len: 2,
                    expected: 1
                }),
                "tag {t}"
            );
            assert_eq!(
                decode(&[t, 0x00, 0x00]),
                Err(ProtocolError::BadFixedLength {
                    tag: t,
                    len: 0,
                    expected: 1
                }),
                "tag {t}"
            );
        }
        assert_eq!(
            decode(&[0x0A, 0x00, 0x01, 0x08]),
            Err(ProtocolError::BadFixedLength {
                tag: 10,
                len: 1,
                expected: 2
            })
        );
        assert_eq!(
            decode(&[0x0A, 0x00, 0x03, 0x00, 0x08, 0x00]),
            Err(ProtocolError::BadFixedLength {
                tag: 10,
                len: 3,
                expected: 2
            })
        );
    }

    #[test]
    fn unknown_tags_are_skipped_and_reported_once() {
        let payload = [
            0x05, 0x00, 0x02, 0xAA, 0xBB, // CERTIFICATE_ID, unknown encoding
            0x07, 0x00, 0x01, 0x03, // VERSION
            0x0C, 0x00, 0x00, // RETRY_DELAY, empty
            0x05, 0x00, 0x01, 0x00, // CERTIFICATE_ID again
            0x13, 0x00, 0x01, 0x03, // DIGEST_TYPE
            0xC8, 0x00, 0x00, // 200
            0x0E, 0x00, 0x00, 0x0F, 0x00, 0x00, 0x00, 0x00, 0x00, // 14, 15, 0
        ];
        let elements = decode(&payload).unwrap();
        assert_eq!(elements.version, Some(3));
        assert_eq!(elements.skipped_tags, vec![5, 12, 19, 200, 14, 15, 0]);
    }

    #[test]
    fn duplicates_of_deciding_elements_are_refused() {
        let once = |t: u8, value: &[u8]| {
            let mut e = vec![t];
            e.extend_from_slice(&(value.len() as u16).to_be_bytes());
            e.extend_from_slice(value);
            e
        };
        let der = [0x30, 0x03, 0x02, 0x01, 0x05];
        let mut wrapped = vec![0x01, 0x00, 0x07, 0x00, 0x01];
        wrapped.extend_from_slice(&der);
        let cases: Vec<(u8, Vec<u8>)> = vec![
            (tag::DEVICE_NAME, b"SEP001122334455\0".to_vec()),
            (tag::PASSWORD, b"1234\0".to_vec()),
            (tag::VERSION, vec![3]),
            (tag::CERTIFICATE, wrapped),
            (tag::SIGNED_DATA, vec![0xAB; 4]),
            (tag::SHA2_SIGNED_DATA, vec![3, 0, 1, 0xCD]),
            (
                tag::SUDI_DATA,
                vec![0, 0, 1, 0xAA, 1, 0, 1, 0xBB, 3, 0, 1, 0xCC],
            ),
            (tag::PUBLIC_KEY, vec![0x30, 0x00]),
            (tag::CERTIFICATE_TYPE, vec![1]),
            (tag::AUTH_TYPE, vec![0]),
            (tag::KEY_SIZE, vec![8, 0]),
            (tag::KEY_TYPE, vec![0]),
            (tag::CURVE, vec![0]),
        ];
        for (t, value) in cases {
            let single = once(t, &value);
            assert!(decode(&single).is_ok(), "tag {t} alone");
            let mut twice = single.clone();
            twice.extend_from_slice(&single);
            assert_eq!(decode(&twice).err(), Some(ProtocolError::Duplicate(t)));
        }
    }

    #[test]
    fn a_repeated_reason_keeps_the_first() {
        let elements = decode(&[0x01, 0x00, 0x01, 0x01, 0x01, 0x00, 0x01, 0x07]).unwrap();
        assert_eq!(elements.reason, Some(Reason::UpdateCertificate));
    }

    #[test]
    fn text_needs_exactly_one_terminating_nul() {
        for t in [tag::REASON_INFO, tag::PASSWORD, tag::DEVICE_NAME] {
            assert_eq!(
                decode(&[t, 0x00, 0x03, b'S', b'E', b'P']).err(),
                Some(ProtocolError::Malformed(t, "not NUL-terminated"))
            );
            assert_eq!(
                decode(&[t, 0x00, 0x00]).err(),
                Some(ProtocolError::Malformed(t, "not NUL-terminated"))
            );
            assert_eq!(
                decode(&[t, 0x00, 0x04, b'S', 0x00, b'P', 0x00]).err(),
                Some(ProtocolError::Malformed(t, "interior NUL"))
            );
            assert_eq!(
                decode(&[t, 0x00, 0x03, b'S', 0x00, 0x00]).err(),
                Some(ProtocolError::Malformed(t, "interior NUL"))
            );
        }
    }

    #[test]
    fn empty_text_is_a_lone_nul() {
        let elements = decode(&[0x0B, 0x00, 0x01, 0x00, 0x0D, 0x00, 0x01, 0x00]).unwrap();
        assert_eq!(elements.password, Some(&b""[..]));
        assert_eq!(elements.device_name, Some(""));
    }

    #[test]
    fn device_name_must_be_utf8_but_password_need_not() {
        assert_eq!(
            decode(&[0x0D, 0x00, 0x03, 0xC3, 0x28, 0x00]).err(),
            Some(ProtocolError::Malformed(13, "not UTF-8"))
        );
        let elements = decode(&[0x0B, 0x00, 0x03, 0xC3, 0x28, 0x00]).unwrap();
        assert_eq!(elements.password, Some(&[0xC3, 0x28][..]));
    }

    #[test]
    fn writer_refuses_what_would_not_decode_back() {
        let mut writer = MessageWriter::new();
        assert_eq!(
            writer.text_element(tag::DEVICE_NAME, b"SEP\0X"),
            Err(ProtocolError::Malformed(13, "interior NUL"))
        );
        assert_eq!(
            writer.element(tag::PUBLIC_KEY, &vec![0; 65536]),
            Err(ProtocolError::TooLongToEncode(65539))
        );
    }

    #[test]
    fn writer_refuses_a_payload_over_65535_bytes() {
        let mut writer = MessageWriter::new();
        writer.element(tag::PUBLIC_KEY, &vec![0; 65532]).unwrap();
        assert_eq!(writer.payload_len(), 65535);
        writer.u8_element(tag::REASON, 1).unwrap();
        assert_eq!(
            writer.finish(Command::EndSession, 1),
            Err(ProtocolError::TooLongToEncode(65539))
        );
    }
}
