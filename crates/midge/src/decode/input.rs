//! What `midge decode` reads: hex text, raw bytes, or a pcap / pcapng capture, told apart by
//! their first bytes unless `--format` says; and the TCP segments inside a capture.

use std::io::{self, BufRead, Read};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use etherparse::{EtherType, NetSlice, SlicedPacket, TransportSlice};
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::DataLink;

/// The first four bytes of a pcap file, in either byte order, with micro- or nanosecond
/// timestamps.
const PCAP_MAGICS: [[u8; 4]; 4] = [
    [0xD4, 0xC3, 0xB2, 0xA1],
    [0xA1, 0xB2, 0xC3, 0xD4],
    [0x4D, 0x3C, 0xB2, 0xA1],
    [0xA1, 0xB2, 0x3C, 0x4D],
];
/// The first four bytes of a pcapng file: a Section Header Block.
const PCAPNG_MAGIC: [u8; 4] = [0x0A, 0x0D, 0x0D, 0x0A];

/// How the input is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// A pcap or pcapng magic number means a capture; text made only of hex digits,
    /// separators and comments means hex; anything else is raw bytes.
    Auto,
    /// Hex digits; whitespace, `:`, `,` and `0x` prefixes are skipped, `#` starts a comment.
    Hex,
    /// The bytes of an MQTT stream as they are.
    Raw,
    /// A pcap or pcapng capture.
    Pcap,
}

/// The input with its format settled, and its first bytes put back in front.
pub(super) enum Input {
    Hex(Box<dyn BufRead>),
    Raw(Box<dyn Read>),
    Pcap(Box<dyn Read>),
    PcapNg(Box<dyn Read>),
}

/// Settles the format of `reader`, looking at up to its first 512 bytes when `format` is
/// [`Format::Auto`] (and at its magic number when it is [`Format::Pcap`]).
pub(super) fn open(reader: Box<dyn Read>, format: Format) -> io::Result<Input> {
    let mut reader = reader;
    let mut head = Vec::with_capacity(512);
    (&mut reader).take(512).read_to_end(&mut head)?;
    let magic: Option<[u8; 4]> = head.get(..4).and_then(|m| m.try_into().ok());
    let is_pcap = magic.is_some_and(|m| PCAP_MAGICS.contains(&m));
    let is_pcapng = magic == Some(PCAPNG_MAGIC);
    let whole: Box<dyn Read> = Box::new(io::Cursor::new(head.clone()).chain(reader));
    Ok(match format {
        Format::Hex => Input::Hex(Box::new(io::BufReader::new(whole))),
        Format::Raw => Input::Raw(whole),
        Format::Pcap | Format::Auto if is_pcap => Input::Pcap(whole),
        Format::Pcap | Format::Auto if is_pcapng => Input::PcapNg(whole),
        Format::Pcap => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a pcap or pcapng capture (no magic number)",
            ))
        }
        Format::Auto if looks_like_hex(&head) => Input::Hex(Box::new(io::BufReader::new(whole))),
        Format::Auto => Input::Raw(whole),
    })
}

/// True if `head` is text that [`HexParser`] reads. An MQTT stream's first byte is a packet
/// type (0x10 to 0xF0, with flags), never an ASCII hex digit's, so the two are not confused.
fn looks_like_hex(head: &[u8]) -> bool {
    let mut comment = false;
    let mut digits = 0;
    for &b in head {
        match b {
            b'\n' => comment = false,
            _ if comment => {}
            b'#' => comment = true,
            b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => digits += 1,
            b'x' | b'X' | b':' | b',' | b' ' | b'\t' | b'\r' => {}
            _ => return false,
        }
    }
    digits > 0
}

/// Turns hex text into bytes, line by line: two digits a byte, across separators and lines.
#[derive(Debug, Default)]
pub(super) struct HexParser {
    /// A first digit whose second has not come yet.
    high: Option<u8>,
    line: usize,
}

