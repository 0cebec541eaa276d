//! What `midge decode` reads: hex text, raw bytes, or a pcap / pcapng capture, told apart by
//! their first bytes unless `--format` says; and the TCP segments inside a capture.

use std::io::{self, BufRead, Read};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use etherparse::{EtherType, IpNumber, LaxNetSlice, LaxSlicedPacket, TransportSlice};
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::{DataLink, TsResolution};

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

/// How many bytes auto-detection looks at.
pub(super) const PEEK: usize = 512;

/// Settles the format of `reader`. `--format hex` and `--format raw` read nothing ahead;
/// [`Format::Pcap`] reads the magic number, and [`Format::Auto`] up to [`PEEK`] bytes (fewer
/// if the input ends first).
pub(super) fn open(reader: Box<dyn Read>, format: Format) -> io::Result<Input> {
    let mut reader = reader;
    let peek = match format {
        Format::Hex => return Ok(Input::Hex(Box::new(io::BufReader::new(reader)))),
        Format::Raw => return Ok(Input::Raw(reader)),
        Format::Pcap => 4,
        Format::Auto => PEEK,
    };
    let mut head = Vec::with_capacity(peek);
    (&mut reader).take(peek as u64).read_to_end(&mut head)?;
    let magic: Option<[u8; 4]> = head.get(..4).and_then(|m| m.try_into().ok());
    let is_pcap = magic.is_some_and(|m| PCAP_MAGICS.contains(&m));
    let is_pcapng = magic == Some(PCAPNG_MAGIC);
    let whole_input = head.len() < peek;
    let hex =
        format == Format::Auto && !is_pcap && !is_pcapng && looks_like_hex(&head, whole_input);
    let whole: Box<dyn Read> = Box::new(io::Cursor::new(head).chain(reader));
    Ok(match format {
        Format::Pcap | Format::Auto if is_pcap => Input::Pcap(whole),
        Format::Pcap | Format::Auto if is_pcapng => Input::PcapNg(whole),
        Format::Pcap => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a pcap or pcapng capture (no magic number)",
            ))
        }
        _ if hex => Input::Hex(Box::new(io::BufReader::new(whole))),
        _ => Input::Raw(whole),
    })
}

