//! The entry point of the decoder's fuzz target (`fuzz/`), also run on
//! stable by a unit test: whatever arrives from the wire, decoding ends in
//! a message or an error, never a panic.

use amqprs::{BasicProperties, FieldTable, FieldValue};

use super::codec::{self, API_ID, KIND, SOURCE, TIMEOUT_MS};

/// Splits `data` into the fields of an AMQP message (properties, `cb-*`
/// headers, body) and decodes it as a consumer would, then decodes the
/// body as a reply.
pub fn decode(data: &[u8]) {
    let mut fields = data.split(|b| *b == 0xff);
    // AMQP short strings carry at most 255 bytes; the broker never
    // delivers longer ones.
    let mut next = || {
        fields.next().map(|f| {
            let mut s = String::from_utf8_lossy(f).into_owned();
            while s.len() > 255 {
                s.pop();
            }
            s
        })
    };
    let (type_name, content_type, kind, source) = (next(), next(), next(), next());
    let (message_id, correlation_id, reply_to, api_id) = (next(), next(), next(), next());
    let numbers = next().unwrap_or_default().into_bytes();
    let body = next().unwrap_or_default().into_bytes();
    let number = |at: usize| {
        numbers
            .get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };

    let mut headers = FieldTable::new();
    for (key, value) in [(KIND, kind), (SOURCE, source), (API_ID, api_id)] {
        if let Some(value) = value {
            headers.insert(key.try_into().expect("short"), value.into());
        }
    }
    if let Some(ms) = number(8) {
        headers.insert(
            TIMEOUT_MS.try_into().expect("short"),
            FieldValue::l(ms as i64),
        );
    }
    let mut props = BasicProperties::default();
    props.with_headers(headers);
    if let Some(t) = type_name {
        props.with_message_type(&t);
    }
    if let Some(c) = content_type {
        props.with_content_type(&c);
    }
    if let Some(id) = message_id {
        props.with_message_id(&id);
    }
    if let Some(id) = correlation_id {
        props.with_correlation_id(&id);
    }
    if let Some(r) = reply_to {
        props.with_reply_to(&r);
    }
    if let Some(ts) = number(0) {
        props.with_timestamp(ts);
    }
    if let Ok(message) = codec::decode(&props, body, 1 << 16) {
        let _ = crate::message::decode_reply(&message.body);
        let _ = crate::Body::Json(message.body).decode::<crate::Ping>();
    }
}

#[cfg(test)]
mod tests {
    /// A cheap deterministic generator: the same inputs on every run.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn random_and_mutated_messages_never_panic_the_decoder() {
        let node = "0123456789abcdef0123456789abcdef";
        let good = [
            "echo.Echo",
            "application/json",
            "request",
            node,
            node,
            node,
            "cloudbus.x",
            node,
        ]
        .join("\u{ff}");
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let specials: [&[u8]; 8] = [
            b"\xff",
            b"{\"success\":true,\"reply\":{}}",
            b"{\"success\":false,\"error\":{\"code\":1}}",
            b"\xff\xff\xff\xff\xff\xff\xff\xff",
            b"reply",
            b"event",
            b"-1",
            b"{\"success\":false,\"error\":{\"code\":\"a\",\"description\":\"b\",\"cause\":{\"code\":\"c\",\"description\":\"d\"}}}",
        ];
        for round in 0..20_000 {
            let mut input: Vec<u8> = good.clone().into_bytes();
            if round % 2 == 0 {
                for _ in 0..=(rng.next() % 4) {
                    let at = (rng.next() as usize) % (input.len() + 1);
                    match rng.next() % 3 {
                        0 if at < input.len() => input[at] = rng.next() as u8,
                        1 => {
                            let s = specials[(rng.next() as usize) % specials.len()];
                            input.splice(at..at, s.iter().copied());
                        }
                        _ => input.truncate(at),
                    }
                }
            } else {
                let len = (rng.next() % 200) as usize;
                input = (0..len).map(|_| rng.next() as u8).collect();
            }
            super::decode(&input);
        }
    }
}
