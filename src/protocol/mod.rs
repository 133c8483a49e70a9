//! The CAPF wire protocol (capf-protocol.md §3–§5): an 8-byte header, a payload of
//! TLV elements, and one Rust type per message. Pure: no sockets, no clocks.
//!
//! Decoding is strict where ambiguity could change a decision (bounds, fixed-size
//! elements, duplicates, payload cap) and liberal where it cannot (element order,
//! unknown tags are skipped). Encoding emits elements in ascending tag order and
//! the whole message as one buffer, so the server can send it in one write.
//!
//! Layers, each using only those above it: `codec` (a forward-only `Reader`), `wire`
//! (header and code tables), `element` (the TLV layer), `message` (one type per
//! message); `certificate` and `signatures` read the composite element values.

mod certificate;
mod codec;
mod element;
mod message;
mod signatures;
#[cfg(test)]
mod tests;
mod wire;

pub use codec::Reader;
pub use element::tag;
pub use message::*;
pub use wire::*;
