//! Membership and routing by resource over the real broker: the scenarios
//! of `cluster.rs`, written once in `scenarios/cluster.rs`. Nodes see each
//! other join and leave, agree on owners, and a node cut off from the
//! broker (through a proxy the test cuts) is declared dead with its callers
//! failed at once.

mod broker;
mod common;
mod proxy;
mod rabbit;
mod scenarios;

scenarios::cluster::tests!(rabbit::Rabbit::new);
