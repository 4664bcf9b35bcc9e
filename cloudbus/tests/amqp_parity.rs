//! ZStack parity on the real broker: the scenarios of `parity.rs` between
//! nodes (cancel then late reply, a forward answered once straight to the
//! caller, a task context value seen two hops away, unregistering while
//! busy), written once in `scenarios/parity.rs`.

mod broker;
mod common;
mod proxy;
mod rabbit;
mod scenarios;

scenarios::parity::tests!(rabbit::Rabbit::new);
