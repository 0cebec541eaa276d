//! How `midge sub` and `midge rr` print a message: payload only, `-v`, or mosquitto_sub's
//! `-F` output format; `-N`. `%` codes show the message (with flags, width and precision as
//! mosquitto_sub takes them), `@` codes the time it arrived (strftime conversions, and `@N`
//! for nanoseconds), `\` escapes the characters that are hard to type.

use std::io::{self, Write};

use chrono::{DateTime, Local};
use clap::Args;
use midge_client::codec::properties::id;
use midge_client::codec::{PayloadFormat, PublishProperties};
use midge_client::{Message, QoS};

use super::Failure;

/// The output options `midge sub` and `midge rr` share.
#[derive(Debug, Clone, Args)]
pub(crate) struct Output {
    /// Print the topic, a space, then the payload (`(null)` for an empty one).
    #[arg(short, long)]
    pub(crate) verbose: bool,
    /// Output format, as mosquitto_sub's (overrides -v). Message: %t topic, %p payload, %x
    /// and %X payload in hex, %l payload length, %q QoS, %r retain flag, %m message id, and
    /// the 5.0 properties %A topic alias, %C content type, %D correlation data, %E message
    /// expiry interval, %F payload format indicator, %P user properties (key:value ...), %R
    /// response topic, %S subscription identifier. Helpers: %I ISO 8601 time, %U Unix time
    /// with nanoseconds, %j JSON with the payload as a string, %J JSON with the payload as
    /// JSON, %% a %. Flags, width and precision as printf's: %-20t, %08x, %.10t. Time:
    /// @ and a strftime conversion (@Y-@m-@d @H:@M:@S), @N nanoseconds, @@ a @. Escapes:
    /// \\ \0 \a \e \n \r \t \v.
    #[arg(short = 'F', long = "format", value_parser = Format::parse)]
    pub(crate) format: Option<Format>,
    /// With %j or %J: indented JSON.
    #[arg(long)]
    pub(crate) pretty: bool,
    /// No end of line after each message.
    #[arg(short = 'N')]
    pub(crate) no_newline: bool,
}

impl Output {
    /// Writes a message as mosquitto_sub does: in the `-F` format, or the payload (with `-v`
    /// the topic and a space first, and `(null)` for an empty payload); then a newline unless
    /// `-N`. `chosen_ids`: whether the user chose a subscription identifier (`-D subscribe
    /// subscription-identifier`), without which `%S` shows none (midge-client gives
    /// subscriptions identifiers of its own).
    pub(crate) fn print(
        &self,
        out: &mut impl Write,
        message: &Message,
        chosen_ids: bool,
    ) -> io::Result<()> {
        if let Some(format) = &self.format {
            format.write(out, &View::of(message, chosen_ids), self.pretty)?;
        } else {
            if self.verbose {
                out.write_all(message.topic().as_bytes())?;
                out.write_all(b" ")?;
                if message.payload().is_empty() {
                    out.write_all(b"(null)")?;
                }
            }
            out.write_all(message.payload())?;
        }
        if !self.no_newline {
            out.write_all(b"\n")?;
        }
        Ok(())
    }
}

/// A failed write to stdout: a reader that went away (`| head`) ends the run normally.
pub(crate) fn stdout_failed(err: &io::Error) -> Result<(), Failure> {
    if err.kind() == io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(Failure::runtime(format!("cannot write to stdout: {err}")))
    }
}

/// The parts of a message a format can show.
pub(crate) struct View<'a> {
    pub(crate) topic: &'a str,
    pub(crate) payload: &'a [u8],
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    /// The Packet Identifier (`None` for QoS 0).
    pub(crate) packet_id: Option<u16>,
    pub(crate) properties: &'a PublishProperties,
    /// Whether to show its Subscription Identifiers: only when the user chose them, as
    /// midge-client gives subscriptions identifiers of its own.
    pub(crate) subscription_ids: bool,
    /// When it arrived.
    pub(crate) time: DateTime<Local>,
}

