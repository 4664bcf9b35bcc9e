//! The sync key: which resource a message works on, so that messages on one
//! resource run one after the other (ZStack's sync signature).

/// The resource a message works on, and how many messages on it may run at
/// once (`level`, default 1: strictly one after the other).
///
/// A service tells keys apart by a 62-bit hash of their text, seeded per
/// service: two keys whose hashes meet would be serialized together. With
/// a thousand keys held at once, a message meets another's key with a
/// chance of about 2 in 10^16, and the cost is a wait, not a wrong answer.
///
/// ```
/// use cloudbus::SyncKey;
/// let key = SyncKey::new("vm-42");
/// assert_eq!(key.level(), 1);
/// assert_eq!(SyncKey::new("host-7").with_level(4).level(), 4);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncKey {
    key: String,
    level: usize,
}

impl SyncKey {
    /// A key with level 1.
    pub fn new(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            level: 1,
        }
    }

    /// Allows up to `level` messages of this key at once (at least 1).
    pub fn with_level(mut self, level: usize) -> Self {
        self.level = level.max(1);
        self
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// How many messages of this key may run at once.
    pub fn level(&self) -> usize {
        self.level
    }
}

/// What `#[sync_key(...)]` accepts: a key, anything that converts into
/// one, or an `Option` of a key for messages that only sometimes need one.
pub trait IntoSyncKey {
    /// The key, or `None` to run the message freely.
    fn into_sync_key(self) -> Option<SyncKey>;
}

impl<T: Into<SyncKey>> IntoSyncKey for T {
    fn into_sync_key(self) -> Option<SyncKey> {
        Some(self.into())
    }
}

impl IntoSyncKey for Option<SyncKey> {
    fn into_sync_key(self) -> Option<SyncKey> {
        self
    }
}

impl From<String> for SyncKey {
    fn from(key: String) -> Self {
        Self::new(key)
    }
}

impl From<&str> for SyncKey {
    fn from(key: &str) -> Self {
        Self::new(key)
    }
}

impl From<&String> for SyncKey {
    fn from(key: &String) -> Self {
        Self::new(key.as_str())
    }
}
