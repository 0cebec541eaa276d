//! How `midge sub` and `midge rr` print a message: payload only, `-v`, or mosquitto_sub's
//! `-F` output format (for the fields midge-client exposes); `-N`.

use std::io::{self, Write};

use clap::Args;
use midge_client::codec::PublishProperties;
use midge_client::{Message, QoS};

use super::Failure;

/// The output options `midge sub` and `midge rr` share.
#[derive(Debug, Clone, Args)]
pub(crate) struct Output {
    /// Print the topic, a space, then the payload (`(null)` for an empty one).
    #[arg(short, long)]
    pub(crate) verbose: bool,
    /// Output format, as mosquitto_sub's (overrides -v): %t topic, %p payload, %x/%X hex
    /// payload, %l length, %q QoS, %r retain, %P user properties (key:value ...), %C content
    /// type, %R response topic, %D correlation data, %E message expiry, %%; escapes \n \t
    /// \r \a \e \v \0 \\.
    #[arg(short = 'F', long = "format", value_parser = Format::parse)]
    pub(crate) format: Option<Format>,
    /// No end of line after each message.
    #[arg(short = 'N')]
    pub(crate) no_newline: bool,
}

impl Output {
    /// Writes a message as mosquitto_sub does: in the `-F` format, or the payload (with `-v`
    /// the topic and a space first, and `(null)` for an empty payload); then a newline unless
    /// `-N`.
    pub(crate) fn print(&self, out: &mut impl Write, message: &Message) -> io::Result<()> {
        if let Some(format) = &self.format {
            format.write(out, &View::of(message))?;
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
    pub(crate) properties: &'a PublishProperties,
}

impl<'a> View<'a> {
    pub(crate) fn of(message: &'a Message) -> Self {
        Self {
            topic: message.topic(),
            payload: message.payload(),
            qos: message.qos(),
            retain: message.retain(),
            properties: message.properties(),
        }
    }
}

/// One piece of a format.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(Vec<u8>),
    Topic,
    Payload,
    Hex { upper: bool },
    Length,
    Qos,
    Retain,
    UserProperties,
    ContentType,
    ResponseTopic,
    CorrelationData,
    MessageExpiry,
}

/// A parsed `-F` format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Format(Vec<Piece>);

impl Format {
    /// Parses a format; the error says which specifier or escape is wrong.
    pub(crate) fn parse(format: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut text = Vec::new();
        let mut chars = format.chars();
        while let Some(c) = chars.next() {
            match c {
                '%' => {
                    let piece = match chars.next() {
                        None => return Err("incomplete format specifier (a % at the end)".into()),
                        Some('%') => {
                            text.push(b'%');
                            continue;
                        }
                        Some('t') => Piece::Topic,
                        Some('p') => Piece::Payload,
                        Some('x') => Piece::Hex { upper: false },
                        Some('X') => Piece::Hex { upper: true },
                        Some('l') => Piece::Length,
                        Some('q') => Piece::Qos,
                        Some('r') => Piece::Retain,
                        Some('P') => Piece::UserProperties,
                        Some('C') => Piece::ContentType,
                        Some('R') => Piece::ResponseTopic,
                        Some('D') => Piece::CorrelationData,
                        Some('E') => Piece::MessageExpiry,
                        Some(other) => {
                            return Err(format!("unsupported format specifier %{other}"))
                        }
                    };
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(piece);
                }
                '\\' => {
                    let byte = match chars.next() {
                        None => return Err("incomplete escape (a \\ at the end)".into()),
                        Some('\\') => b'\\',
                        Some('n') => b'\n',
                        Some('t') => b'\t',
                        Some('r') => b'\r',
                        Some('a') => 0x07,
                        Some('e') => 0x1B,
                        Some('v') => 0x0B,
                        Some('0') => 0,
                        Some(other) => return Err(format!("unsupported escape \\{other}")),
                    };
                    text.push(byte);
                }
                c => {
                    let mut buf = [0; 4];
                    text.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Self(pieces))
    }

    /// Writes `message` in this format (without the end of line).
    pub(crate) fn write(&self, out: &mut impl Write, message: &View<'_>) -> io::Result<()> {
        for piece in &self.0 {
            match piece {
                Piece::Text(text) => out.write_all(text)?,
                Piece::Topic => out.write_all(message.topic.as_bytes())?,
                Piece::Payload => out.write_all(message.payload)?,
                Piece::Hex { upper } => {
                    for byte in message.payload.iter() {
                        if *upper {
                            write!(out, "{byte:02X}")?;
                        } else {
                            write!(out, "{byte:02x}")?;
                        }
                    }
                }
                Piece::Length => write!(out, "{}", message.payload.len())?,
                Piece::Qos => write!(out, "{}", message.qos as u8)?,
                Piece::Retain => write!(out, "{}", u8::from(message.retain))?,
                Piece::UserProperties => {
                    for (i, (key, value)) in message.properties.user_properties().enumerate() {
                        if i > 0 {
                            out.write_all(b" ")?;
                        }
                        write!(out, "{}:{}", key.as_str(), value.as_str())?;
                    }
                }
                Piece::ContentType => {
                    if let Some(value) = message.properties.content_type() {
                        out.write_all(value.as_str().as_bytes())?;
                    }
                }
                Piece::ResponseTopic => {
                    if let Some(value) = message.properties.response_topic() {
                        out.write_all(value.as_str().as_bytes())?;
                    }
                }
                Piece::CorrelationData => {
                    if let Some(value) = message.properties.correlation_data() {
                        out.write_all(&value)?;
                    }
                }
                Piece::MessageExpiry => {
                    if let Some(seconds) = message.properties.message_expiry_interval {
                        write!(out, "{seconds}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    fn render(format: &str) -> Vec<u8> {
        let properties = properties();
        let view = View {
            topic: "a/b",
            payload: "hé".as_bytes(),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: &properties,
        };
        let mut out = Vec::new();
        Format::parse(format)
            .expect("parses")
            .write(&mut out, &view)
            .expect("writes");
        out
    }

    #[test]
    fn fields_print_as_mosquitto_sub_prints_them() {
        assert_eq!(
            render("%t|%p|%q|%r|%l|%P|%C|%R|%D|%x|%X|%E|%%"),
            "a/b|hé|1|1|3|k:v k2:v2|text/plain|||68c3a9|68C3A9|30|%".as_bytes()
        );
        assert_eq!(render(r"\t\\\n\0x"), b"\t\\\n\0x");
    }

    #[test]
    fn unknown_specifiers_and_escapes_are_refused() {
        assert!(Format::parse("%i").unwrap_err().contains("%i"));
        assert!(Format::parse("50%").unwrap_err().contains("incomplete"));
        assert!(Format::parse(r"\q").unwrap_err().contains("\\q"));
        assert!(Format::parse("\\").unwrap_err().contains("incomplete"));
    }
}