impl<'a> View<'a> {
    pub(crate) fn of(message: &'a Message, subscription_ids: bool) -> Self {
        Self {
            subscription_ids,
            topic: message.topic(),
            payload: message.payload(),
            qos: message.qos(),
            retain: message.retain(),
            packet_id: message.packet_id(),
            properties: message.properties(),
            time: Local::now(),
        }
    }
}

/// A `%` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Code {
    TopicAlias,
    ContentType,
    CorrelationData,
    MessageExpiry,
    PayloadFormat,
    Iso8601,
    Json { quoted: bool },
    Length,
    MessageId,
    UserProperties,
    Payload,
    Qos,
    ResponseTopic,
    Retain,
    SubscriptionId,
    Topic,
    UnixTime,
    Hex { upper: bool },
}

impl Code {
    fn of(c: char) -> Option<Self> {
        Some(match c {
            'A' => Self::TopicAlias,
            'C' => Self::ContentType,
            'D' => Self::CorrelationData,
            'E' => Self::MessageExpiry,
            'F' => Self::PayloadFormat,
            'I' => Self::Iso8601,
            'j' => Self::Json { quoted: true },
            'J' => Self::Json { quoted: false },
            'l' => Self::Length,
            'm' => Self::MessageId,
            'P' => Self::UserProperties,
            'p' => Self::Payload,
            'q' => Self::Qos,
            'R' => Self::ResponseTopic,
            'r' => Self::Retain,
            'S' => Self::SubscriptionId,
            't' => Self::Topic,
            'U' => Self::UnixTime,
            'x' => Self::Hex { upper: false },
            'X' => Self::Hex { upper: true },
            _ => return None,
        })
    }

    /// Whether a field width applies (mosquitto_sub ignores it for the others).
    fn takes_width(self) -> bool {
        !matches!(
            self,
            Self::CorrelationData
                | Self::Json { .. }
                | Self::UserProperties
                | Self::Qos
                | Self::Retain
                | Self::UnixTime
        )
    }

    /// Whether a precision (a maximum width) applies.
    fn takes_precision(self) -> bool {
        matches!(
            self,
            Self::ContentType | Self::Iso8601 | Self::ResponseTopic | Self::Topic
        )
    }

    /// Whether the `0` flag pads with zeros rather than blanks.
    fn takes_zeros(self) -> bool {
        matches!(
            self,
            Self::TopicAlias
                | Self::MessageExpiry
                | Self::PayloadFormat
                | Self::Length
                | Self::MessageId
                | Self::SubscriptionId
                | Self::Hex { .. }
                | Self::Payload
        )
    }
}

/// Flags, width and precision of a `%` code.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Spec {
    left: bool,
    zeros: bool,
    width: usize,
    precision: Option<usize>,
}

/// One piece of a format.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(Vec<u8>),
    Field(Code, Spec),
    /// `@X`: the arrival time through strftime's `%X`.
    Time(char),
    /// `@N`: nanoseconds of the arrival time's second.
    Nanos,
}

/// A parsed `-F` format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Format {
    pieces: Vec<Piece>,
}

/// The strftime conversions the C library offers in every locale; `@` with any other
/// character prints `%` and that character, as strftime does.
const STRFTIME: &str = "aAbBcCdDeFgGhHIjklmMnpPrRsStTuUVwWxXyYzZ%";

