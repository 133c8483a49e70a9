//! The CAPF wire protocol (capf-protocol.md §3–§5): an 8-byte header, a payload of
//! TLV elements, and one Rust type per message. Pure: no sockets, no clocks.
//!
//! Decoding is strict where ambiguity could change a decision (bounds, fixed-size
//! elements, duplicates, payload cap) and liberal where it cannot (element order,
//! unknown tags are skipped). Encoding emits elements in ascending tag order and
//! the whole message as one buffer, so the server can send it in one write.

mod certificate;
mod codec;
mod element;
mod message;
mod signatures;
#[cfg(test)]
mod tests;

pub use codec::Reader;
pub use element::tag;
pub use message::*;
