use crate::{Bus, Envelope, MessageId, NodeId};

/// What a handler knows about the message it handles, and the bus to send
/// further messages on.
#[derive(Clone)]
pub struct Context {
    bus: Bus,
    envelope: Envelope,
}

impl Context {
    pub(crate) fn new(bus: Bus, envelope: Envelope) -> Self {
        Self { bus, envelope }
    }

    /// The bus, to call other services, send messages or publish events.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The envelope of the message being handled.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The id of the message being handled.
    pub fn message_id(&self) -> MessageId {
        self.envelope.id
    }

    /// The node that sent the message.
    pub fn source(&self) -> NodeId {
        self.envelope.source
    }

    /// An application header of the message.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.envelope.headers.get(key)
    }
}