impl Format {
    /// Parses a format; the error says which specifier or escape is wrong.
    pub(crate) fn parse(format: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut text = Vec::new();
        let mut chars = format.chars().peekable();
        let incomplete = || "incomplete format specifier".to_owned();
        while let Some(c) = chars.next() {
            let piece = match c {
                '%' => {
                    let mut spec = Spec::default();
                    if chars.next_if_eq(&'-').is_some() {
                        spec.left = true;
                    }
                    while chars.next_if_eq(&'0').is_some() {
                        spec.zeros = true;
                    }
                    let digits = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
                        let mut n: usize = 0;
                        while let Some(d) = chars.next_if(char::is_ascii_digit) {
                            n = n
                                .saturating_mul(10)
                                .saturating_add(d.to_digit(10).unwrap_or(0) as usize);
                        }
                        n
                    };
                    spec.width = digits(&mut chars);
                    if chars.next_if_eq(&'.').is_some() {
                        spec.precision = Some(digits(&mut chars));
                    }
                    match chars.next() {
                        None => return Err(incomplete()),
                        Some('%') => {
                            text.push(b'%');
                            continue;
                        }
                        Some(c) => match Code::of(c) {
                            Some(code) => Piece::Field(code, spec),
                            None => return Err(format!("invalid format specifier '{c}'")),
                        },
                    }
                }
                '@' => match chars.next() {
                    None => return Err(incomplete()),
                    Some('@') => {
                        text.push(b'@');
                        continue;
                    }
                    Some('N') => Piece::Nanos,
                    Some(c) => Piece::Time(c),
                },
                '\\' => {
                    let byte = match chars.next() {
                        None => return Err("incomplete escape specifier".into()),
                        Some('\\') => b'\\',
                        Some('0') => 0,
                        Some('a') => 0x07,
                        Some('e') => 0x1B,
                        Some('n') => b'\n',
                        Some('r') => b'\r',
                        Some('t') => b'\t',
                        Some('v') => 0x0B,
                        Some(other) => return Err(format!("invalid escape specifier '{other}'")),
                    };
                    text.push(byte);
                    continue;
                }
                c => {
                    let mut buf = [0; 4];
                    text.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    continue;
                }
            };
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(piece);
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Self { pieces })
    }

    /// Writes `message` in this format (without the end of line); `pretty` (`--pretty`):
    /// indented JSON for `%j` and `%J`. A `%J` payload that is not JSON is said on stderr,
    /// and that code prints nothing.
    pub(crate) fn write(
        &self,
        out: &mut impl Write,
        message: &View<'_>,
        pretty: bool,
    ) -> io::Result<()> {
        let mut field = Vec::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.write_all(text)?,
                Piece::Nanos => write!(out, "{:09}", message.time.timestamp_subsec_nanos())?,
                Piece::Time(c) => out.write_all(strftime(&message.time, *c).as_bytes())?,
                // mosquitto_sub pads every absent property to its width but this one.
                Piece::Field(Code::ResponseTopic, _)
                    if message.properties.response_topic().is_none() => {}
                Piece::Field(code, spec) => {
                    field.clear();
                    value(&mut field, *code, message, pretty);
                    pad(out, &field, *code, spec)?;
                }
            }
        }
        Ok(())
    }
}

/// `@c` as strftime's `%c` would print it in the C locale.
fn strftime(time: &DateTime<Local>, c: char) -> String {
    match c {
        // Not in chrono: the zone's abbreviation is not known, only its offset.
        'Z' if time.offset().local_minus_utc() == 0 => "UTC".to_owned(),
        'Z' => time.format("%:z").to_string(),
        c if STRFTIME.contains(c) => time.format(&format!("%{c}")).to_string(),
        c => format!("%{c}"),
    }
}

/// Writes `field` with the flags, width and precision that apply to `code`.
fn pad(out: &mut impl Write, field: &[u8], code: Code, spec: &Spec) -> io::Result<()> {
    let field = match spec.precision {
        Some(max) if code.takes_precision() => &field[..field.len().min(max)],
        _ => field,
    };
    let width = if code.takes_width() { spec.width } else { 0 };
    let fill = width.saturating_sub(field.len());
    if fill == 0 {
        return out.write_all(field);
    }
    if spec.left {
        out.write_all(field)?;
        out.write_all(&vec![b' '; fill])
    } else {
        let byte = if spec.zeros && code.takes_zeros() {
            b'0'
        } else {
            b' '
        };
        out.write_all(&vec![byte; fill])?;
        out.write_all(field)
    }
}

