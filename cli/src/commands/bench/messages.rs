//! The benchmark's messages: about 100 bytes of JSON each.

use cloudbus::{Event, Message, Request, Service, SyncKey};
use serde::{Deserialize, Serialize};

/// A request with a ~100-byte body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Echo {
    pub n: u64,
    pub key: String,
    pub text: String,
}

/// Its reply, about as large.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EchoReply {
    pub n: u64,
    pub text: String,
}

/// An event with a ~100-byte body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tick {
    pub n: u64,
    pub text: String,
}

impl Message for Echo {
    const TYPE: &'static str = "bench.Echo";
}
impl Message for EchoReply {
    const TYPE: &'static str = "bench.EchoReply";
}
impl Request for Echo {
    type Reply = EchoReply;
}
impl Message for Tick {
    const TYPE: &'static str = "bench.Tick";
}
impl Event for Tick {}

const PAD: &str =
    "cloudbus benchmark payload: the quick brown fox jumps over the lazy dog 0123456789";

impl Echo {
    pub fn new(n: u64, keys: u64) -> Self {
        Self {
            n,
            key: format!("vm-{}", n % keys.max(1)),
            text: PAD.to_string(),
        }
    }

    /// A request on no resource in particular: no key to build.
    pub fn unkeyed(n: u64) -> Self {
        Self {
            n,
            key: String::new(),
            text: PAD.to_string(),
        }
    }

    pub fn sync_key(&self) -> SyncKey {
        SyncKey::new(self.key.clone())
    }
}

impl Tick {
    pub fn new(n: u64) -> Self {
        Self {
            n,
            text: PAD.to_string(),
        }
    }
}

/// The handler's work, the same for the bus and the baselines.
pub fn answer(req: Echo) -> EchoReply {
    EchoReply {
        n: req.n,
        text: req.text,
    }
}

/// The service both in-process scenarios measure, with room for `level`
/// requests at once.
pub fn echo_service(level: usize) -> Service {
    Service::builder("bench", ())
        .concurrency(level.max(64))
        .on_request(|req: Echo, _| async move { Ok(answer(req)) })
        .build()
}
