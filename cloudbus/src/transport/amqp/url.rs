//! Broker URLs carry credentials; they must never reach a log or an error.
//! A configured URL may be a comma-separated list of brokers (the nodes of
//! a RabbitMQ cluster), and redaction holds for lists, malformed URLs and
//! any text that embeds them.

/// The URL (or comma-separated list of URLs, or any text embedding them)
/// with every password replaced by `***`. Over-redacts rather than leaks:
/// a malformed URL loses everything between its user and its last `@`.
///
/// ```
/// use cloudbus::transport::amqp::redact;
/// assert_eq!(redact("amqp://guest:s3cret@rabbit:5672/%2f"), "amqp://guest:***@rabbit:5672/%2f");
/// assert_eq!(redact("amqps://rabbit/prod"), "amqps://rabbit/prod");
/// assert_eq!(
///     redact("amqp://a:pw1@r1/%2f,amqp://b:pw2@r2/%2f"),
///     "amqp://a:***@r1/%2f,amqp://b:***@r2/%2f"
/// );
/// ```
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        // This URL's authority-and-more reaches to the next separator of
        // URLs in a list or in prose.
        let end = after
            .find([',', ' ', '\n', '\t', '"', '\''])
            .unwrap_or(after.len());
        let (url, tail) = after.split_at(end);
        out.push_str(&redact_one(url));
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// One URL after its `scheme://`: hides what follows the user name up to
/// the last `@` (which ends the user info even when the password holds
/// `/`, `?` or `@` that should have been escaped).
fn redact_one(url: &str) -> String {
    match url.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            // A user name cut at `/` or `?` is not a user name: hide it too.
            let user = if user.contains(['/', '?']) {
                "***"
            } else {
                user
            };
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{user}{hidden}@{host}")
        }
        None => url.to_string(),
    }
}

/// Where a URL points, as operators name a broker: `host:port/vhost`
/// without scheme or credentials (`rabbit-2:5672/%2f`). Shown in status
/// and heartbeats, so it must hold nothing secret.
pub(crate) fn address(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host = after_scheme
        .rsplit_once('@')
        .map_or(after_scheme, |(_, host)| host);
    // A query (`?heartbeat=5`) says how, not where.
    host.split(['?', '#'])
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The brokers of a configured URL: a comma-separated list, blanks ignored.
pub(crate) fn split_list(urls: &str) -> Vec<String> {
    urls.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_password_survives_any_input() {
        for (input, secret) in [
            ("amqp://guest:s3cret@rabbit:5672/%2f", "s3cret"),
            ("amqp://u:p1@h1:5691/%2f,amqp://u:p2@h2:5692/%2f", "p2"),
            ("amqp://u:p1@h1:5691/%2f,amqp://u:p2@h2:5692/%2f", "p1"),
            ("amqp://u:pa/ss@host/vh", "pa/ss"),
            ("amqp://u:pa@ss@host/vh", "pa@ss"),
            ("amqp://u:pa?ss@host", "pa?ss"),
            (
                "cannot connect to amqp://u:topsecret@h:1/x: refused",
                "topsecret",
            ),
            ("vhost /,amqp://guest:hunter2@h/%2f not found", "hunter2"),
            (" amqp://u:x1@h , amqps://v:x2@k ", "x2"),
        ] {
            let redacted = redact(input);
            assert!(!redacted.contains(secret), "{input} -> {redacted}");
            assert!(redacted.contains("***"), "{input} -> {redacted}");
        }
        assert_eq!(redact("no url here"), "no url here");
        assert_eq!(redact("amqp://host"), "amqp://host");
        assert_eq!(redact(""), "");
    }

    #[test]
    fn an_address_names_the_broker_without_credentials() {
        for (url, address) in [
            ("amqp://guest:s3cret@rabbit:5672/%2f", "rabbit:5672/%2f"),
            ("amqps://rabbit/prod?heartbeat=5", "rabbit/prod"),
            ("amqp://u:pa@ss@host:1", "host:1"),
            ("rabbit:5672", "rabbit:5672"),
        ] {
            assert_eq!(super::address(url), address);
        }
    }

    #[test]
    fn a_list_is_split_into_its_brokers() {
        assert_eq!(
            split_list(" amqp://a/%2f, ,amqp://b/%2f,"),
            ["amqp://a/%2f", "amqp://b/%2f"]
        );
        assert!(split_list(" , ").is_empty());
    }
}
