//! `midge decode`: MQTT packets from hex, raw bytes or a pcap / pcapng capture, one line (or
//! one JSON object) per packet, decoded by midge-codec.

mod input;
mod output;
mod reassembly;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{self, BufRead, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::BytesMut;
use clap::Args;
use midge_codec::{DecodeError, Packet, ProtocolVersion};
use serde_json::{json, Map, Value};

use input::{FrameCounts, HexParser, Input, Segment};
use output::{fields_json, fields_text, packet_fields, type_name, version_name};
use reassembly::{Cut, Direction, Piece};

pub(crate) const HELP: &str = "\
Input: hex text (whitespace, ':', ',' and 0x prefixes are skipped; '#' starts a comment),
the raw bytes of one MQTT byte stream, or a pcap or pcapng capture. --format says which;
without it (auto) the first 512 bytes, or all of a shorter input, decide: a pcap or pcapng
magic number is a capture; text (UTF-8 with no control characters but tab, CR and LF) that
reads as hex, with at least one digit, is hex; anything else is raw bytes. Auto-detection
waits for those 512 bytes or the end of the input: give --format raw or --format hex to
decode a live stream as it comes.

In a capture every TCP connection is reassembled in sequence order, each direction apart;
connections on port 1883 or 8883, or that start with a CONNECT, are decoded (--port chooses
instead). The side that sent CONNECT is the client. A connection leaves memory when it ends
(FIN both ways, or RST). Connections that never end stay until the capture does, so at most
--max-connections are held at once: past that the least recently active one is dropped, with
a note line, and its later segments, if any, count as a new connection. Frames cut short by
the capture's snapshot length (tcpdump -s) are decoded as far as they go: a note says what is
missing, the packet they cut is skipped when its length is known, and otherwise the rest of
that direction is not decoded.

The protocol version of each connection is the one its CONNECT names; until a CONNECT is seen
it is 3.1.1, or what --version says.

Exit codes:
  0  every packet in the input decoded; notes say what a capture lacks (frames cut short,
     segments it missed, a connection that ends inside a packet) and do not change this
  1  some MQTT could not be decoded, and an error line says where: malformed MQTT (the
     codec's error), a packet larger than --max-buffer, or a stream that needed more than
     --max-buffer held. Plain input stops there, and plain input that ends inside a packet
     exits with 1 too; in a capture that direction of that connection stops and the rest
     goes on.
  2  invalid arguments, or input that cannot be read: no such file, a damaged capture, a
     character that is not hex, a hex line longer than 1 MiB (1,048,576 bytes)";

/// Longest line of hex input, newline included.
const MAX_HEX_LINE: usize = 1024 * 1024;

/// Exit code for input that cannot be read.
const EXIT_INPUT: u8 = 2;

/// Ports MQTT brokers listen on: a connection to one of them is decoded, and the side on it is
/// the broker until a CONNECT says otherwise.
const MQTT_PORTS: [u16; 2] = [1883, 8883];

/// `midge decode` options.
#[derive(Debug, Args)]
pub(crate) struct DecodeArgs {
    /// The file to read; `-` (the default) reads standard input.
    #[arg(value_name = "FILE", default_value = "-")]
    input: PathBuf,
    /// What the input is.
    #[arg(long, value_enum, default_value_t = input::Format::Auto)]
    format: input::Format,
    /// The protocol version assumed until a CONNECT names one: 3.1, 3.1.1 or 5.
    #[arg(
        short = 'V',
        long = "version",
        visible_alias = "protocol-version",
        value_enum,
        value_name = "VERSION",
        default_value_t = VersionArg::V3_1_1
    )]
    protocol: VersionArg,
    /// One JSON object per line instead of text.
    #[arg(long)]
    json: bool,
    /// Decode only the TCP connections that have this port at either end (repeatable).
    #[arg(long = "port", value_name = "PORT")]
    ports: Vec<u16>,
    /// Most bytes held for one direction of a connection (or for plain input): segments
    /// waiting for a missing one before them, and the packet being read. A stream that needs
    /// more is cut, with an error line, and the exit code is 1.
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024 * 1024)]
    max_buffer: u32,
    /// Most TCP connections of a capture held at once; past that the least recently active
    /// one is dropped, with a note line.
    #[arg(long, value_name = "COUNT", default_value_t = 65_536,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
}

/// `--version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum VersionArg {
    /// MQTT 3.1.
    #[value(name = "3.1")]
    V3_1,
    /// MQTT 3.1.1.
    #[value(name = "3.1.1")]
    V3_1_1,
    /// MQTT 5.0.
    #[value(name = "5", alias = "5.0")]
    V5,
}

impl From<VersionArg> for ProtocolVersion {
    fn from(v: VersionArg) -> Self {
        match v {
            VersionArg::V3_1 => Self::V3_1,
            VersionArg::V3_1_1 => Self::V3_1_1,
            VersionArg::V5 => Self::V5,
        }
    }
}

