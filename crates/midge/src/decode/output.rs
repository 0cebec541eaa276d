//! How a decoded packet is shown: one line of `key=value` fields, or one JSON object.

use std::fmt::Write as _;

use bytes::Bytes;
use midge_codec::{
    AckProperties, AuthProperties, ByteStr, ConnAckProperties, ConnectProperties,
    DisconnectProperties, Packet, PayloadFormat, ProtocolVersion, PublishProperties, QoS,
    ReasonCode, RetainHandling, SubscribeProperties, UnsubscribeProperties, WillProperties,
};
use serde_json::{json, Map, Value};

/// Text shown whole in a line; longer text is cut there.
const TEXT_PREVIEW: usize = 200;
/// Bytes of binary data shown as hex in a line.
const HEX_PREVIEW: usize = 32;

/// A field's value.
#[derive(Debug)]
pub(super) enum Val {
    Bool(bool),
    Num(u64),
    Str(String),
    /// Binary data or a payload: text when it is UTF-8, hex otherwise.
    Data(Bytes),
    /// Secret data (passwords, authentication data): its length only.
    Secret(usize),
    Reason(ReasonCode),
    List(Vec<Self>),
    Map(Fields),
}

/// Named fields, in the order they are shown.
pub(super) type Fields = Vec<(&'static str, Val)>;

impl Val {
    fn str(s: &ByteStr) -> Self {
        Self::Str(s.as_str().to_owned())
    }

    /// As text, in a line.
    fn write_text(&self, out: &mut String) {
        match self {
            Self::Bool(b) => {
                let _ = write!(out, "{b}");
            }
            Self::Num(n) => {
                let _ = write!(out, "{n}");
            }
            Self::Str(s) => {
                let _ = write!(out, "{s:?}");
            }
            Self::Data(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) if text.chars().count() <= TEXT_PREVIEW => {
                    let _ = write!(out, "{text:?}");
                }
                Ok(text) => {
                    let shown: String = text.chars().take(TEXT_PREVIEW).collect();
                    let _ = write!(out, "{shown:?}...({} bytes)", bytes.len());
                }
                Err(_) => {
                    let shown = bytes.get(..HEX_PREVIEW).unwrap_or(bytes);
                    let _ = write!(out, "hex:{}", hex(shown));
                    if shown.len() < bytes.len() {
                        out.push_str("...");
                    }
                    let _ = write!(out, "({} bytes)", bytes.len());
                }
            },
            Self::Secret(len) => {
                let _ = write!(out, "<{len} bytes hidden>");
            }
            Self::Reason(code) => {
                let _ = write!(out, "{code}");
            }
            Self::List(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write_text(out);
                }
                out.push(']');
            }
            Self::Map(fields) => {
                out.push('{');
                write_fields(fields, ", ", out);
                out.push('}');
            }
        }
    }

    /// As JSON: binary data whole, as `{"text": ...}` or `{"hex": ...}` with its length.
    fn to_json(&self) -> Value {
        match self {
            Self::Bool(b) => Value::Bool(*b),
            Self::Num(n) => json!(n),
            Self::Str(s) => Value::String(s.clone()),
            Self::Data(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => json!({ "len": bytes.len(), "text": text }),
                Err(_) => json!({ "len": bytes.len(), "hex": hex(bytes) }),
            },
            Self::Secret(len) => json!({ "len": len, "hidden": true }),
            Self::Reason(code) => json!({ "code": code.0, "name": code.name() }),
            Self::List(items) => Value::Array(items.iter().map(Self::to_json).collect()),
            Self::Map(fields) => Value::Object(fields_json(fields)),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn write_fields(fields: &Fields, separator: &str, out: &mut String) {
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push_str(separator);
        }
        out.push_str(name);
        out.push('=');
        value.write_text(out);
    }
}

pub(super) fn fields_json(fields: &Fields) -> Map<String, Value> {
    fields
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.to_json()))
        .collect()
}

/// `fields` as `key=value` separated by spaces.
pub(super) fn fields_text(fields: &Fields) -> String {
    let mut out = String::new();
    write_fields(fields, " ", &mut out);
    out
}

/// The name a packet type is shown with.
pub(super) fn type_name(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect(_) => "DISCONNECT",
        Packet::Auth(_) => "AUTH",
    }
}

pub(super) fn version_name(version: ProtocolVersion) -> &'static str {
    match version {
        ProtocolVersion::V3_1 => "3.1",
        ProtocolVersion::V3_1_1 => "3.1.1",
        ProtocolVersion::V5 => "5.0",
    }
}

fn qos(q: QoS) -> Val {
    Val::Num(q as u64)
}