impl HexParser {
    /// Appends the bytes of `line` to `out`; the error names the line and column.
    pub(super) fn line(&mut self, line: &str, out: &mut Vec<u8>) -> Result<(), String> {
        self.line += 1;
        let text = line.split('#').next().unwrap_or_default();
        let bytes = text.as_bytes();
        let mut i = 0;
        let mut token_start = true;
        while let Some(&c) = bytes.get(i) {
            let column = i + 1;
            i += 1;
            if matches!(c, b' ' | b'\t' | b'\r' | b'\n' | b':' | b',') {
                token_start = true;
                continue;
            }
            if token_start && c == b'0' && matches!(bytes.get(i), Some(b'x' | b'X')) {
                i += 1;
                token_start = false;
                continue;
            }
            token_start = false;
            let Some(digit) = (c as char).to_digit(16) else {
                return Err(format!(
                    "line {}, column {column}: {:?} is not a hex digit",
                    self.line,
                    line.get(column - 1..)
                        .and_then(|s| s.chars().next())
                        .unwrap_or('?')
                ));
            };
            match self.high.take() {
                Some(high) => out.push((high << 4) | digit as u8),
                None => self.high = Some(digit as u8),
            }
        }
        Ok(())
    }

    /// The input is over: an odd digit left is an error.
    pub(super) fn finish(&self) -> Result<(), String> {
        match self.high {
            Some(_) => Err("an odd number of hex digits: the last byte has one digit".into()),
            None => Ok(()),
        }
    }
}

/// A TCP segment of a capture.
#[derive(Debug)]
pub(super) struct Segment<'a> {
    /// Capture time, since the Unix epoch.
    pub(super) time: Duration,
    pub(super) src: SocketAddr,
    pub(super) dst: SocketAddr,
    pub(super) seq: u32,
    pub(super) syn: bool,
    pub(super) ack: bool,
    pub(super) payload: &'a [u8],
}

/// What the capture held besides TCP segments, to say at the end.
#[derive(Debug, Default)]
pub(super) struct FrameCounts {
    pub(super) frames: u64,
    /// Frames that are not TCP over IP (ARP, UDP, ICMP...).
    pub(super) not_tcp: u64,
    /// Frames that could not be read: cut short by the capture's snapshot length, damaged,
    /// or IP fragments.
    pub(super) unreadable: u64,
}