/// The value of `code` for `message`, unpadded; nothing for a property it does not carry.
fn value(out: &mut Vec<u8>, code: Code, message: &View<'_>, pretty: bool) {
    let properties = message.properties;
    match code {
        Code::TopicAlias => {
            if let Some(alias) = properties.topic_alias {
                out.extend_from_slice(alias.to_string().as_bytes());
            }
        }
        Code::ContentType => {
            if let Some(value) = properties.content_type() {
                out.extend_from_slice(value.as_str().as_bytes());
            }
        }
        Code::CorrelationData => {
            if let Some(value) = properties.correlation_data() {
                out.extend_from_slice(&value);
            }
        }
        Code::MessageExpiry => {
            if let Some(seconds) = properties.message_expiry_interval {
                out.extend_from_slice(seconds.to_string().as_bytes());
            }
        }
        Code::PayloadFormat => {
            if let Some(format) = properties.payload_format_indicator {
                out.extend_from_slice(format_indicator(format).to_string().as_bytes());
            }
        }
        Code::Iso8601 => out.extend_from_slice(
            message
                .time
                .format("%Y-%m-%dT%H:%M:%S%z")
                .to_string()
                .as_bytes(),
        ),
        Code::Json { quoted } => {
            if let Err(()) = json(out, message, quoted, pretty) {
                out.clear();
                eprintln!(
                    "Error: Message payload is not valid JSON on topic {}.",
                    message.topic
                );
            }
        }
        Code::Length => out.extend_from_slice(message.payload.len().to_string().as_bytes()),
        Code::MessageId => {
            out.extend_from_slice(message.packet_id.unwrap_or(0).to_string().as_bytes())
        }
        Code::UserProperties => {
            for (i, (key, value)) in properties.user_properties().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                out.extend_from_slice(key.as_str().as_bytes());
                out.push(b':');
                out.extend_from_slice(value.as_str().as_bytes());
            }
        }
        Code::Payload => out.extend_from_slice(message.payload),
        Code::Qos => out.extend_from_slice((message.qos as u8).to_string().as_bytes()),
        Code::ResponseTopic => {
            if let Some(value) = properties.response_topic() {
                out.extend_from_slice(value.as_str().as_bytes());
            }
        }
        Code::Retain => out.push(if message.retain { b'1' } else { b'0' }),
        Code::SubscriptionId => {
            let first = properties.subscription_identifiers().next();
            if let Some(id) = first.filter(|_| message.subscription_ids) {
                out.extend_from_slice(id.get().to_string().as_bytes());
            }
        }
        Code::Topic => out.extend_from_slice(message.topic.as_bytes()),
        Code::UnixTime => out.extend_from_slice(
            format!(
                "{}.{:09}",
                message.time.timestamp(),
                message.time.timestamp_subsec_nanos()
            )
            .as_bytes(),
        ),
        Code::Hex { upper } => {
            for byte in message.payload {
                let hex = if upper {
                    format!("{byte:02X}")
                } else {
                    format!("{byte:02x}")
                };
                out.extend_from_slice(hex.as_bytes());
            }
        }
    }
}

fn format_indicator(format: PayloadFormat) -> u8 {
    match format {
        PayloadFormat::Utf8 => 1,
        _ => 0,
    }
}

/// JSON in the shape of cJSON's output, which mosquitto_sub prints: compact, or with tabs.
struct Json<'a> {
    out: &'a mut Vec<u8>,
    pretty: bool,
    /// Nesting: the current object's or array's depth.
    depth: usize,
    /// Whether the current object or array has an entry yet.
    first: bool,
}