/// The fields of `packet`, decoded under `version`.
pub(super) fn packet_fields(packet: &Packet, version: ProtocolVersion) -> Fields {
    let v5 = version.is_v5();
    let mut f: Fields = Vec::new();
    match packet {
        Packet::Connect(c) => {
            f.push(("protocol", Val::Str(version_name(c.protocol).into())));
            if c.bridge {
                f.push(("bridge", Val::Bool(true)));
            }
            f.push(("client_id", Val::str(&c.client_id)));
            f.push(("clean_start", Val::Bool(c.clean_start)));
            f.push(("keep_alive", Val::Num(c.keep_alive.into())));
            if let Some(user) = &c.username {
                f.push(("username", Val::str(user)));
            }
            if let Some(password) = &c.password {
                f.push(("password", Val::Secret(password.len())));
            }
            if let Some(will) = &c.will {
                let mut w: Fields = vec![
                    ("topic", Val::str(&will.topic)),
                    ("qos", qos(will.qos)),
                    ("retain", Val::Bool(will.retain)),
                    ("payload", Val::Data(will.payload.clone())),
                ];
                push_props(&mut w, will_props(&will.properties));
                f.push(("will", Val::Map(w)));
            }
            push_props(&mut f, connect_props(&c.properties));
        }
        Packet::ConnAck(c) => {
            f.push(("session_present", Val::Bool(c.session_present)));
            match v3_return_code(c.reason_code) {
                Some(code) if !v5 => f.push(("return_code", Val::Num(code.into()))),
                _ => f.push(("reason", Val::Reason(c.reason_code))),
            }
            push_props(&mut f, connack_props(&c.properties));
        }
        Packet::Publish(p) => {
            f.push(("topic", Val::str(&p.topic)));
            f.push(("qos", qos(p.qos)));
            if let Some(id) = p.packet_id {
                f.push(("packet_id", Val::Num(id.get().into())));
            }
            if p.retain {
                f.push(("retain", Val::Bool(true)));
            }
            if p.dup {
                f.push(("dup", Val::Bool(true)));
            }
            f.push(("payload", Val::Data(p.payload.clone())));
            push_props(&mut f, publish_props(&p.properties));
        }
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            f.push(("packet_id", Val::Num(a.packet_id.get().into())));
            if v5 {
                f.push(("reason", Val::Reason(a.reason_code)));
            }
            push_props(&mut f, ack_props(&a.properties));
        }
        Packet::Subscribe(s) => {
            f.push(("packet_id", Val::Num(s.packet_id.get().into())));
            let filters = s
                .filters
                .iter()
                .map(|(filter, options)| {
                    let mut o: Fields =
                        vec![("filter", Val::str(filter)), ("qos", qos(options.qos))];
                    if v5 {
                        o.push(("no_local", Val::Bool(options.no_local)));
                        o.push((
                            "retain_as_published",
                            Val::Bool(options.retain_as_published),
                        ));
                        let handling = match options.retain_handling {
                            RetainHandling::SendAtSubscribe => 0,
                            RetainHandling::SendIfNew => 1,
                            RetainHandling::DoNotSend => 2,
                        };
                        o.push(("retain_handling", Val::Num(handling)));
                    }
                    Val::Map(o)
                })
                .collect();
            f.push(("filters", Val::List(filters)));
            push_props(&mut f, subscribe_props(&s.properties));
        }
        Packet::SubAck(s) => {
            f.push(("packet_id", Val::Num(s.packet_id.get().into())));
            let codes = s.reason_codes.iter().map(|c| Val::Reason(*c)).collect();
            f.push(("reasons", Val::List(codes)));
            push_props(&mut f, ack_props(&s.properties));
        }
        Packet::Unsubscribe(u) => {
            f.push(("packet_id", Val::Num(u.packet_id.get().into())));
            f.push((
                "filters",
                Val::List(u.filters.iter().map(Val::str).collect()),
            ));
            push_props(&mut f, unsubscribe_props(&u.properties));
        }
        Packet::UnsubAck(u) => {
            f.push(("packet_id", Val::Num(u.packet_id.get().into())));
            if v5 {
                let codes = u.reason_codes.iter().map(|c| Val::Reason(*c)).collect();
                f.push(("reasons", Val::List(codes)));
            }
            push_props(&mut f, ack_props(&u.properties));
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) => {
            if v5 {
                f.push(("reason", Val::Reason(d.reason_code)));
            }
            push_props(&mut f, disconnect_props(&d.properties));
        }
        Packet::Auth(a) => {
            f.push(("reason", Val::Reason(a.reason_code)));
            push_props(&mut f, auth_props(&a.properties));
        }
    }
    f
}

