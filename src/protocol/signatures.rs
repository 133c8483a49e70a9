//! The composite signature values of a certificate-mode AUTH_RESPONSE:
//! SHA2_SIGNED_DATA (capf-protocol.md §4.5) and SUDI_DATA (§4.6). Both are built from
//! `u8` · u16 BE length · bytes records, and both must be filled exactly by them, so
//! no byte of a signed blob goes unaccounted for.

use super::codec::Reader;
use super::element::tag;
use super::wire::{HashId, ProtocolError, Sha2SignedData, SudiData};

/// One `u8` · u16 BE length · bytes record.
fn record<'a>(reader: &mut Reader<'a>, tag: u8) -> Result<(u8, &'a [u8]), ProtocolError> {
    let (Some(kind), Some(len)) = (reader.u8(), reader.u16()) else {
        return Err(ProtocolError::Malformed(tag, "record header is truncated"));
    };
    let bytes = reader
        .take(usize::from(len))
        .ok_or(ProtocolError::Malformed(tag, "record overruns the element"))?;
    Ok((kind, bytes))
}

fn put_record(out: &mut Vec<u8>, kind: u8, bytes: &[u8]) -> Result<(), ProtocolError> {
    let len = u16::try_from(bytes.len())
        .map_err(|_| ProtocolError::TooLongToEncode(out.len() + 6 + bytes.len()))?;
    out.push(kind);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

fn expect_end(reader: &Reader<'_>, tag: u8) -> Result<(), ProtocolError> {
    if reader.is_empty() {
        Ok(())
    } else {
        Err(ProtocolError::Malformed(tag, "bytes after the last record"))
    }
}

impl Sha2SignedData {
    /// `hash id` · `sig length` · `signature`; element length = 3 + sig length.
    pub(crate) fn decode_value(value: &[u8]) -> Result<Sha2SignedData, ProtocolError> {
        let mut reader = Reader::new(value);
        let (hash, signature) = record(&mut reader, tag::SHA2_SIGNED_DATA)?;
        expect_end(&reader, tag::SHA2_SIGNED_DATA)?;
        Ok(Sha2SignedData {
            hash: HashId::from_u8(hash),
            signature: signature.to_vec(),
        })
    }

    pub(crate) fn encode_value(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut value = Vec::with_capacity(3 + self.signature.len());
        put_record(&mut value, self.hash.to_u8(), &self.signature)?;
        Ok(value)
    }
}

/// Type byte of the certificate record, and of the SHA-1 signature record.
const SUDI_CERTIFICATE: u8 = 0x00;
const SUDI_SHA1: u8 = 0x01;

impl SudiData {
    /// Three records: certificate, SHA-1 signature, signature with the hash named by
    /// the third type byte. The first two type bytes are not checked (as in the
    /// open-source server): their meaning is fixed by position.
    pub(crate) fn decode_value(value: &[u8]) -> Result<SudiData, ProtocolError> {
        let mut reader = Reader::new(value);
        let (_, certificate) = record(&mut reader, tag::SUDI_DATA)?;
        let (_, sha1_signature) = record(&mut reader, tag::SUDI_DATA)?;
        let (sha2_hash, sha2_signature) = record(&mut reader, tag::SUDI_DATA)?;
        expect_end(&reader, tag::SUDI_DATA)?;
        Ok(SudiData {
            certificate: certificate.to_vec(),
            sha1_signature: sha1_signature.to_vec(),
            sha2_hash: HashId::from_u8(sha2_hash),
            sha2_signature: sha2_signature.to_vec(),
        })
    }

    pub(crate) fn encode_value(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut value = Vec::with_capacity(
            9 + self.certificate.len() + self.sha1_signature.len() + self.sha2_signature.len(),
        );
        put_record(&mut value, SUDI_CERTIFICATE, &self.certificate)?;
        put_record(&mut value, SUDI_SHA1, &self.sha1_signature)?;
        put_record(&mut value, self.sha2_hash.to_u8(), &self.sha2_signature)?;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha2_malformed(why: &'static str) -> Result<Sha2SignedData, ProtocolError> {
        Err(ProtocolError::Malformed(20, why))
    }

    fn sudi_malformed(why: &'static str) -> Result<SudiData, ProtocolError> {
        Err(ProtocolError::Malformed(16, why))
    }

    #[test]
    fn sha2_signature_length_must_fill_the_element() {
        assert_eq!(
            Sha2SignedData::decode_value(&[3, 0, 2, 0xAA, 0xBB]),
            Ok(Sha2SignedData {
                hash: HashId::Sha512,
                signature: vec![0xAA, 0xBB]
            })
        );
        assert_eq!(
            Sha2SignedData::decode_value(&[3, 0, 3, 0xAA, 0xBB]),
            sha2_malformed("record overruns the element")
        );
        assert_eq!(
            Sha2SignedData::decode_value(&[3, 0, 1, 0xAA, 0xBB]),
            sha2_malformed("bytes after the last record")
        );
        assert_eq!(
            Sha2SignedData::decode_value(&[3, 0]),
            sha2_malformed("record header is truncated")
        );
        assert_eq!(
            Sha2SignedData::decode_value(&[]),
            sha2_malformed("record header is truncated")
        );
    }

    #[test]
    fn sha2_unknown_hash_is_kept_for_the_caller_to_refuse() {
        let decoded = Sha2SignedData::decode_value(&[9, 0, 0]).unwrap();
        assert_eq!(decoded.hash, HashId::Unknown(9));
        assert_eq!(decoded.encode_value().unwrap(), vec![9, 0, 0]);
    }

    #[test]
    fn sudi_records_must_tile_the_element() {
        let good = [0, 0, 1, 0xC0, 1, 0, 1, 0x51, 3, 0, 2, 0x52, 0x53];
        assert_eq!(
            SudiData::decode_value(&good),
            Ok(SudiData {
                certificate: vec![0xC0],
                sha1_signature: vec![0x51],
                sha2_hash: HashId::Sha512,
                sha2_signature: vec![0x52, 0x53],
            })
        );
        assert_eq!(
            SudiData::decode_value(&[&good[..], &[0]].concat()),
            sudi_malformed("bytes after the last record")
        );
        assert_eq!(
            SudiData::decode_value(&good[..good.len() - 1]),
            sudi_malformed("record overruns the element")
        );
        assert_eq!(
            SudiData::decode_value(&good[..8]),
            sudi_malformed("record header is truncated")
        );
        assert_eq!(
            SudiData::decode_value(&good[..10]),
            sudi_malformed("record header is truncated")
        );
    }
}