impl Json<'_> {
    fn open_object(&mut self) {
        self.out.push(b'{');
        self.depth += 1;
        self.first = true;
    }

    /// Starts an entry: the comma, the indentation, the key.
    fn key(&mut self, key: &[u8]) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        if self.pretty {
            self.out.push(b'\n');
            self.tabs(self.depth);
        }
        string(self.out, key);
        self.out.push(b':');
        if self.pretty {
            self.out.push(b'\t');
        }
    }

    fn close_object(&mut self) {
        self.depth -= 1;
        if self.pretty {
            self.out.push(b'\n');
            self.tabs(self.depth);
        }
        self.out.push(b'}');
        self.first = false;
    }

    fn tabs(&mut self, n: usize) {
        self.out.extend(std::iter::repeat_n(b'\t', n));
    }

    fn number(&mut self, key: &str, n: impl std::fmt::Display) {
        self.key(key.as_bytes());
        self.out.extend_from_slice(n.to_string().as_bytes());
    }

    fn string(&mut self, key: &str, value: &[u8]) {
        self.key(key.as_bytes());
        string(self.out, value);
    }
}

/// A JSON string: `"`, `\` and control characters escaped, every other byte as it is (as
/// mosquitto_sub, which does not check that the bytes are UTF-8).
fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for &b in bytes {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0C => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1F => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            b => out.push(b),
        }
    }
    out.push(b'"');
}

/// `%j` (`quoted`: the payload as a JSON string) or `%J` (the payload is JSON and is
/// written as such); `Err` if a `%J` payload is not JSON.
fn json(out: &mut Vec<u8>, message: &View<'_>, quoted: bool, pretty: bool) -> Result<(), ()> {
    let time = &message.time;
    let mut json = Json {
        out,
        pretty,
        depth: 0,
        first: true,
    };
    json.open_object();
    let tst = format!(
        "{}.{:06}Z{}",
        time.format("%Y-%m-%dT%H:%M:%S"),
        time.timestamp_subsec_micros(),
        time.format("%z")
    );
    json.string("tst", tst.as_bytes());
    json.string("topic", message.topic.as_bytes());
    json.number("qos", message.qos as u8);
    json.number("retain", u8::from(message.retain));
    json.number("payloadlen", message.payload.len());
    if message.qos != QoS::AtMostOnce {
        json.number("mid", message.packet_id.unwrap_or(0));
    }
    let properties = message.properties;
    let mut codes = properties.identifiers();
    if !message.subscription_ids {
        codes.retain(|&code| code != id::SUBSCRIPTION_IDENTIFIER);
    }
    if !codes.is_empty() {
        json.key(b"properties");
        json.open_object();
        let mut ids = properties.subscription_identifiers();
        let mut users_done = false;
        for code in codes {
            match code {
                id::PAYLOAD_FORMAT_INDICATOR => {
                    if let Some(format) = properties.payload_format_indicator {
                        json.number("payload-format-indicator", format_indicator(format));
                    }
                }
                id::MESSAGE_EXPIRY_INTERVAL => {
                    if let Some(seconds) = properties.message_expiry_interval {
                        json.number("message-expiry-interval", seconds);
                    }
                }
                id::TOPIC_ALIAS => {
                    if let Some(alias) = properties.topic_alias {
                        json.number("topic-alias", alias);
                    }
                }
                id::CONTENT_TYPE => {
                    if let Some(value) = properties.content_type() {
                        json.string("content-type", value.as_str().as_bytes());
                    }
                }
                id::RESPONSE_TOPIC => {
                    if let Some(value) = properties.response_topic() {
                        json.string("response-topic", value.as_str().as_bytes());
                    }
                }
                id::CORRELATION_DATA => {
                    if let Some(value) = properties.correlation_data() {
                        json.string("correlation-data", &value);
                    }
                }
                id::SUBSCRIPTION_IDENTIFIER => {
                    if let Some(id) = ids.next() {
                        json.number("subscription-identifier", id.get());
                    }
                }
                id::USER_PROPERTY if !users_done => {
                    users_done = true;
                    json.key(b"user-properties");
                    json.open_object();
                    for (key, value) in properties.user_properties() {
                        json.string(key.as_str(), value.as_str().as_bytes());
                    }
                    json.close_object();
                }
                _ => {}
            }
        }
        json.close_object();
    }
    json.key(b"payload");
    if message.payload.is_empty() {
        json.out.extend_from_slice(b"null");
    } else if quoted {
        string(json.out, message.payload);
    } else {
        if serde_json::from_slice::<serde::de::IgnoredAny>(message.payload).is_err() {
            return Err(());
        }
        let depth = json.depth;
        let mut payload = Reformat {
            input: message.payload,
            at: 0,
            pretty,
        };
        payload.value(json.out, depth);
    }
    json.close_object();
    Ok(())
}