/// The 3.x CONNACK return code the codec's reason code stands for.
fn v3_return_code(code: ReasonCode) -> Option<u8> {
    Some(match code {
        ReasonCode::SUCCESS => 0,
        ReasonCode::UNSUPPORTED_PROTOCOL_VERSION => 1,
        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID => 2,
        ReasonCode::SERVER_UNAVAILABLE => 3,
        ReasonCode::BAD_USER_NAME_OR_PASSWORD => 4,
        ReasonCode::NOT_AUTHORIZED => 5,
        _ => return None,
    })
}

fn push_props(f: &mut Fields, props: Fields) {
    if !props.is_empty() {
        f.push(("properties", Val::Map(props)));
    }
}

/// Adds the field `name` if the property is set.
fn opt<T>(out: &mut Fields, name: &'static str, value: Option<T>, to: impl FnOnce(T) -> Val) {
    if let Some(value) = value {
        out.push((name, to(value)));
    }
}

fn user_props(out: &mut Fields, props: impl IntoIterator<Item = (ByteStr, ByteStr)>) {
    let pairs: Vec<Val> = props
        .into_iter()
        .map(|(name, value)| Val::List(vec![Val::str(&name), Val::str(&value)]))
        .collect();
    if !pairs.is_empty() {
        out.push(("user_properties", Val::List(pairs)));
    }
}

fn num(n: impl Into<u64>) -> Val {
    Val::Num(n.into())
}

fn string(s: ByteStr) -> Val {
    Val::str(&s)
}

fn connect_props(p: &ConnectProperties) -> Fields {
    let mut o = Vec::new();
    opt(
        &mut o,
        "session_expiry_interval",
        p.session_expiry_interval,
        num,
    );
    opt(&mut o, "receive_maximum", p.receive_maximum, |v| {
        num(v.get())
    });
    opt(&mut o, "maximum_packet_size", p.maximum_packet_size, |v| {
        num(v.get())
    });
    opt(&mut o, "topic_alias_maximum", p.topic_alias_maximum, num);
    opt(
        &mut o,
        "request_response_information",
        p.request_response_information,
        Val::Bool,
    );
    opt(
        &mut o,
        "request_problem_information",
        p.request_problem_information,
        Val::Bool,
    );
    opt(
        &mut o,
        "authentication_method",
        p.authentication_method.clone(),
        string,
    );
    opt(
        &mut o,
        "authentication_data",
        p.authentication_data.as_ref(),
        |d| Val::Secret(d.len()),
    );
    user_props(&mut o, p.user_properties.iter().cloned());
    o
}

fn connack_props(p: &ConnAckProperties) -> Fields {
    let mut o = Vec::new();
    opt(
        &mut o,
        "session_expiry_interval",
        p.session_expiry_interval,
        num,
    );
    opt(&mut o, "receive_maximum", p.receive_maximum, |v| {
        num(v.get())
    });
    opt(&mut o, "maximum_qos", p.maximum_qos, qos);
    opt(&mut o, "retain_available", p.retain_available, Val::Bool);
    opt(&mut o, "maximum_packet_size", p.maximum_packet_size, |v| {
        num(v.get())
    });
    opt(
        &mut o,
        "assigned_client_identifier",
        p.assigned_client_identifier.clone(),
        string,
    );
    opt(&mut o, "topic_alias_maximum", p.topic_alias_maximum, num);
    opt(&mut o, "reason_string", p.reason_string.clone(), string);
    opt(
        &mut o,
        "wildcard_subscription_available",
        p.wildcard_subscription_available,
        Val::Bool,
    );
    opt(
        &mut o,
        "subscription_identifiers_available",
        p.subscription_identifiers_available,
        Val::Bool,
    );
    opt(
        &mut o,
        "shared_subscription_available",
        p.shared_subscription_available,
        Val::Bool,
    );
    opt(&mut o, "server_keep_alive", p.server_keep_alive, num);
    opt(
        &mut o,
        "response_information",
        p.response_information.clone(),
        string,
    );
    opt(
        &mut o,
        "server_reference",
        p.server_reference.clone(),
        string,
    );
    opt(
        &mut o,
        "authentication_method",
        p.authentication_method.clone(),
        string,
    );
    opt(
        &mut o,
        "authentication_data",
        p.authentication_data.as_ref(),
        |d| Val::Secret(d.len()),
    );
    user_props(&mut o, p.user_properties.iter().cloned());
    o
}