/// Calls `each` with every TCP segment of a pcap capture, in capture order.
pub(super) fn pcap_segments(
    reader: Box<dyn Read>,
    counts: &mut FrameCounts,
    mut each: impl FnMut(Segment<'_>),
) -> Result<(), String> {
    let mut reader = PcapReader::new(reader).map_err(|e| format!("not a pcap capture: {e}"))?;
    let link = reader.header().datalink;
    while let Some(packet) = reader.next_packet() {
        let packet = packet.map_err(|e| format!("capture damaged: {e}"))?;
        frame(link, packet.timestamp, &packet.data, counts, &mut each)?;
    }
    Ok(())
}

/// Calls `each` with every TCP segment of a pcapng capture, in capture order.
pub(super) fn pcapng_segments(
    reader: Box<dyn Read>,
    counts: &mut FrameCounts,
    mut each: impl FnMut(Segment<'_>),
) -> Result<(), String> {
    let mut reader = PcapNgReader::new(reader).map_err(|e| format!("not a pcapng capture: {e}"))?;
    // Each interface's link type and timestamp unit (in units per second).
    let mut interfaces: Vec<(DataLink, u64)> = Vec::new();
    while let Some(block) = reader.next_block() {
        let block = block.map_err(|e| format!("capture damaged: {e}"))?;
        match block {
            Block::SectionHeader(_) => interfaces.clear(),
            Block::InterfaceDescription(idb) => {
                // Microseconds unless the interface says otherwise.
                let mut per_second = 1_000_000u64;
                for option in &idb.options {
                    if let InterfaceDescriptionOption::IfTsResol(r) = option {
                        per_second = if r & 0x80 == 0 {
                            10u64.checked_pow(u32::from(*r)).unwrap_or(u64::MAX)
                        } else {
                            1u64.checked_shl(u32::from(r & 0x7F)).unwrap_or(u64::MAX)
                        };
                    }
                }
                interfaces.push((idb.linktype, per_second));
            }
            Block::EnhancedPacket(epb) => {
                let Some(&(link, per_second)) = interfaces.get(epb.interface_id as usize) else {
                    return Err(format!(
                        "capture damaged: a packet of interface {} that was not described",
                        epb.interface_id
                    ));
                };
                // The reader gives the raw timestamp as nanoseconds, whatever the unit.
                let raw = epb.timestamp.as_nanos();
                let per_second = u128::from(per_second.max(1));
                let nanos = raw % per_second * 1_000_000_000 / per_second;
                let time = Duration::new((raw / per_second) as u64, nanos as u32);
                frame(link, time, &epb.data, counts, &mut each)?;
            }
            Block::SimplePacket(spb) => {
                let Some(&(link, _)) = interfaces.first() else {
                    return Err("capture damaged: a packet before any interface".into());
                };
                frame(link, Duration::ZERO, &spb.data, counts, &mut each)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Finds the TCP segment in one captured frame.
fn frame(
    link: DataLink,
    time: Duration,
    data: &[u8],
    counts: &mut FrameCounts,
    each: &mut impl FnMut(Segment<'_>),
) -> Result<(), String> {
    counts.frames += 1;
    let sliced = match link {
        DataLink::ETHERNET => SlicedPacket::from_ethernet(data),
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => SlicedPacket::from_ip(data),
        DataLink::LINUX_SLL => SlicedPacket::from_linux_sll(data),
        // SLL2: protocol type (2 bytes) first, 20 bytes in all.
        DataLink::LINUX_SLL2 => match (data.get(..2), data.get(20..)) {
            (Some(&[hi, lo]), Some(rest)) => {
                SlicedPacket::from_ether_type(EtherType(u16::from_be_bytes([hi, lo])), rest)
            }
            _ => {
                counts.unreadable += 1;
                return Ok(());
            }
        },
        // BSD loopback: a 4-byte address family, then IP.
        DataLink::NULL | DataLink::LOOP => match data.get(4..) {
            Some(rest) => SlicedPacket::from_ip(rest),
            None => {
                counts.unreadable += 1;
                return Ok(());
            }
        },
        other => return Err(format!("link type {other:?} is not supported")),
    };
    let Ok(sliced) = sliced else {
        counts.unreadable += 1;
        return Ok(());
    };
    if sliced.is_ip_payload_fragmented() {
        counts.unreadable += 1;
        return Ok(());
    }
    let (src, dst): (IpAddr, IpAddr) = match &sliced.net {
        Some(NetSlice::Ipv4(ip)) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        Some(NetSlice::Ipv6(ip)) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        _ => {
            counts.not_tcp += 1;
            return Ok(());
        }
    };
    let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else {
        counts.not_tcp += 1;
        return Ok(());
    };
    each(Segment {
        time,
        src: SocketAddr::new(src, tcp.source_port()),
        dst: SocketAddr::new(dst, tcp.destination_port()),
        seq: tcp.sequence_number(),
        syn: tcp.syn(),
        ack: tcp.ack(),
        payload: tcp.payload(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Result<Vec<u8>, String> {
        let mut parser = HexParser::default();
        let mut out = Vec::new();
        for line in text.lines() {
            parser.line(line, &mut out)?;
        }
        parser.finish()?;
        Ok(out)
    }

    #[test]
    fn hex_tolerates_separators_prefixes_and_comments() {
        assert_eq!(
            hex("30 0a\n00:03 # topic\n0x61,0x2f 0x62\nC0"),
            Ok(vec![0x30, 0x0a, 0, 3, 0x61, 0x2f, 0x62, 0xc0])
        );
        assert_eq!(hex("3 00a"), Ok(vec![0x30, 0x0a]));
    }

    #[test]
    fn hex_errors_name_the_place() {
        assert_eq!(
            hex("30 0a\n00 zz"),
            Err("line 2, column 4: 'z' is not a hex digit".into())
        );
        assert!(hex("30 0").unwrap_err().contains("odd number"));
        assert!(hex("0x2f0x62")
            .unwrap_err()
            .contains("'x' is not a hex digit"));
    }

    #[test]
    fn auto_detection() {
        let open_auto = |bytes: &'static [u8]| open(Box::new(bytes), Format::Auto).expect("opens");
        assert!(matches!(open_auto(b"10 0c 00 04"), Input::Hex(_)));
        assert!(matches!(
            open_auto(b"# a comment only\n0x10"),
            Input::Hex(_)
        ));
        assert!(matches!(open_auto(b"\x10\x0c\x00\x04MQTT"), Input::Raw(_)));
        assert!(matches!(open_auto(b""), Input::Raw(_)));
        assert!(matches!(
            open_auto(&[0xD4, 0xC3, 0xB2, 0xA1, 2, 0]),
            Input::Pcap(_)
        ));
        assert!(matches!(
            open_auto(&[0x0A, 0x0D, 0x0D, 0x0A]),
            Input::PcapNg(_)
        ));
        assert!(open(Box::new(&b"10 0c"[..]), Format::Pcap).is_err());
    }
}
