//! Decodes arbitrary bytes as a stream of MQTT packets on a V5 connection.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    midge_fuzz::decode_all(data, midge_codec::ProtocolVersion::V5);
});
