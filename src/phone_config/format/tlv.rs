//! The element encoding shared by `.sgn`, `.enc.sgn` and `.tlv` files (config-files.md §1).
//!
//! An element is `tag:u8 ‖ length:u16 ‖ value`; the pad byte `0x0D` stands alone with
//! no length. Lengths are checked before anything is written, because a truncated
//! length would silently produce a file phones misread (E3).

use crate::phone_config::error::{Error, Result};

/// The header pad byte (tag 13), which has no length field.
pub const PAD: u8 = 0x0D;

/// Builds a sequence of elements.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Writer::default()
    }

    /// Bytes written so far: the offset at which the next element starts.
    pub fn position(&self) -> usize {
        self.buf.len()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub fn element(&mut self, tag: u8, value: &[u8]) -> Result<()> {
        let len = length16("element value", value.len())?;
        self.buf.push(tag);
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(value);
        Ok(())
    }

    pub fn u8(&mut self, tag: u8, value: u8) -> Result<()> {
        self.element(tag, &[value])
    }

    pub fn u16(&mut self, tag: u8, value: u16) -> Result<()> {
        self.element(tag, &value.to_be_bytes())
    }

    /// A string element: the UTF-8 bytes and exactly one terminating NUL, which the
    /// length counts. A string that already holds a NUL would be cut short by every
    /// reader, so it is refused.
    pub fn string(&mut self, tag: u8, value: &str) -> Result<()> {
        if value.as_bytes().contains(&0) {
            return Err(Error::Certificate(format!(
                "string for tag {tag} contains an embedded NUL"
            )));
        }
        let mut bytes = Vec::with_capacity(value.len() + 1);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
        self.element(tag, &bytes)
    }

    /// A container: its length is the total size of the elements `fill` writes.
    pub fn container(
        &mut self,
        tag: u8,
        fill: impl FnOnce(&mut Writer) -> Result<()>,
    ) -> Result<()> {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[tag, 0, 0]);
        fill(self)?;
        let len = length16("container", self.buf.len() - start - 3)?;
        self.buf[start + 1..start + 3].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    pub fn pad(&mut self, count: usize) {
        self.buf.extend(std::iter::repeat_n(PAD, count));
    }

    /// Overwrites two bytes already written (the header-length value).
    pub fn patch_u16(&mut self, offset: usize, value: u16) {
        self.buf[offset..offset + 2].copy_from_slice(&value.to_be_bytes());
    }

    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }
}

/// Converts a length to the format's 16-bit field, refusing anything larger (E3).
pub fn length16(what: &'static str, len: usize) -> Result<u16> {
    u16::try_from(len).map_err(|_| Error::TooLong { what, len })
}

/// One item found while walking a header or a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// A lone pad byte at `offset`.
    Pad { offset: usize },
    /// An element; `offset` is where its tag byte sits.
    Element {
        tag: u8,
        offset: usize,
        value: &'a [u8],
    },
}

/// Reads one item at `offset` of `data`, which must not extend past `end`.
///
/// `pad_allowed` says whether a lone `0x0D` is a pad byte here (only at the top level
/// of a header). A container's value is returned whole; callers that walk containers
/// in place continue at `offset + 3` instead of after the value.
pub fn read_item(data: &[u8], offset: usize, end: usize, pad_allowed: bool) -> Result<Item<'_>> {
    let tag = *data
        .get(offset)
        .ok_or_else(|| Error::malformed(offset, "element runs past the end"))?;
    if tag == PAD && pad_allowed {
        return Ok(Item::Pad { offset });
    }
    let len_bytes = data
        .get(offset + 1..offset + 3)
        .filter(|_| offset + 3 <= end)
        .ok_or_else(|| Error::malformed(offset, format!("tag {tag} has no room for its length")))?;
    let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
    let value_end = offset + 3 + len;
    if value_end > end {
        return Err(Error::malformed(
            offset,
            format!("tag {tag} of length {len} crosses the end of its region at {end}"),
        ));
    }
    let value = data
        .get(offset + 3..value_end)
        .ok_or_else(|| Error::malformed(offset, "element runs past the end"))?;
    Ok(Item::Element { tag, offset, value })
}

/// Reads a big-endian `u16` value of exactly two bytes.
pub fn value_u16(tag: u8, offset: usize, value: &[u8]) -> Result<u16> {
    match value {
        [a, b] => Ok(u16::from_be_bytes([*a, *b])),
        _ => Err(Error::malformed(
            offset,
            format!("tag {tag} must hold 2 bytes, holds {}", value.len()),
        )),
    }
}

/// Reads a one-byte value.
pub fn value_u8(tag: u8, offset: usize, value: &[u8]) -> Result<u8> {
    match value {
        [a] => Ok(*a),
        _ => Err(Error::malformed(
            offset,
            format!("tag {tag} must hold 1 byte, holds {}", value.len()),
        )),
    }
}

/// Reads a NUL-terminated string value: exactly one NUL, at the end.
pub fn value_string(tag: u8, offset: usize, value: &[u8]) -> Result<String> {
    match value.split_last() {
        Some((0, text)) if !text.contains(&0) => String::from_utf8(text.to_vec())
            .map_err(|_| Error::malformed(offset, format!("tag {tag} is not UTF-8"))),
        _ => Err(Error::malformed(
            offset,
            format!("tag {tag} must be a string with a single terminating NUL"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_count_their_terminating_nul() {
        let mut w = Writer::new();
        w.string(14, "ITLFile.tlv").unwrap();
        assert_eq!(&w.as_bytes()[..3], &[14, 0, 12]);
        assert_eq!(w.as_bytes().last(), Some(&0));
        assert!(w.string(4, "a\0b").is_err());
    }

    #[test]
    fn oversized_values_are_refused_not_truncated() {
        let mut w = Writer::new();
        assert!(w.element(9, &vec![0; 65535]).is_ok());
        let err = w.element(9, &vec![0; 65536]).unwrap_err();
        assert!(matches!(err, Error::TooLong { len: 65536, .. }), "{err}");
        let mut w = Writer::new();
        let err = w
            .container(16, |w| {
                w.element(1, &vec![0; 40000])?;
                w.element(2, &vec![0; 40000])
            })
            .unwrap_err();
        assert!(matches!(err, Error::TooLong { .. }));
    }

    #[test]
    fn container_length_is_the_size_of_its_children() {
        let mut w = Writer::new();
        w.container(7, |w| {
            w.u8(8, 1)?;
            w.container(9, |w| {
                w.u8(10, 0)?;
                w.u8(11, 2)
            })
        })
        .unwrap();
        assert_eq!(
            w.as_bytes(),
            &[7, 0, 15, 8, 0, 1, 1, 9, 0, 8, 10, 0, 1, 0, 11, 0, 1, 2]
        );
    }

    #[test]
    fn reader_rejects_elements_crossing_their_region() {
        let data = [4, 0, 5, b'a', b'b'];
        assert!(read_item(&data, 0, data.len(), false).is_err());
        assert!(read_item(&[4, 0], 0, 2, false).is_err());
        assert_eq!(
            read_item(&[PAD], 0, 1, true).unwrap(),
            Item::Pad { offset: 0 }
        );
        assert!(value_string(4, 0, b"ab").is_err());
        assert!(value_string(4, 0, b"a\0b\0").is_err());
        assert_eq!(value_string(4, 0, b"ab\0").unwrap(), "ab");
    }
}