pub(crate) fn main(args: DecodeArgs) -> ExitCode {
    let reader: Box<dyn Read> = if args.input.as_os_str() == "-" {
        Box::new(io::stdin())
    } else {
        match File::open(&args.input) {
            Ok(file) => Box::new(file),
            Err(err) => {
                eprintln!("midge decode: cannot read {}: {err}", args.input.display());
                return ExitCode::from(EXIT_INPUT);
            }
        }
    };
    let mut out = Out {
        json: args.json,
        stdout: io::stdout().lock(),
    };
    let result = match input::open(reader, args.format) {
        Ok(Input::Hex(reader)) => plain(&args, &mut out, Plain::Hex(reader)),
        Ok(Input::Raw(reader)) => plain(&args, &mut out, Plain::Raw(reader)),
        Ok(Input::Pcap(reader)) => capture(&args, &mut out, reader, false),
        Ok(Input::PcapNg(reader)) => capture(&args, &mut out, reader, true),
        Err(err) => Err(Failure::Input(err.to_string())),
    };
    match result {
        Ok(false) => ExitCode::SUCCESS,
        Ok(true) => ExitCode::FAILURE,
        Err(Failure::Input(err)) => {
            let _ = out.stdout.flush();
            eprintln!("midge decode: {}: {err}", args.input.display());
            ExitCode::from(EXIT_INPUT)
        }
        // stdout closed (`| head`): nothing more to say.
        Err(Failure::Output(err)) if err.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(Failure::Output(err)) => {
            eprintln!("midge decode: cannot write: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Why decoding stopped early.
#[derive(Debug)]
enum Failure {
    /// The input cannot be read.
    Input(String),
    /// The output cannot be written.
    Output(io::Error),
}

impl From<io::Error> for Failure {
    fn from(err: io::Error) -> Self {
        Self::Output(err)
    }
}

/// Where the lines go.
struct Out<W: Write> {
    json: bool,
    stdout: W,
}

/// Where a packet was found, for its line.
struct Place {
    /// Byte offset in its stream.
    offset: u64,
    /// In a capture: when, which connection, and which way.
    capture: Option<CapturePlace>,
}

struct CapturePlace {
    time: Duration,
    stream: u64,
    from: SocketAddr,
    to: SocketAddr,
    /// Whether the sender is the client, if that is known.
    from_client: Option<bool>,
}

impl<W: Write> Out<W> {
    fn packet(
        &mut self,
        place: &Place,
        packet: &Packet,
        len: usize,
        version: ProtocolVersion,
    ) -> io::Result<()> {
        let fields = packet_fields(packet, version);
        if self.json {
            let mut object = place_json(place);
            object.insert("type".into(), json!(type_name(packet)));
            object.insert("len".into(), json!(len));
            object.insert("version".into(), json!(version_name(version)));
            object.extend(fields_json(&fields));
            self.json_line(object)
        } else {
            let text = fields_text(&fields);
            let space = if text.is_empty() { "" } else { " " };
            let line = format!("{}{}{space}{text}", place_text(place), type_name(packet));
            writeln!(self.stdout, "{line}")
        }
    }

    /// A line about the stream rather than a packet: `error` for malformed MQTT, `note` for
    /// the rest (a stream cut, a capture that ends inside a packet).
    fn event(&mut self, place: &Place, key: &str, message: &str) -> io::Result<()> {
        if self.json {
            let mut object = place_json(place);
            object.insert(key.into(), json!(message));
            self.json_line(object)
        } else {
            writeln!(self.stdout, "{}{key}: {message}", place_text(place))
        }
    }

    fn json_line(&mut self, object: Map<String, Value>) -> io::Result<()> {
        serde_json::to_writer(&mut self.stdout, &Value::Object(object))?;
        writeln!(self.stdout)
    }
}

fn place_json(place: &Place) -> Map<String, Value> {
    let mut object = Map::new();
    if let Some(c) = &place.capture {
        object.insert("time".into(), json!(c.time.as_secs_f64()));
        object.insert("stream".into(), json!(c.stream));
        object.insert("from".into(), json!(c.from.to_string()));
        object.insert("to".into(), json!(c.to.to_string()));
        let direction = match c.from_client {
            Some(true) => "client_to_broker",
            Some(false) => "broker_to_client",
            None => "unknown",
        };
        object.insert("direction".into(), json!(direction));
    }
    object.insert("offset".into(), json!(place.offset));
    object
}

/// `@OFFSET ` for plain input; `HH:MM:SS.micros CLIENT -> BROKER @OFFSET ` (or `CLIENT <-
/// BROKER`) in a capture, the client on the left once it is known.
fn place_text(place: &Place) -> String {
    let Some(c) = &place.capture else {
        return format!("@{} ", place.offset);
    };
    let secs = c.time.as_secs();
    let time = format!(
        "{:02}:{:02}:{:02}.{:06}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60,
        c.time.subsec_micros()
    );
    let (left, arrow, right) = match c.from_client {
        Some(false) => (c.to, "<-", c.from),
        _ => (c.from, "->", c.to),
    };
    format!("{time} {left} {arrow} {right} @{} ", place.offset)
}

/// One MQTT byte stream being decoded: its buffer and where it is.
struct Decoder {
    buf: BytesMut,
    /// Stream offset of `buf`'s first byte.
    offset: u64,
    max: u32,
    /// Bytes still to drop before `buf` fills again: the rest of a packet that a capture did
    /// not hold whole. `offset` is already past them.
    skip: u64,
}

/// What [`Decoder::next`] found.
enum Next {
    Packet(Packet, usize),
    /// More bytes are needed.
    Wait,
    Malformed(DecodeError),
    /// A packet larger than `--max-buffer`.
    TooLarge(u32),
}

impl Decoder {
    fn new(max: u32) -> Self {
        Self {
            buf: BytesMut::new(),
            offset: 0,
            max,
            skip: 0,
        }
    }

    /// Appends bytes that follow in the stream, dropping the ones to skip.
    fn push(&mut self, bytes: &[u8]) {
        let skipped = self.skip.min(bytes.len() as u64);
        self.skip -= skipped;
        self.buf.extend_from_slice(&bytes[skipped as usize..]);
    }

    fn next(&mut self, version: ProtocolVersion) -> Next {
        let len = Packet::peek_len(&self.buf);
        match Packet::decode(&mut self.buf, version, self.max) {
            Ok(Some(packet)) => {
                let len = len.unwrap_or_default();
                Next::Packet(packet, len)
            }
            Ok(None) => Next::Wait,
            Err(DecodeError::PacketTooLarge { size, .. }) => Next::TooLarge(size),
            Err(err) => Next::Malformed(err),
        }
    }

    /// What is left at the end of the input: a packet's first bytes.
    fn leftover(&self) -> Option<String> {
        if self.buf.is_empty() {
            return None;
        }
        Some(match Packet::peek_len(&self.buf) {
            Some(total) => format!(
                "the input ends inside a packet: {} of its {total} bytes",
                self.buf.len()
            ),
            None => format!(
                "the input ends inside a packet's fixed header ({} bytes)",
                self.buf.len()
            ),
        })
    }
}

/// Plain input: hex lines or raw bytes.
enum Plain {
    Hex(Box<dyn BufRead>),
    Raw(Box<dyn Read>),
}

/// Decodes plain input, printing as it comes. `Ok(true)` if it held malformed MQTT or ended
/// inside a packet.
fn plain(args: &DecodeArgs, out: &mut Out<impl Write>, mut input: Plain) -> Result<bool, Failure> {
    let mut version = ProtocolVersion::from(args.protocol);
    let mut decoder = Decoder::new(args.max_buffer);
    let mut hex = HexParser::default();
    let mut line = Vec::new();
    let mut lines = 0usize;
    let mut chunk = vec![0u8; 64 * 1024];
    let mut bytes = Vec::new();
    loop {
        bytes.clear();
        let more = match &mut input {
            Plain::Hex(reader) => {
                line.clear();
                lines += 1;
                let n = reader
                    .by_ref()
                    .take(MAX_HEX_LINE as u64 + 1)
                    .read_until(b'\n', &mut line)
                    .map_err(|e| Failure::Input(e.to_string()))?;
                if n > MAX_HEX_LINE && line.last() != Some(&b'\n') {
                    return Err(Failure::Input(format!(
                        "line {lines} is longer than {MAX_HEX_LINE} bytes: hex input is read a \
                         line at a time, so give long input --format raw or break its lines"
                    )));
                }
                let text = std::str::from_utf8(&line)
                    .map_err(|_| Failure::Input(format!("line {lines} is not UTF-8 text")))?;
                hex.line(text, &mut bytes).map_err(Failure::Input)?;
                n > 0
            }
            Plain::Raw(reader) => {
                let n = match reader.read(&mut chunk) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Failure::Input(e.to_string())),
                };
                bytes.extend_from_slice(&chunk[..n]);
                n > 0
            }
        };
        decoder.buf.extend_from_slice(&bytes);
        loop {
            let place = Place {
                offset: decoder.offset,
                capture: None,
            };
            match decoder.next(version) {
                Next::Packet(packet, len) => {
                    if let Packet::Connect(connect) = &packet {
                        version = connect.protocol;
                    }
                    out.packet(&place, &packet, len, version)?;
                    decoder.offset += len as u64;
                }
                Next::Wait => break,
                Next::Malformed(err) => {
                    out.event(&place, "error", &err.to_string())?;
                    return Ok(true);
                }
                Next::TooLarge(size) => {
                    let message = format!(
                        "a packet of {size} bytes, more than --max-buffer {}",
                        args.max_buffer
                    );
                    out.event(&place, "error", &message)?;
                    return Ok(true);
                }
            }
        }
        if !more {
            break;
        }
    }
    if matches!(input, Plain::Hex(_)) {
        hex.finish().map_err(Failure::Input)?;
    }
    if let Some(message) = decoder.leftover() {
        let place = Place {
            offset: decoder.offset,
            capture: None,
        };
        out.event(&place, "error", &message)?;
        return Ok(true);
    }
    Ok(false)
}

/// One TCP connection of a capture. Side 0 is the sender of the first segment seen.
struct Connection {
    stream: u64,
    addrs: [SocketAddr; 2],
    /// Reassembly of what each side sends.
    dirs: [Direction; 2],
    decoders: [Decoder; 2],
    /// A direction whose decoding stopped (malformed, cut, a gap it cannot get past).
    stopped: [bool; 2],
    /// The side that is the client, once known.
    client: Option<usize>,
    /// The client is known from a CONNECT, not guessed.
    client_sure: bool,
    version: ProtocolVersion,
    /// Whether this connection is decoded; decided at its first data.
    decoded: Option<bool>,
    /// Time of its last segment.
    last_time: Duration,
}

impl Connection {
    /// Stops decoding one direction: what it holds is dropped, and nothing more is kept.
    fn stop(&mut self, side: usize) {
        self.stopped[side] = true;
        self.decoders[side].buf = BytesMut::new();
        self.dirs[side].stop();
    }
}

/// Counts for the summary on stderr.
#[derive(Debug, Default)]
struct Totals {
    streams: u64,
    skipped: u64,
    packets: u64,
    malformed: u64,
    /// Directions cut by `--max-buffer`.
    cut: u64,
    /// Directions with bytes the capture did not hold.
    gaps: u64,
    /// Connections dropped by `--max-connections`.
    dropped: u64,
    retransmitted: u64,
}

/// How many ended connections are remembered, so that their late segments (a last ACK, a
/// retransmission) do not start a connection of their own.
const CLOSED_REMEMBERED: usize = 4096;

type Key = (SocketAddr, SocketAddr);

/// The TCP connections of a capture being decoded. A connection leaves the table when it
/// ends (a FIN each way with every byte before it seen, or a RST), or when it is the least
/// recently active of `--max-connections` open ones and another begins, so what is held is
/// bounded by `--max-connections`, not by the capture's length.
struct Capture<'a> {
    args: &'a DecodeArgs,
    connections: HashMap<Key, Connection>,
    /// The open connections by (time of last segment, stream number), least recently active
    /// first.
    activity: BTreeMap<(Duration, u64), Key>,
    /// Connections that ended, oldest first, at most [`CLOSED_REMEMBERED`].
    closed: HashSet<Key>,
    closed_order: VecDeque<Key>,
    totals: Totals,
}

/// Decodes a capture. `Ok(true)` if some of its MQTT could not be decoded: malformed, or
/// over `--max-buffer`.
fn capture(
    args: &DecodeArgs,
    out: &mut Out<impl Write>,
    reader: Box<dyn Read>,
    pcapng: bool,
) -> Result<bool, Failure> {
    let mut state = Capture::new(args);
    let mut counts = FrameCounts::default();
    let mut failed: Option<io::Error> = None;
    let mut each = |segment: Segment<'_>| {
        if failed.is_some() {
            return;
        }
        if let Err(err) = state.segment(out, &segment) {
            failed = Some(err);
        }
    };
    let read = if pcapng {
        input::pcapng_segments(reader, &mut counts, &mut each)
    } else {
        input::pcap_segments(reader, &mut counts, &mut each)
    };
    if let Some(err) = failed {
        return Err(Failure::Output(err));
    }
    let totals = state.end(out)?;
    out.stdout.flush()?;
    read.map_err(Failure::Input)?;
    let mut summary = format!(
        "midge decode: {} packets in {} TCP connections ({} frames",
        totals.packets, totals.streams, counts.frames
    );
    if counts.not_tcp > 0 {
        summary += &format!(", {} not TCP", counts.not_tcp);
    }
    summary.push(')');
    if totals.malformed > 0 {
        summary += &format!(", {} malformed", totals.malformed);
    }
    if totals.cut > 0 {
        summary += &format!(", {} directions cut by --max-buffer", totals.cut);
    }
    if totals.dropped > 0 {
        summary += &format!(
            "; {} connections dropped before they ended by --max-connections {}",
            totals.dropped, args.max_connections
        );
    }
    if totals.skipped > 0 {
        summary += &format!(
            "; {} connections skipped as not MQTT (--port decodes them)",
            totals.skipped
        );
    }
    if totals.retransmitted > 0 {
        summary += &format!("; {} retransmitted bytes dropped", totals.retransmitted);
    }
    if counts.truncated > 0 {
        summary += &format!(
            "; {} frames cut short by the capture's snapshot length, {} directions with a gap",
            counts.truncated, totals.gaps
        );
    }
    if counts.unreadable > 0 {
        summary += &format!(
            "; {} frames unreadable (cut short inside their headers, damaged, or IP fragments)",
            counts.unreadable
        );
    }
    eprintln!("{summary}");
    Ok(totals.malformed > 0 || totals.cut > 0)
}

