//! Topic aliases (5.0 §3.3.2.3.4), one table per direction of a connection.
//!
//! The receiver announces how many aliases it accepts (Topic Alias Maximum, in CONNECT for the
//! client and in CONNACK for the server); the sender may use aliases 1 to that maximum, and must
//! not use any if the maximum is 0 or absent ([MQTT-3.3.2-9], [MQTT-3.3.2-10]). Aliases last for
//! one network connection ([MQTT-3.3.2-7]), so both tables are dropped on reconnect.

use std::collections::BTreeMap;
use std::num::NonZeroU16;

use midge_codec::{ByteStr, ReasonCode};

/// Aliases the peer has set on this connection, for resolving its PUBLISH packets.
#[derive(Clone, Debug, Default)]
pub(crate) struct InboundAliases {
    maximum: u16,
    topics: BTreeMap<NonZeroU16, ByteStr>,
}

impl InboundAliases {
    /// A table that accepts aliases 1 to `maximum`, the Topic Alias Maximum we announced.
    /// Memory grows only with the aliases the peer actually sets, never past `maximum` entries.
    pub(crate) fn new(maximum: u16) -> Self {
        Self {
            maximum,
            topics: BTreeMap::new(),
        }
    }

    /// Resolves the topic of an incoming PUBLISH.
    ///
    /// A non-empty topic with an alias sets or replaces that alias; an empty topic with an alias
    /// uses it. Errors carry the reason code for the DISCONNECT: 0x94 Topic Alias invalid for an
    /// alias above our maximum [MQTT-3.3.2-10], and 0x82 Protocol Error for an empty topic whose
    /// alias was never set.
    pub(crate) fn resolve(
        &mut self,
        topic: &ByteStr,
        alias: Option<NonZeroU16>,
    ) -> Result<ByteStr, ReasonCode> {
        let Some(alias) = alias else {
            return Ok(topic.clone());
        };
        if alias.get() > self.maximum {
            return Err(ReasonCode::TOPIC_ALIAS_INVALID);
        }
        if topic.is_empty() {
            return self
                .topics
                .get(&alias)
                .cloned()
                .ok_or(ReasonCode::PROTOCOL_ERROR);
        }
        // Kept for the connection's life: the topic's own bytes, not its packet's, which may
        // carry a large payload. A topic sent again with the alias it already has is not copied
        // again.
        if self.topics.get(&alias) != Some(topic) {
            self.topics.insert(alias, topic.unshared());
        }
        Ok(topic.clone())
    }
}

/// What to put in an outgoing PUBLISH for its topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum OutboundTopic {
    /// Send the topic without an alias.
    Topic,
    /// Send the topic and this alias, which the peer will remember.
    SetAlias(NonZeroU16),
    /// Send an empty topic with this alias, which the peer already knows.
    UseAlias(NonZeroU16),
}

/// Aliases we have set on this connection, for shortening our PUBLISH packets.
///
/// The policy is first come, first served: the first `maximum` distinct topics get aliases and
/// keep them for the connection; later topics go out in full. It never evicts, so an alias the
/// peer holds always means what we think it means, and the table is bounded by `maximum`.
#[derive(Clone, Debug, Default)]
pub(crate) struct OutboundAliases {
    maximum: u16,
    aliases: BTreeMap<ByteStr, NonZeroU16>,
}

impl OutboundAliases {
    /// A table for a peer that accepts aliases 1 to `maximum` (0: no aliases).
    pub(crate) fn new(maximum: u16) -> Self {
        Self {
            maximum,
            aliases: BTreeMap::new(),
        }
    }

    /// Chooses how to send `topic`, and remembers the alias if it sets one.
    pub(crate) fn assign(&mut self, topic: &ByteStr) -> OutboundTopic {
        let choice = self.peek(topic);
        if let OutboundTopic::SetAlias(alias) = choice {
            // Kept for the connection's life: the topic's own bytes, not the message's.
            self.aliases.insert(topic.unshared(), alias);
        }
        choice
    }

    /// What [`Self::assign`] would choose for `topic`, without remembering anything.
    pub(crate) fn peek(&self, topic: &ByteStr) -> OutboundTopic {
        if let Some(alias) = self.aliases.get(topic) {
            return OutboundTopic::UseAlias(*alias);
        }
        let next = self.aliases.len() + 1;
        match u16::try_from(next)
            .ok()
            .filter(|n| *n <= self.maximum)
            .and_then(NonZeroU16::new)
        {
            Some(alias) => OutboundTopic::SetAlias(alias),
            None => OutboundTopic::Topic,
        }
    }