/// Writes JSON that is known to be valid in the shape of cJSON's output. Strings and
/// numbers are kept as written.
struct Reformat<'a> {
    input: &'a [u8],
    at: usize,
    pretty: bool,
}

impl Reformat<'_> {
    fn skip_space(&mut self) {
        while self
            .input
            .get(self.at)
            .is_some_and(|b| b" \t\r\n".contains(b))
        {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.input.get(self.at).copied()
    }

    /// Writes the value at the cursor; `depth` is the nesting of the value's container.
    fn value(&mut self, out: &mut Vec<u8>, depth: usize) {
        match self.peek() {
            Some(b'{') => {
                self.at += 1;
                out.push(b'{');
                let mut first = true;
                while let Some(b) = self.peek() {
                    self.at += 1;
                    match b {
                        b'}' => break,
                        b',' => continue,
                        _ => {
                            self.at -= 1;
                            if !first {
                                out.push(b',');
                            }
                            first = false;
                            if self.pretty {
                                out.push(b'\n');
                                out.extend(std::iter::repeat_n(b'\t', depth + 1));
                            }
                            self.value(out, depth + 1);
                            // The colon.
                            let _ = self.peek();
                            self.at += 1;
                            out.push(b':');
                            if self.pretty {
                                out.push(b'\t');
                            }
                            self.value(out, depth + 1);
                        }
                    }
                }
                if self.pretty {
                    out.push(b'\n');
                    out.extend(std::iter::repeat_n(b'\t', depth));
                }
                out.push(b'}');
            }
            Some(b'[') => {
                self.at += 1;
                out.push(b'[');
                let mut first = true;
                while let Some(b) = self.peek() {
                    self.at += 1;
                    match b {
                        b']' => break,
                        b',' => continue,
                        _ => {
                            self.at -= 1;
                            if !first {
                                out.extend_from_slice(if self.pretty { b", " } else { b"," });
                            }
                            first = false;
                            self.value(out, depth + 1);
                        }
                    }
                }
                out.push(b']');
            }
            Some(b'"') => {
                let start = self.at;
                self.at += 1;
                while let Some(&b) = self.input.get(self.at) {
                    self.at += 1;
                    match b {
                        b'\\' => self.at += 1,
                        b'"' => break,
                        _ => {}
                    }
                }
                out.extend_from_slice(&self.input[start..self.at.min(self.input.len())]);
            }
            Some(_) => {
                let start = self.at;
                while self
                    .input
                    .get(self.at)
                    .is_some_and(|b| !b" \t\r\n,]}:".contains(b))
                {
                    self.at += 1;
                }
                out.extend_from_slice(&self.input[start..self.at]);
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use midge_client::codec::ByteStr;

    fn properties() -> PublishProperties {
        let mut properties = PublishProperties::default();
        properties
            .push_user_property(ByteStr::from("k"), ByteStr::from("v"))
            .expect("fits");
        properties
            .push_user_property(ByteStr::from("k2"), ByteStr::from("v2"))
            .expect("fits");
        properties
            .set_content_type(Some(ByteStr::from("text/plain")))
            .expect("fits");
        properties.message_expiry_interval = Some(30);
        properties
    }

    fn render_with(format: &str, payload: &[u8], pretty: bool) -> Vec<u8> {
        let properties = properties();
        let view = View {
            topic: "a/b",
            payload,
            qos: QoS::AtLeastOnce,
            retain: true,
            packet_id: Some(7),
            properties: &properties,
            subscription_ids: true,
            time: Local
                .timestamp_opt(1_700_000_000, 123_456_789)
                .single()
                .expect("a time"),
        };
        let mut out = Vec::new();
        Format::parse(format)
            .expect("parses")
            .write(&mut out, &view, pretty)
            .expect("writes");
        out
    }

    fn render(format: &str) -> Vec<u8> {
        render_with(format, "hé".as_bytes(), false)
    }

    #[test]
    fn fields_print_as_mosquitto_sub_prints_them() {
        assert_eq!(
            render("%t|%p|%q|%r|%l|%m|%P|%C|%R|%D|%x|%X|%E|%F|%A|%S|%%|@@"),
            "a/b|hé|1|1|3|7|k:v k2:v2|text/plain|||68c3a9|68C3A9|30||||%|@".as_bytes()
        );
        assert_eq!(render(r"\t\\\n\0x\a\e\v\r"), b"\t\\\n\0x\x07\x1b\x0b\r");
        assert_eq!(render("%U"), b"1700000000.123456789");
        assert_eq!(render("@N|@s"), b"123456789|1700000000");
        assert_eq!(render("@Q"), b"%Q");
    }

    #[test]
    fn widths_precisions_and_flags_apply_where_mosquitto_applies_them() {
        assert_eq!(
            render("[%6t][%-6t|][%.1t][%4.2t][%06t][%05l][%-05l|][%3q][%5P][%06E][%04m][%3S][%3R][%3A]"),
            b"[   a/b][a/b   |][a][  a/][   a/b][00003][3    |][1][k:v k2:v2][000030][0007][   ][][   ]"
        );
        assert_eq!(
            render("[%.0t][%.2l][%6p][%-6x|][%08X]"),
            "[][3][   hé][68c3a9|][0068C3A9]".as_bytes()
        );
    }

    #[test]
    fn json_has_mosquitto_sub_fields_in_order() {
        let json = String::from_utf8(render_with("%j", b"say \"hi\"\n\x01", false)).expect("utf-8");
        let tail = json.split_once("\",\"topic\"").expect("tst first").1;
        assert_eq!(
            tail,
            r#":"a/b","qos":1,"retain":1,"payloadlen":10,"mid":7,"properties":{"user-properties":{"k":"v","k2":"v2"},"content-type":"text/plain","message-expiry-interval":30},"payload":"say \"hi\"\n\u0001"}"#
        );
        let json = String::from_utf8(render_with(
            "%J",
            br#" {"a": [1, {"b": 2.50}], "c": {}, "d": []} "#,
            false,
        ))
        .expect("utf-8");
        assert!(
            json.ends_with(r#""payload":{"a":[1,{"b":2.50}],"c":{},"d":[]}}"#),
            "{json}"
        );
        let json = String::from_utf8(render_with("%J", br#"{"a": [1, {"b": 2}], "c": {}}"#, true))
            .expect("utf-8");
        assert!(
            json.ends_with("\t\"payload\":\t{\n\t\t\"a\":\t[1, {\n\t\t\t\t\"b\":\t2\n\t\t\t}],\n\t\t\"c\":\t{\n\t\t}\n\t}\n}"),
            "{json}"
        );
        assert_eq!(render_with("a%Jb", b"not json", false), b"ab");
    }

    #[test]
    fn unknown_specifiers_and_escapes_are_refused() {
        assert!(Format::parse("%z").unwrap_err().contains("'z'"));
        assert!(Format::parse("%0-5l").unwrap_err().contains("'-'"));
        assert!(Format::parse("%1.2.3t").unwrap_err().contains("'.'"));
        for incomplete in ["50%", "%5", "%-", "%.", "@"] {
            assert!(
                Format::parse(incomplete)
                    .unwrap_err()
                    .contains("incomplete"),
                "{incomplete}"
            );
        }
        assert!(Format::parse(r"\q").unwrap_err().contains("'q'"));
        assert!(Format::parse("\\").unwrap_err().contains("incomplete"));
    }
}
