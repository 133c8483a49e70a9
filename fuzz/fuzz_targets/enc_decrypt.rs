//! `.enc.sgn` decryption (config-files.md §4) with a fixed test phone key: the parser,
//! the key unwrap, the pad and digest checks and the XML check of the plaintext.
#![no_main]

use capf::phone_config::format::enc;
use libfuzzer_sys::fuzz_target;
use rsa::pkcs8::DecodePrivateKey;
use std::sync::OnceLock;

/// The phone key the seed files are encrypted to (test only, 1024 bits for speed).
const PHONE_KEY: &str = include_str!("../keys/phone-test-key.pem");

fn phone_key() -> &'static rsa::PrivateKey {
    static KEY: OnceLock<rsa::PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| rsa::PrivateKey::from_pkcs8_pem(PHONE_KEY).expect("test key"))
}

fuzz_target!(|data: &[u8]| {
    let _ = enc::decrypt(data, phone_key());
});