/// True if `head`, the input's first bytes, is hex text: UTF-8 without control characters
/// other than tab, CR and LF, that [`HexParser`] reads without an error and that holds at
/// least one digit; when `head` is the `whole` input, with an even number of digits. Raw MQTT fails this at once: every stream starts with a packet type
/// byte (0x10 to 0xF0, with flags), and where that byte is an ASCII digit (a PUBLISH, 0x30
/// to 0x3F) the lengths that follow it hold control bytes or digits that are not hex.
fn looks_like_hex(head: &[u8], whole: bool) -> bool {
    // `head` may end inside a character: judge what is whole.
    let text = match std::str::from_utf8(head) {
        Ok(text) => text,
        Err(err) if err.error_len().is_none() => {
            std::str::from_utf8(&head[..err.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\r' | '\n'))
    {
        return false;
    }
    let mut parser = HexParser::default();
    let mut bytes = Vec::new();
    for line in text.split_inclusive('\n') {
        if parser.line(line, &mut bytes).is_err() {
            return false;
        }
    }
    if whole && parser.finish().is_err() {
        return false;
    }
    // Otherwise the last line may be cut short by the peek: an odd digit is no error yet.
    !bytes.is_empty() || parser.high.is_some()
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
    /// The frame's number in the capture, from 1.
    pub(super) frame: u64,
    /// Capture time, since the Unix epoch.
    pub(super) time: Duration,
    pub(super) src: SocketAddr,
    pub(super) dst: SocketAddr,
    pub(super) seq: u32,
    pub(super) syn: bool,
    pub(super) ack: bool,
    pub(super) fin: bool,
    pub(super) rst: bool,
    /// The payload bytes the capture holds.
    pub(super) payload: &'a [u8],
    /// Payload bytes that followed them on the wire but are not in the capture: the frame
    /// was cut short by the capture's snapshot length.
    pub(super) lost: u32,
}

/// What the capture held besides TCP segments, to say at the end.
#[derive(Debug, Default)]
pub(super) struct FrameCounts {
    pub(super) frames: u64,
    /// Frames that are not TCP over IP (ARP, UDP, ICMP...).
    pub(super) not_tcp: u64,
    /// Frames that could not be read: cut short inside their headers, damaged, or IP
    /// fragments.
    pub(super) unreadable: u64,
    /// TCP segments whose payload the capture cut short (its snapshot length).
    pub(super) truncated: u64,
}

/// One frame as the capture stores it.
struct Frame<'a> {
    time: Duration,
    data: &'a [u8],
    /// Its length on the wire; more than `data` holds when the capture cut it short.
    wire_len: u32,
}

/// Calls `each` with every TCP segment of a pcap capture, in capture order.
pub(super) fn pcap_segments(
    reader: Box<dyn Read>,
    counts: &mut FrameCounts,
    mut each: impl FnMut(Segment<'_>),
) -> Result<(), String> {
    let mut reader = PcapReader::new(reader).map_err(|e| format!("not a pcap capture: {e}"))?;
    let header = reader.header();
    // Raw records: pcap-file's checked ones refuse a frame longer on the wire than the
    // snapshot length, which is every frame the snapshot length cut short.
    while let Some(packet) = reader.next_raw_packet() {
        let packet = packet.map_err(|e| format!("capture damaged: {e}"))?;
        let frac = match header.ts_resolution {
            TsResolution::MicroSecond => u64::from(packet.ts_frac) * 1_000,
            TsResolution::NanoSecond => u64::from(packet.ts_frac),
        };
        let time = Duration::from_secs(u64::from(packet.ts_sec)) + Duration::from_nanos(frac);
        let frame_data = Frame {
            time,
            data: &packet.data,
            wire_len: packet.orig_len,
        };
        frame(header.datalink, &frame_data, counts, &mut each)?;
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
                let frame_data = Frame {
                    time,
                    data: &epb.data,
                    wire_len: epb.original_len,
                };
                frame(link, &frame_data, counts, &mut each)?;
            }
            Block::SimplePacket(spb) => {
                let Some(&(link, _)) = interfaces.first() else {
                    return Err("capture damaged: a packet before any interface".into());
                };
                let frame_data = Frame {
                    time: Duration::ZERO,
                    data: &spb.data,
                    wire_len: spb.original_len,
                };
                frame(link, &frame_data, counts, &mut each)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Finds the TCP segment in one captured frame. Frames cut short by the snapshot length are
/// read as far as they go.
fn frame(
    link: DataLink,
    f: &Frame<'_>,
    counts: &mut FrameCounts,
    each: &mut impl FnMut(Segment<'_>),
) -> Result<(), String> {
    counts.frames += 1;
    let data = f.data;
    let sliced = match link {
        DataLink::ETHERNET => LaxSlicedPacket::from_ethernet(data).ok(),
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => LaxSlicedPacket::from_ip(data).ok(),
        // SLL: protocol type at bytes 14 and 15, 16 bytes in all.
        DataLink::LINUX_SLL => match (data.get(14..16), data.get(16..)) {
            (Some(&[hi, lo]), Some(rest)) => Some(LaxSlicedPacket::from_ether_type(
                EtherType(u16::from_be_bytes([hi, lo])),
                rest,
            )),
            _ => None,
        },
        // SLL2: protocol type (2 bytes) first, 20 bytes in all.
        DataLink::LINUX_SLL2 => match (data.get(..2), data.get(20..)) {
            (Some(&[hi, lo]), Some(rest)) => Some(LaxSlicedPacket::from_ether_type(
                EtherType(u16::from_be_bytes([hi, lo])),
                rest,
            )),
            _ => None,
        },
        // BSD loopback: a 4-byte address family, then IP.
        DataLink::NULL | DataLink::LOOP => data
            .get(4..)
            .and_then(|rest| LaxSlicedPacket::from_ip(rest).ok()),
        other => return Err(format!("link type {other:?} is not supported")),
    };
    let Some(sliced) = sliced else {
        counts.unreadable += 1;
        return Ok(());
    };
    // With the IP payload's length as the IP header declares it (0 where it cannot say:
    // an IPv6 jumbogram).
    let (src, dst, payload, declared): (IpAddr, IpAddr, _, u32) = match &sliced.net {
        Some(LaxNetSlice::Ipv4(ip)) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
            ip.payload(),
            u32::from(ip.header().total_len()).saturating_sub(u32::from(ip.header().ihl()) * 4),
        ),
        Some(LaxNetSlice::Ipv6(ip)) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
            ip.payload(),
            u32::from(ip.header().payload_length())
                .saturating_sub(ip.extensions().slice().len() as u32),
        ),
        _ => {
            counts.not_tcp += 1;
            return Ok(());
        }
    };
    if payload.fragmented {
        counts.unreadable += 1;
        return Ok(());
    }
    let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else {
        if payload.ip_number == IpNumber::TCP {
            // The TCP header is damaged or cut short.
            counts.unreadable += 1;
        } else {
            counts.not_tcp += 1;
        }
        return Ok(());
    };
    // The IP payload goes on past the frame's captured bytes: what is missing is TCP payload,
    // as long as the IP header says (the frame's length on the wire may hold a link trailer,
    // or be anything in a hostile capture); without that, the frame's length, at most what
    // one IP packet can carry.
    let lost = if payload.incomplete {
        let captured = tcp.payload().len() as u32;
        let tcp_payload = declared.saturating_sub(tcp.header_len() as u32);
        if declared > 0 {
            tcp_payload.saturating_sub(captured)
        } else {
            f.wire_len.saturating_sub(data.len() as u32).min(65_535)
        }
    } else {
        0
    };
    if lost > 0 {
        counts.truncated += 1;
    }
    each(Segment {
        frame: counts.frames,
        time: f.time,
        src: SocketAddr::new(src, tcp.source_port()),
        dst: SocketAddr::new(dst, tcp.destination_port()),
        seq: tcp.sequence_number(),
        syn: tcp.syn(),
        ack: tcp.ack(),
        fin: tcp.fin(),
        rst: tcp.rst(),
        payload: tcp.payload(),
        lost,
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
        // A PUBLISH's first byte is an ASCII digit: what follows decides.
        assert!(matches!(open_auto(b"0#\x00\x03a/b"), Input::Raw(_)));
        assert!(matches!(open_auto(b"2\t\x00\x039/911ok"), Input::Raw(_)));
        assert!(matches!(open_auto(b"0\n"), Input::Raw(_)));
        assert!(matches!(open_auto(b"30 0a zz"), Input::Raw(_)));
        // Cut inside a character by the peek: still text.
        let long = b"c0 00 # \xc3\xa9t\xc3\xa9\n".repeat(60);
        assert!(looks_like_hex(&long[..14 * 36 + 9], false));
        // A whole input must have whole bytes; a peek may end between two digits.
        assert!(!looks_like_hex(b"c0 0", true));
        assert!(looks_like_hex(b"c0 0", false));
    }
}
