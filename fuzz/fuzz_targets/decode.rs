//! Fuzzes the wire decoder: AMQP properties, `cb-*` headers and bodies
//! from anyone on the broker must never panic a node.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cloudbus::transport::amqp::fuzzing::decode(data);
});