fn publish_props(p: &PublishProperties) -> Fields {
    let mut o = Vec::new();
    opt(
        &mut o,
        "payload_format_indicator",
        p.payload_format_indicator,
        |f| {
            Val::Str(
                match f {
                    PayloadFormat::Unspecified => "unspecified",
                    PayloadFormat::Utf8 => "utf-8",
                }
                .into(),
            )
        },
    );
    opt(
        &mut o,
        "message_expiry_interval",
        p.message_expiry_interval,
        num,
    );
    opt(&mut o, "topic_alias", p.topic_alias, |v| num(v.get()));
    opt(&mut o, "content_type", p.content_type(), string);
    opt(&mut o, "response_topic", p.response_topic(), string);
    opt(&mut o, "correlation_data", p.correlation_data(), Val::Data);
    let ids: Vec<Val> = p
        .subscription_identifiers()
        .map(|id| num(id.get()))
        .collect();
    if !ids.is_empty() {
        o.push(("subscription_identifiers", Val::List(ids)));
    }
    user_props(&mut o, p.user_properties());
    o
}

fn will_props(p: &WillProperties) -> Fields {
    let mut o = Vec::new();
    opt(&mut o, "will_delay_interval", p.will_delay_interval, num);
    o.extend(publish_props(&p.message));
    o
}

fn ack_props(p: &AckProperties) -> Fields {
    let mut o = Vec::new();
    opt(&mut o, "reason_string", p.reason_string.clone(), string);
    user_props(&mut o, p.user_properties.iter().cloned());
    o
}

fn subscribe_props(p: &SubscribeProperties) -> Fields {
    let mut o = Vec::new();
    opt(
        &mut o,
        "subscription_identifier",
        p.subscription_identifier,
        |v| num(v.get()),
    );
    user_props(&mut o, p.user_properties.iter().cloned());
    o
}

fn unsubscribe_props(p: &UnsubscribeProperties) -> Fields {
    let mut o = Vec::new();
    user_props(&mut o, p.user_properties.iter().cloned());
    o
}

fn disconnect_props(p: &DisconnectProperties) -> Fields {
    let mut o = Vec::new();
    opt(
        &mut o,
        "session_expiry_interval",
        p.session_expiry_interval,
        num,
    );
    opt(&mut o, "reason_string", p.reason_string.clone(), string);
    opt(
        &mut o,
        "server_reference",
        p.server_reference.clone(),
        string,
    );
    user_props(&mut o, p.user_properties.iter().cloned());
    o
}

fn auth_props(p: &AuthProperties) -> Fields {
    let mut o = Vec::new();
    opt(
        &mut o,
        "authentication_method",
        p.authentication_method.clone(),
        string,
    );
    opt(
        &mut o,
        "authentication_data",
        p.authentication_data.as_ref(),
        |d| Val::Secret(d.len()),
    );
    opt(&mut o, "reason_string", p.reason_string.clone(), string);
    user_props(&mut o, p.user_properties.iter().cloned());
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use midge_codec::{Publish, MAX_PACKET_SIZE};

    #[test]
    fn payloads_show_as_text_or_a_hex_preview() {
        let mut out = String::new();
        Val::Data(Bytes::from_static(b"21.5 \"C\"")).write_text(&mut out);
        assert_eq!(out, r#""21.5 \"C\"""#);
        let mut out = String::new();
        Val::Data(Bytes::from(vec![0xFFu8; 40])).write_text(&mut out);
        assert_eq!(out, format!("hex:{}...(40 bytes)", "ff".repeat(32)));
        assert_eq!(
            Val::Data(Bytes::from_static(&[0xC3, 0x28])).to_json(),
            json!({"len": 2, "hex": "c328"})
        );
    }

    #[test]
    fn every_publish_property_is_shown() {
        let mut publish = Publish {
            topic: "a/b".into(),
            payload: Bytes::from_static(b"x"),
            ..Publish::default()
        };
        publish.properties.message_expiry_interval = Some(30);
        publish.properties.payload_format_indicator = Some(PayloadFormat::Utf8);
        publish
            .properties
            .set_response_topic(Some("r/1".into()))
            .expect("valid");
        publish
            .properties
            .set_correlation_data(Some(Bytes::from_static(b"c1")))
            .expect("valid");
        publish
            .properties
            .set_content_type(Some("text/plain".into()))
            .expect("valid");
        publish
            .properties
            .push_user_property("k", "v")
            .expect("valid");
        let mut wire = bytes::BytesMut::new();
        Packet::Publish(publish)
            .encode(ProtocolVersion::V5, &mut wire)
            .expect("encodes");
        let packet = Packet::decode(&mut wire, ProtocolVersion::V5, MAX_PACKET_SIZE)
            .expect("decodes")
            .expect("whole");
        assert_eq!(
            fields_text(&packet_fields(&packet, ProtocolVersion::V5)),
            "topic=\"a/b\" qos=0 payload=\"x\" properties={payload_format_indicator=\"utf-8\", \
             message_expiry_interval=30, content_type=\"text/plain\", response_topic=\"r/1\", \
             correlation_data=\"c1\", user_properties=[[\"k\", \"v\"]]}"
        );
    }
}
