//! The first byte picks the protocol version; the rest is decoded as packets. Every packet that
//! decodes must re-encode and decode to the same packet.
#![no_main]

use midge_codec::ProtocolVersion;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let version = match selector % 3 {
        0 => ProtocolVersion::V3_1,
        1 => ProtocolVersion::V3_1_1,
        _ => ProtocolVersion::V5,
    };
    midge_fuzz::decode_all(rest, version);
});
