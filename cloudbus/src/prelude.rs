//! What a program on the bus needs, in one import:
//! `use cloudbus::prelude::*;`.

pub use crate::{
    Bus, Context, ErrorCode, Event, Message, ReplyPort, Request, Service, SyncKey, codes, handlers,
};
