//! Decodes MQTT packets given as hex and prints them.
//!
//! ```text
//! cargo run -p midge-codec --example decode -- [--v5|--v311|--v31] [HEX ...]
//! ```
//! With no hex arguments it decodes a CONNECT, SUBSCRIBE and PUBLISH captured from
//! `mosquitto_sub`/`mosquitto_pub` 2.0.11 (see `tests/fixtures/`).

use bytes::BytesMut;
use midge_codec::{Packet, ProtocolVersion, MAX_PACKET_SIZE};

const SAMPLE_V5: &[&str] = &[
    "102900044d5154540502003c11260002636b000263761100000078210001000b666978747572652d737562",
    "822300010726000161000162000c6d696467652f2b2f74656d700200076d696467652f2302",
    "334c00126d696467652f666978747572652f74656d700001312600016b000176020000001e03000a746578742f\
     706c61696e08000a726573702f746f706963090006636f72722d31010132312e35",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut version = ProtocolVersion::V5;
    let mut packets = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--v5" => version = ProtocolVersion::V5,
            "--v311" => version = ProtocolVersion::V3_1_1,
            "--v31" => version = ProtocolVersion::V3_1,
            hex => packets.push(hex.to_owned()),
        }
    }
    if packets.is_empty() {
        packets = SAMPLE_V5.iter().map(|s| (*s).to_owned()).collect();
    }
    for hex in packets {
        let mut buf = BytesMut::from(&parse_hex(&hex)?[..]);
        while !buf.is_empty() {
            match Packet::decode(&mut buf, version, MAX_PACKET_SIZE) {
                Ok(Some(packet)) => println!("{packet:#?}"),
                Ok(None) => {
                    println!("incomplete: {} bytes wait for more input", buf.len());
                    break;
                }
                Err(err) => {
                    println!(
                        "error: {err} (reason code {:?})",
                        midge_codec::ReasonCode::from(err)
                    );
                    break;
                }
            }
        }
    }
    Ok(())
}

fn parse_hex(hex: &str) -> Result<Vec<u8>, String> {
    let hex: String = hex.chars().filter(|c| !c.is_whitespace()).collect();
    if !hex.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits in {hex:?}"));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|e| format!("{e} in {hex:?}")))
        .collect()
}
