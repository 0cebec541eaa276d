//! Why a topic name or filter was rejected.

/// A topic name or topic filter broke a rule of MQTT 3.1.1 / 5.0 section 4.7 or 4.8.
///
/// Each variant names the normative statement it enforces; where 3.1.1 numbers the statement
/// differently, both are given. `TooManyLevels` is this crate's own guard, not a spec rule.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum TopicError {
    /// The name or filter has no characters. [MQTT-4.7.3-1]
    #[error("topic is empty [MQTT-4.7.3-1]")]
    Empty,
    /// The UTF-8 encoding is longer than 65,535 bytes. [MQTT-4.7.3-3] (3.1.1: [MQTT-1.5.3-1])
    #[error("topic is longer than 65535 bytes [MQTT-4.7.3-3]")]
    TooLong,
    /// The name or filter contains U+0000. [MQTT-4.7.3-2]
    #[error("topic contains U+0000 [MQTT-4.7.3-2]")]
    NullCharacter,
    /// A topic name contains `+` or `#`. [MQTT-4.7.0-1] (3.1.1: [MQTT-4.7.1-1])
    #[error("topic name contains a wildcard [MQTT-4.7.0-1]")]
    WildcardInName,
    /// `#` is not a whole level, or not the last level. [MQTT-4.7.1-1] (3.1.1: [MQTT-4.7.1-2])
    #[error("`#` must be the whole last level [MQTT-4.7.1-1]")]
    MultiLevelWildcardMisplaced,
    /// `+` shares its level with other characters. [MQTT-4.7.1-2] (3.1.1: [MQTT-4.7.1-3])
    #[error("`+` must be a whole level [MQTT-4.7.1-2]")]
    SingleLevelWildcardNotWholeLevel,
    /// More levels than [`Limits::max_levels`](crate::Limits::max_levels) allows.
    #[error("topic has more levels than the configured limit")]
    TooManyLevels,
    /// `$share/` is not followed by a share name. [MQTT-4.8.2-1]
    #[error("shared subscription has an empty share name [MQTT-4.8.2-1]")]
    EmptyShareName,
    /// The share name contains `+` or `#`. [MQTT-4.8.2-2]
    #[error("share name contains a wildcard [MQTT-4.8.2-2]")]
    InvalidShareName,
    /// The share name is not followed by `/` and a non-empty topic filter. [MQTT-4.8.2-2]
    #[error("shared subscription has no topic filter after the share name [MQTT-4.8.2-2]")]
    MissingSharedFilter,
}
