//! Any 8-byte header and payload through both message decoders. The header is tried
//! as given (lengths that lie) and with its length set to the payload's, so most
//! inputs reach the element parser. A message that decodes must re-encode and decode
//! to itself.
#![no_main]

use capf::protocol::{ClientMessage, Header, ServerMessage, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((raw, payload)) = data.split_first_chunk::<HEADER_LEN>() else {
        return;
    };
    let Ok(header) = Header::decode(raw) else {
        return;
    };
    let _ = header.check_payload_cap(capf::protocol::DEFAULT_MAX_PAYLOAD);
    decode_both(&header, payload);
    if let Ok(len) = u16::try_from(payload.len()) {
        let honest = Header {
            payload_len: len,
            ..header
        };
        decode_both(&honest, payload);
    }
});

fn decode_both(header: &Header, payload: &[u8]) {
    if let Ok(msg) = ClientMessage::decode(header, payload) {
        let bytes = msg.encode(header.session_id).expect("a decoded message re-encodes");
        assert_eq!(decode::<ClientMessage>(&bytes), msg);
    }
    if let Ok(msg) = ServerMessage::decode(header, payload) {
        let bytes = msg.encode(header.session_id).expect("a decoded message re-encodes");
        assert_eq!(decode::<ServerMessage>(&bytes), msg);
    }
}

trait Decode: Sized {
    fn decode(header: &Header, payload: &[u8]) -> Result<Self, capf::protocol::ProtocolError>;
}

impl Decode for ClientMessage {
    fn decode(header: &Header, payload: &[u8]) -> Result<Self, capf::protocol::ProtocolError> {
        ClientMessage::decode(header, payload)
    }
}

impl Decode for ServerMessage {
    fn decode(header: &Header, payload: &[u8]) -> Result<Self, capf::protocol::ProtocolError> {
        ServerMessage::decode(header, payload)
    }
}

fn decode<M: Decode>(bytes: &[u8]) -> M {
    let (raw, payload) = bytes.split_first_chunk::<HEADER_LEN>().expect("a header");
    let header = Header::decode(raw).expect("our own header");
    M::decode(&header, payload).expect("our own encoding decodes")
}