    /// The alias for a PUBLISH of `topic`, and whether the topic goes with it (`false`: the
    /// peer knows the alias, and the topic is left empty), if `fits` accepts the PUBLISH so
    /// changed; the choice is remembered only then. Setting an alias adds three bytes, so a
    /// packet at the peer's Maximum Packet Size goes out without one; and an alias is never
    /// recorded for a packet that is not sent, which would make later packets use an alias
    /// the peer never learnt. `None`: send the topic without an alias.
    pub(crate) fn choose(
        &mut self,
        topic: &ByteStr,
        fits: impl FnOnce(NonZeroU16, bool) -> bool,
    ) -> Option<(NonZeroU16, bool)> {
        let chosen = match self.peek(topic) {
            OutboundTopic::Topic => return None,
            OutboundTopic::SetAlias(alias) => (alias, true),
            OutboundTopic::UseAlias(alias) => (alias, false),
        };
        if !fits(chosen.0, chosen.1) {
            return None;
        }
        self.assign(topic);
        Some(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alias(n: u16) -> Option<NonZeroU16> {
        NonZeroU16::new(n)
    }

    #[test]
    fn inbound_sets_then_uses_an_alias() {
        let mut table = InboundAliases::new(10);
        let topic = ByteStr::from("a/b");
        assert_eq!(table.resolve(&topic, alias(3)), Ok(topic.clone()));
        assert_eq!(table.resolve(&ByteStr::new(), alias(3)), Ok(topic));
    }

    #[test]
    fn inbound_alias_can_be_replaced() {
        let mut table = InboundAliases::new(10);
        table.resolve(&ByteStr::from("a"), alias(1)).unwrap();
        table.resolve(&ByteStr::from("b"), alias(1)).unwrap();
        assert_eq!(
            table.resolve(&ByteStr::new(), alias(1)),
            Ok(ByteStr::from("b"))
        );
    }

    #[test]
    fn inbound_alias_above_maximum_is_invalid() {
        // [MQTT-3.3.2-10]; with maximum 0 every alias is invalid [MQTT-3.3.2-9].
        let mut table = InboundAliases::new(2);
        assert_eq!(
            table.resolve(&ByteStr::from("a"), alias(3)),
            Err(ReasonCode::TOPIC_ALIAS_INVALID)
        );
        let mut none = InboundAliases::new(0);
        assert_eq!(
            none.resolve(&ByteStr::from("a"), alias(1)),
            Err(ReasonCode::TOPIC_ALIAS_INVALID)
        );
    }

    #[test]
    fn inbound_unknown_alias_is_a_protocol_error() {
        let mut table = InboundAliases::new(5);
        assert_eq!(
            table.resolve(&ByteStr::new(), alias(1)),
            Err(ReasonCode::PROTOCOL_ERROR)
        );
    }

    #[test]
    fn outbound_assigns_until_the_maximum_then_sends_topics() {
        let mut table = OutboundAliases::new(2);
        let (a, b, c) = (ByteStr::from("a"), ByteStr::from("b"), ByteStr::from("c"));
        assert_eq!(table.assign(&a), OutboundTopic::SetAlias(alias(1).unwrap()));
        assert_eq!(table.assign(&b), OutboundTopic::SetAlias(alias(2).unwrap()));
        assert_eq!(table.assign(&c), OutboundTopic::Topic);
        assert_eq!(table.assign(&a), OutboundTopic::UseAlias(alias(1).unwrap()));
        assert_eq!(table.assign(&c), OutboundTopic::Topic);
    }

    #[test]
    fn outbound_without_maximum_never_aliases() {
        let mut table = OutboundAliases::new(0);
        assert_eq!(table.assign(&ByteStr::from("a")), OutboundTopic::Topic);
    }

    #[test]
    fn an_alias_is_chosen_only_if_the_packet_still_fits() {
        let mut table = OutboundAliases::new(4);
        let topic = ByteStr::from("a/b");
        // Refused: nothing is remembered, so the next try sets the alias again.
        assert_eq!(table.choose(&topic, |_, _| false), None);
        let one = alias(1).unwrap();
        assert_eq!(
            table.choose(&topic, |a, send| a == one && send),
            Some((one, true))
        );
        // Known now: sent without the topic.
        assert_eq!(table.choose(&topic, |_, send| !send), Some((one, false)));
        let mut none = OutboundAliases::new(0);
        assert_eq!(none.choose(&topic, |_, _| true), None);
    }
}
