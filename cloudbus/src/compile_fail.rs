//! Mistakes the macros turn into compile errors rather than run-time
//! surprises; each snippet is checked to fail to compile (`cargo test --doc`).
//! Each differs from a compiling program by the one mistake it names.
//!
//! A handler method of the wrong shape is not silently skipped:
//!
//! ```compile_fail
//! use cloudbus::prelude::*;
//! struct S;
//! #[handlers]
//! impl S {
//!     async fn helper(&self, n: u32) -> u32 { n }
//! }
//! ```
//!
//! A handler must take `&self`:
//!
//! ```compile_fail
//! use cloudbus::prelude::*;
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Clone, Serialize, Deserialize, Message)] #[message(type = "s.Note")] struct Note {}
//! struct S;
//! #[handlers]
//! impl S {
//!     async fn note(self, _n: Note, _ctx: Context) -> Result<(), ErrorCode> { Ok(()) }
//! }
//! ```
//!
//! The reply a handler returns is the one its request names:
//!
//! ```compile_fail
//! use cloudbus::prelude::*;
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Clone, Serialize, Deserialize, Message)] #[message(type = "s.Get", reply = Got)] struct Get {}
//! # #[derive(Clone, Serialize, Deserialize, Message)] #[message(type = "s.Got")] struct Got {}
//! # #[derive(Clone, Serialize, Deserialize, Message)] #[message(type = "s.Other")] struct Other {}
//! struct S;
//! #[handlers]
//! impl S {
//!     async fn get(&self, _r: Get, _ctx: Context) -> Result<Other, ErrorCode> { Ok(Other {}) }
//! }
//! ```
//!
//! `#[event]` takes an event type:
//!
//! ```compile_fail
//! use cloudbus::prelude::*;
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Clone, Serialize, Deserialize, Message)] #[message(type = "s.Note")] struct Note {}
//! struct S;
//! #[handlers]
//! impl S {
//!     #[event]
//!     async fn note(&self, _n: Note, _ctx: Context) -> Result<(), ErrorCode> { Ok(()) }
//! }
//! ```
//!
//! A state without handlers declared cannot build a service (it would
//! answer nothing):
//!
//! ```compile_fail
//! struct S;
//! let _ = cloudbus::Service::new("s", S);
//! ```
//!
//! A message type needs its wire name, whose first word is a valid service:
//!
//! ```compile_fail
//! # use serde::{Deserialize, Serialize};
//! #[derive(Clone, Serialize, Deserialize, cloudbus::Message)]
//! struct Nameless {}
//! ```
//!
//! ```compile_fail
//! # use serde::{Deserialize, Serialize};
//! #[derive(Clone, Serialize, Deserialize, cloudbus::Message)]
//! #[message(type = "Vm.Start")]
//! struct Start {}
//! ```
//!
//! An event has no reply:
//!
//! ```compile_fail
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Clone, Serialize, Deserialize, cloudbus::Message)] #[message(type = "s.Got")] struct Got {}
//! #[derive(Clone, Serialize, Deserialize, cloudbus::Message)]
//! #[message(type = "s.Happened", event, reply = Got)]
//! struct Happened {}
//! ```
//!
//! The same snippets, mistake removed, compile:
//!
//! ```
//! use cloudbus::prelude::*;
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Clone, Serialize, Deserialize, Message)] #[message(type = "s.Note", event)] struct Note {}
//! # #[derive(Clone, Serialize, Deserialize, Message)] #[message(type = "s.Get", reply = Got)] struct Get {}
//! # #[derive(Clone, Serialize, Deserialize, Message)] #[message(type = "s.Got")] struct Got {}
//! struct S;
//! #[handlers]
//! impl S {
//!     async fn get(&self, _r: Get, _ctx: Context) -> Result<Got, ErrorCode> { Ok(Got {}) }
//!     #[event]
//!     async fn note(&self, _n: Note, _ctx: Context) -> Result<(), ErrorCode> { Ok(()) }
//! }
//! impl S {
//!     async fn helper(&self, n: u32) -> u32 { n }
//! }
//! let _ = Service::new("s", S);
//! ```