fn conn_key(a: SocketAddr, b: SocketAddr) -> Key {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

impl<'a> Capture<'a> {
    fn new(args: &'a DecodeArgs) -> Self {
        Self {
            args,
            connections: HashMap::new(),
            activity: BTreeMap::new(),
            closed: HashSet::new(),
            closed_order: VecDeque::new(),
            totals: Totals::default(),
        }
    }

    /// The capture is over: says what each connection still open left undecoded, in the
    /// order the connections began.
    fn end(mut self, out: &mut Out<impl Write>) -> io::Result<Totals> {
        let mut left: Vec<Connection> = self.connections.into_values().collect();
        left.sort_by_key(|c| c.stream);
        for connection in &left {
            finish(out, connection, &mut self.totals)?;
        }
        Ok(self.totals)
    }

    /// A connection ended: out of the table, remembered a while.
    fn close(&mut self, out: &mut Out<impl Write>, key: Key) -> io::Result<()> {
        if let Some(old) = self.remove(&key) {
            finish(out, &old, &mut self.totals)?;
        }
        if self.closed.insert(key) {
            self.closed_order.push_back(key);
            if self.closed_order.len() > CLOSED_REMEMBERED {
                if let Some(oldest) = self.closed_order.pop_front() {
                    self.closed.remove(&oldest);
                }
            }
        }
        Ok(())
    }

    /// Takes a connection out of the table.
    fn remove(&mut self, key: &Key) -> Option<Connection> {
        let old = self.connections.remove(key)?;
        self.activity.remove(&(old.last_time, old.stream));
        Some(old)
    }

    /// The table is full: the least recently active connection leaves it, with a note.
    fn drop_oldest(&mut self, out: &mut Out<impl Write>) -> io::Result<()> {
        let Some((_, key)) = self.activity.pop_first() else {
            return Ok(());
        };
        let Some(old) = self.connections.remove(&key) else {
            return Ok(());
        };
        self.totals.dropped += 1;
        self.totals.retransmitted += old.dirs[0].retransmitted + old.dirs[1].retransmitted;
        let side = old.client.unwrap_or(0);
        let place = capture_place(
            &old,
            side,
            old.decoders[side].offset,
            old.last_time,
            old.addrs[side],
            old.addrs[1 - side],
        );
        let message = format!(
            "connection dropped: {} connections are open, the most --max-connections holds, \
             and this one was the least recently active; what it still held is not decoded",
            self.args.max_connections
        );
        out.event(&place, "note", &message)
    }

    fn segment(&mut self, out: &mut Out<impl Write>, segment: &Segment<'_>) -> io::Result<()> {
        let args = self.args;
        let key = conn_key(segment.src, segment.dst);
        let data_len = segment.payload.len() as u64 + u64::from(segment.lost);
        if self.closed.contains(&key) {
            if !segment.syn || segment.ack {
                // A late segment of a connection that ended.
                self.totals.retransmitted += segment.payload.len() as u64;
                return Ok(());
            }
            // A new connection on the same addresses.
            self.closed.remove(&key);
        }
        // A new connection on the same addresses: a SYN once the old one has begun.
        let reused = self.connections.get(&key).is_some_and(|c| {
            let side = usize::from(c.addrs[0] != segment.src);
            segment.syn && !segment.ack && c.dirs[side].offset() > 0
        });
        if reused {
            if let Some(old) = self.remove(&key) {
                finish(out, &old, &mut self.totals)?;
            }
        }
        if !self.connections.contains_key(&key) && !segment.syn && data_len == 0 {
            // A bare ACK, FIN or RST of a connection not seen before: nothing to decode.
            return Ok(());
        }
        if !self.connections.contains_key(&key)
            && self.connections.len() >= self.args.max_connections as usize
        {
            self.drop_oldest(out)?;
        }
        let totals = &mut self.totals;
        let connection = self.connections.entry(key).or_insert_with(|| {
            totals.streams += 1;
            let client = if segment.syn {
                // SYN alone from the client; SYN+ACK from the server.
                Some(if segment.ack { 1 } else { 0 })
            } else if MQTT_PORTS.contains(&segment.dst.port()) {
                Some(0)
            } else if MQTT_PORTS.contains(&segment.src.port()) {
                Some(1)
            } else {
                None
            };
            Connection {
                stream: totals.streams - 1,
                addrs: [segment.src, segment.dst],
                dirs: [
                    Direction::new(args.max_buffer as usize),
                    Direction::new(args.max_buffer as usize),
                ],
                decoders: [Decoder::new(args.max_buffer), Decoder::new(args.max_buffer)],
                stopped: [false; 2],
                client,
                client_sure: false,
                version: args.protocol.into(),
                decoded: None,
                last_time: segment.time,
            }
        });
        let side = usize::from(connection.addrs[0] != segment.src);
        if segment.syn {
            connection.dirs[side].syn(segment.seq);
        }
        // The first data byte follows the SYN.
        let seq = if segment.syn {
            segment.seq.wrapping_add(1)
        } else {
            segment.seq
        };
        self.activity
            .remove(&(connection.last_time, connection.stream));
        connection.last_time = segment.time;
        self.activity
            .insert((connection.last_time, connection.stream), key);
        if data_len > 0 && connection.decoded != Some(false) && !connection.stopped[side] {
            data(args, out, connection, side, seq, segment, totals)?;
        }
        if segment.fin {
            connection.dirs[side].fin(seq.wrapping_add(data_len as u32));
        }
        if segment.rst || (connection.dirs[0].finished() && connection.dirs[1].finished()) {
            self.close(out, key)?;
        }
        Ok(())
    }
}

/// A segment with data for one direction of a connection.
fn data(
    args: &DecodeArgs,
    out: &mut Out<impl Write>,
    connection: &mut Connection,
    side: usize,
    seq: u32,
    segment: &Segment<'_>,
    totals: &mut Totals,
) -> io::Result<()> {
    if segment.lost > 0 && !connection.dirs[side].has_gap {
        // Bytes of this direction are missing, whether they are delivered now or held.
        connection.dirs[side].has_gap = true;
        totals.gaps += 1;
    }
    let delivered =
        connection.dirs[side].segment(seq, segment.payload, segment.lost, segment.frame);
    if connection.decoded.is_none() {
        // Decided by the first bytes of a direction, in sequence order.
        if delivered.is_empty() {
            return Ok(());
        }
        let ports = [segment.src.port(), segment.dst.port()];
        let decoded = if args.ports.is_empty() {
            ports.iter().any(|p| MQTT_PORTS.contains(p))
                || delivered.first_byte().is_some_and(|b| b >> 4 == 1)
        } else {
            ports.iter().any(|p| args.ports.contains(p))
        };
        connection.decoded = Some(decoded);
        if !decoded {
            totals.skipped += 1;
            // Nothing of it is kept.
            connection.dirs[0].stop();
            connection.dirs[1].stop();
            return Ok(());
        }
    }
    let from = connection.addrs[side];
    let to = connection.addrs[1 - side];
    for piece in delivered.pieces {
        if connection.stopped[side] {
            break;
        }
        match piece {
            Piece::Bytes(bytes) => {
                connection.decoders[side].push(&bytes);
                decode_available(out, connection, side, segment.time, totals)?;
            }
            Piece::Lost { at, len, frame } => {
                lost(
                    out,
                    connection,
                    side,
                    (at, len, frame),
                    segment.time,
                    totals,
                )?;
            }
        }
    }
    if let Some(Cut { at, held }) = delivered.cut {
        if !connection.stopped[side] {
            connection.stop(side);
            totals.cut += 1;
            let place = capture_place(connection, side, at, segment.time, from, to);
            let message = format!(
                "stream cut: a segment is missing here, and the {held} bytes after it exceed \
                 --max-buffer"
            );
            out.event(&place, "error", &message)?;
        }
    }
    Ok(())
}

/// Bytes of one direction that the capture lost (a frame cut short by its snapshot length),
/// `len` of them from offset `at`, in frame `frame`. Decoding goes on after them when they
/// fall inside one packet whose length is known: that packet is skipped. Otherwise the
/// direction stops.
fn lost(
    out: &mut Out<impl Write>,
    connection: &mut Connection,
    side: usize,
    (at, len, frame): (u64, u64, u64),
    time: Duration,
    totals: &mut Totals,
) -> io::Result<()> {
    let from = connection.addrs[side];
    let to = connection.addrs[1 - side];
    let what = format!(
        "frame {frame} was cut short by the capture's snapshot length: {len} bytes of this \
         stream are missing here"
    );
    if !connection.dirs[side].has_gap {
        connection.dirs[side].has_gap = true;
        totals.gaps += 1;
    }
    let decoder = &mut connection.decoders[side];
    if decoder.skip >= len {
        // Inside a packet already skipped.
        decoder.skip -= len;
        let place = capture_place(connection, side, at, time, from, to);
        return out.event(&place, "note", &format!("{what}, in the packet skipped"));
    }
    let start = decoder.offset;
    let end = Packet::peek_len(&decoder.buf).map(|total| start + total as u64);
    match end {
        Some(end) if decoder.skip == 0 && end >= at + len => {
            decoder.skip = end - (at + len);
            decoder.buf.clear();
            decoder.offset = end;
            let place = capture_place(connection, side, at, time, from, to);
            let message = format!(
                "{what}: the packet at @{start} ({} bytes) is not whole in the capture and is \
                 skipped",
                end - start
            );
            out.event(&place, "note", &message)
        }
        _ => {
            connection.stop(side);
            let place = capture_place(connection, side, at, time, from, to);
            let message = format!(
                "{what}, and where the next packet starts is not known: the rest of this \
                 direction is not decoded"
            );
            out.event(&place, "note", &message)
        }
    }
}

fn capture_place(
    connection: &Connection,
    side: usize,
    offset: u64,
    time: Duration,
    from: SocketAddr,
    to: SocketAddr,
) -> Place {
    Place {
        offset,
        capture: Some(CapturePlace {
            time,
            stream: connection.stream,
            from,
            to,
            from_client: connection.client.map(|c| c == side),
        }),
    }
}

/// Decodes and prints the packets now whole in one direction.
fn decode_available(
    out: &mut Out<impl Write>,
    connection: &mut Connection,
    side: usize,
    time: Duration,
    totals: &mut Totals,
) -> io::Result<()> {
    let from = connection.addrs[side];
    let to = connection.addrs[1 - side];
    while !connection.stopped[side] {
        let offset = connection.decoders[side].offset;
        let version = connection.version;
        match connection.decoders[side].next(version) {
            Next::Packet(packet, len) => {
                learn(connection, side, &packet);
                let place = capture_place(connection, side, offset, time, from, to);
                totals.packets += 1;
                // A CONNECT is decoded by the version it names.
                out.packet(&place, &packet, len, connection.version)?;
                connection.decoders[side].offset += len as u64;
            }
            Next::Wait => break,
            Next::Malformed(err) => {
                totals.malformed += 1;
                connection.stop(side);
                let place = capture_place(connection, side, offset, time, from, to);
                let message = format!("{err}; the rest of this direction is not decoded");
                out.event(&place, "error", &message)?;
            }
            Next::TooLarge(size) => {
                totals.cut += 1;
                connection.stop(side);
                let place = capture_place(connection, side, offset, time, from, to);
                let message = format!(
                    "stream cut: a packet of {size} bytes, more than --max-buffer; the rest of \
                     this direction is not decoded"
                );
                out.event(&place, "error", &message)?;
            }
        }
    }
    Ok(())
}

/// What a packet tells about its connection: the version from a CONNECT, and which side is
/// the client.
fn learn(connection: &mut Connection, side: usize, packet: &Packet) {
    let from_client = match packet {
        Packet::Connect(connect) => {
            connection.version = connect.protocol;
            connection.client = Some(side);
            connection.client_sure = true;
            return;
        }
        Packet::Subscribe(_) | Packet::Unsubscribe(_) | Packet::PingReq => true,
        Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => false,
        _ => return,
    };
    if !connection.client_sure && connection.client.is_none() {
        connection.client = Some(if from_client { side } else { 1 - side });
    }
}

/// `connection` is over (it ended, or the capture did): says what was left undecoded.
fn finish(
    out: &mut Out<impl Write>,
    connection: &Connection,
    totals: &mut Totals,
) -> io::Result<()> {
    for side in 0..2 {
        totals.retransmitted += connection.dirs[side].retransmitted;
        if connection.stopped[side] || connection.decoded != Some(true) {
            continue;
        }
        let from = connection.addrs[side];
        let to = connection.addrs[1 - side];
        let time = connection.last_time;
        if let Some(message) = connection.decoders[side].leftover() {
            let offset = connection.decoders[side].offset;
            let place = capture_place(connection, side, offset, time, from, to);
            out.event(&place, "note", &message)?;
        }
        if let Some(Cut { at, held }) = connection.dirs[side].unfilled() {
            let place = capture_place(connection, side, at, time, from, to);
            let message = format!(
                "a segment is missing here: the {held} bytes captured after it are not decoded"
            );
            out.event(&place, "note", &message)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: DecodeArgs,
    }

    fn args(argv: &[&str]) -> DecodeArgs {
        Cli::try_parse_from(std::iter::once("decode").chain(argv.iter().copied()))
            .unwrap_or_else(|e| panic!("{e}"))
            .args
    }

    const CLIENT: &str = "127.0.0.1:50000";
    const BROKER: &str = "127.0.0.1:1883";

    /// A segment from the client (or the broker) at sequence number `seq`.
    fn seg<'a>(from_client: bool, seq: u32, flags: &str, payload: &'a [u8]) -> Segment<'a> {
        let (client, broker) = (CLIENT.parse().unwrap(), BROKER.parse().unwrap());
        let (src, dst) = if from_client {
            (client, broker)
        } else {
            (broker, client)
        };
        Segment {
            frame: 0,
            time: Duration::ZERO,
            src,
            dst,
            seq,
            syn: flags.contains('S'),
            ack: flags.contains('A'),
            fin: flags.contains('F'),
            rst: flags.contains('R'),
            payload,
            lost: 0,
        }
    }

    fn out() -> Out<Vec<u8>> {
        Out {
            json: false,
            stdout: Vec::new(),
        }
    }

    /// 3.1.1 CONNECT with client id "a".
    const CONNECT: &[u8] = b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01a";
    const CONNACK: &[u8] = b"\x20\x02\x00\x00";

    #[test]
    fn a_connection_leaves_the_table_when_it_ends() {
        let args = args(&[]);
        let mut capture = Capture::new(&args);
        let mut out = out();
        let mut feed = |capture: &mut Capture<'_>, s: Segment<'_>| {
            capture.segment(&mut out, &s).expect("written");
        };
        feed(&mut capture, seg(true, 100, "S", b""));
        feed(&mut capture, seg(false, 500, "SA", b""));
        feed(&mut capture, seg(true, 101, "A", CONNECT));
        feed(&mut capture, seg(false, 501, "A", CONNACK));
        assert_eq!(capture.connections.len(), 1);
        feed(
            &mut capture,
            seg(true, 101 + CONNECT.len() as u32, "FA", b""),
        );
        assert_eq!(capture.connections.len(), 1, "the broker has not closed");
        feed(&mut capture, seg(false, 505, "FA", b""));
        assert!(capture.connections.is_empty());
        // The last ACK, and a retransmission of the CONNACK: no connection of their own.
        feed(&mut capture, seg(true, 115, "A", b""));
        feed(&mut capture, seg(false, 501, "A", CONNACK));
        assert!(capture.connections.is_empty());
        assert_eq!(capture.totals.streams, 1);
        // The same addresses again, ended by a RST.
        feed(&mut capture, seg(true, 9000, "S", b""));
        feed(&mut capture, seg(true, 9001, "A", CONNECT));
        assert_eq!(capture.connections.len(), 1);
        feed(&mut capture, seg(false, 0, "R", b""));
        assert!(capture.connections.is_empty());
        assert_eq!(capture.totals.streams, 2);
        assert_eq!(capture.totals.packets, 3);
    }

    #[test]
    fn a_stopped_direction_keeps_no_bytes() {
        let args = args(&[]);
        let mut capture = Capture::new(&args);
        let mut out = out();
        let key = conn_key(CLIENT.parse().unwrap(), BROKER.parse().unwrap());
        capture
            .segment(&mut out, &seg(true, 100, "S", b""))
            .unwrap();
        // A CONNECT with a reserved flag set: malformed, the client's direction stops.
        let mut bad = CONNECT.to_vec();
        bad[9] = 0x03;
        capture
            .segment(&mut out, &seg(true, 101, "A", &bad))
            .unwrap();
        let text = String::from_utf8(out.stdout.clone()).unwrap();
        assert!(text.contains("error: reserved CONNECT flag set"), "{text}");
        // Segments past a gap, and in order: neither is kept.
        let early = vec![0x30; 4096];
        capture
            .segment(&mut out, &seg(true, 10_000, "A", &early))
            .unwrap();
        capture
            .segment(&mut out, &seg(true, 101 + 15, "A", &early))
            .unwrap();
        let connection = &capture.connections[&key];
        assert!(connection.stopped[0]);
        assert_eq!(connection.dirs[0].held_bytes(), 0);
        assert!(connection.decoders[0].buf.is_empty());
    }

    #[test]
    fn a_connection_not_decoded_keeps_no_bytes() {
        let args = args(&[]);
        let mut capture = Capture::new(&args);
        let mut out = out();
        let (a, b): (SocketAddr, SocketAddr) = (
            "10.0.0.1:40000".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
        );
        let mut http = seg(true, 1, "A", b"GET / HTTP/1.1\r\n");
        (http.src, http.dst) = (a, b);
        capture.segment(&mut out, &http).unwrap();
        let mut early = seg(true, 5000, "A", &[7; 1000]);
        (early.src, early.dst) = (a, b);
        capture.segment(&mut out, &early).unwrap();
        let connection = &capture.connections[&conn_key(a, b)];
        assert_eq!(connection.decoded, Some(false));
        assert_eq!(connection.dirs[0].held_bytes(), 0);
        assert_eq!(capture.totals.skipped, 1);
    }
}
