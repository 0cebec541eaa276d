//! `midge decode`: MQTT packets from hex, raw bytes or a pcap / pcapng capture, one line (or
//! one JSON object) per packet, decoded by midge-codec.

mod input;
mod output;
mod reassembly;

use std::collections::HashMap;
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
use reassembly::{Cut, Direction};

pub(crate) const HELP: &str = "\
Input: hex text (whitespace, ':', ',' and 0x prefixes are skipped; '#' starts a comment),
the raw bytes of one MQTT byte stream, or a pcap or pcapng capture, told apart by their first
bytes (--format says which instead). In a capture every TCP connection is reassembled in
sequence order, each direction apart; connections on port 1883 or 8883, or that start with a
CONNECT, are decoded (--port chooses instead). The side that sent CONNECT is the client.

The protocol version of each connection is the one its CONNECT names; until a CONNECT is seen
it is 3.1.1, or what --version says.

Exit codes:
  0  every packet decoded
  1  malformed MQTT: the codec's error and the byte offset are printed. Plain input stops
     there; in a capture that direction of that connection stops and the rest goes on.
     Plain input that ends inside a packet exits with 1 too.
  2  invalid arguments, or input that cannot be read: no such file, a damaged capture, a
     character that is not hex";

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
    /// Most bytes held for one direction of a connection: segments waiting for a missing one
    /// before them, and the packet being read. A stream that needs more is cut, and said so.
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024 * 1024)]
    max_buffer: u32,
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
struct Out<'a> {
    json: bool,
    stdout: io::StdoutLock<'a>,
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

impl Out<'_> {
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
        }
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
fn plain(args: &DecodeArgs, out: &mut Out<'_>, mut input: Plain) -> Result<bool, Failure> {
    let mut version = ProtocolVersion::from(args.protocol);
    let mut decoder = Decoder::new(args.max_buffer);
    let mut hex = HexParser::default();
    let mut line = String::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut bytes = Vec::new();
    loop {
        bytes.clear();
        let more = match &mut input {
            Plain::Hex(reader) => {
                line.clear();
                let n = reader
                    .read_line(&mut line)
                    .map_err(|e| Failure::Input(e.to_string()))?;
                hex.line(&line, &mut bytes).map_err(Failure::Input)?;
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
    /// A direction whose decoding stopped (malformed, cut).
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

/// Counts for the summary on stderr.
#[derive(Debug, Default)]
struct Totals {
    streams: u64,
    skipped: u64,
    packets: u64,
    malformed: u64,
    retransmitted: u64,
}

/// Decodes a capture. `Ok(true)` if it held malformed MQTT.
fn capture(
    args: &DecodeArgs,
    out: &mut Out<'_>,
    reader: Box<dyn Read>,
    pcapng: bool,
) -> Result<bool, Failure> {
    let mut connections: HashMap<(SocketAddr, SocketAddr), Connection> = HashMap::new();
    let mut totals = Totals::default();
    let mut counts = FrameCounts::default();
    let mut failed: Option<io::Error> = None;
    let mut each = |segment: Segment<'_>| {
        if failed.is_some() {
            return;
        }
        if let Err(err) = on_segment(args, out, &mut connections, &mut totals, &segment) {
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
    // What is left, in the order the connections began.
    let mut left: Vec<Connection> = connections.into_values().collect();
    left.sort_by_key(|c| c.stream);
    for connection in &left {
        finish(out, connection, &mut totals)?;
    }
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
    if totals.skipped > 0 {
        summary += &format!(
            "; {} connections skipped as not MQTT (--port decodes them)",
            totals.skipped
        );
    }
    if totals.retransmitted > 0 {
        summary += &format!("; {} retransmitted bytes dropped", totals.retransmitted);
    }
    if counts.unreadable > 0 {
        summary += &format!(
            "; {} frames unreadable (cut short by the snapshot length, damaged, or IP fragments)",
            counts.unreadable
        );
    }
    eprintln!("{summary}");
    Ok(totals.malformed > 0)
}

fn conn_key(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

fn on_segment(
    args: &DecodeArgs,
    out: &mut Out<'_>,
    connections: &mut HashMap<(SocketAddr, SocketAddr), Connection>,
    totals: &mut Totals,
    segment: &Segment<'_>,
) -> io::Result<()> {
    let key = conn_key(segment.src, segment.dst);
    // A new connection on the same addresses: a SYN once the old one has begun.
    let reused = connections.get(&key).is_some_and(|c| {
        let side = usize::from(c.addrs[0] != segment.src);
        segment.syn && !segment.ack && c.dirs[side].offset() > 0
    });
    if reused {
        if let Some(old) = connections.remove(&key) {
            finish(out, &old, totals)?;
        }
    }
    let connection = connections.entry(key).or_insert_with(|| {
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
    connection.last_time = segment.time;
    if segment.payload.is_empty() || connection.decoded == Some(false) {
        return Ok(());
    }
    let delivered = connection.dirs[side].segment(seq, segment.payload);
    if connection.decoded.is_none() {
        // Decided by the first bytes of a direction, in sequence order.
        if delivered.bytes.is_empty() && delivered.cut.is_none() {
            return Ok(());
        }
        let ports = [segment.src.port(), segment.dst.port()];
        let decoded = if args.ports.is_empty() {
            ports.iter().any(|p| MQTT_PORTS.contains(p))
                || delivered.bytes.first().is_some_and(|b| b >> 4 == 1)
        } else {
            ports.iter().any(|p| args.ports.contains(p))
        };
        connection.decoded = Some(decoded);
        if !decoded {
            totals.skipped += 1;
            return Ok(());
        }
    }
    let from = connection.addrs[side];
    let to = connection.addrs[1 - side];
    if connection.stopped[side] {
        return Ok(());
    }
    connection.decoders[side]
        .buf
        .extend_from_slice(&delivered.bytes);
    decode_available(out, connection, side, segment.time, totals)?;
    if let Some(Cut { at, held }) = delivered.cut {
        if !connection.stopped[side] {
            connection.stopped[side] = true;
            let place = capture_place(connection, side, at, segment.time, from, to);
            let message = format!(
                "stream cut: a segment is missing here, and the {held} bytes after it exceed \
                 --max-buffer"
            );
            out.event(&place, "note", &message)?;
        }
    }
    Ok(())
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
    out: &mut Out<'_>,
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
                connection.stopped[side] = true;
                let place = capture_place(connection, side, offset, time, from, to);
                let message = format!("{err}; the rest of this direction is not decoded");
                out.event(&place, "error", &message)?;
            }
            Next::TooLarge(size) => {
                connection.stopped[side] = true;
                let place = capture_place(connection, side, offset, time, from, to);
                let message =
                    format!("stream cut: a packet of {size} bytes, more than --max-buffer");
                out.event(&place, "note", &message)?;
            }
        }
        if connection.stopped[side] {
            connection.decoders[side].buf = BytesMut::new();
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

/// The capture is over for `connection`: says what was left undecoded.
fn finish(out: &mut Out<'_>, connection: &Connection, totals: &mut Totals) -> io::Result<()> {
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
