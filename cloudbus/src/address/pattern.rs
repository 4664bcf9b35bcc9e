//! AMQP topic patterns: words separated by dots, `*` matches exactly one
//! word, `#` matches zero or more.

use std::fmt;

use crate::ErrorCode;

/// A subscription pattern such as `vm.*` or `#.failed`.
///
/// ```
/// use cloudbus::Pattern;
/// let p: Pattern = "vm.#".parse().unwrap();
/// assert!(p.matches("vm.StartVm"));
/// assert!(p.matches("vm"));
/// assert!(!p.matches("host.Reconnect"));
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Pattern {
    text: String,
    words: Vec<Word>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Word {
    Literal(String),
    One,
    Any,
}

impl Pattern {
    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern has no wildcard (it names one type exactly).
    pub fn is_exact(&self) -> bool {
        self.words.iter().all(|w| matches!(w, Word::Literal(_)))
    }

    /// Whether a routing key (an event type name) matches.
    pub fn matches(&self, key: &str) -> bool {
        let words: Vec<&str> = key.split('.').collect();
        match_words(&self.words, &words)
    }
}

fn match_words(pattern: &[Word], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((Word::Any, rest)) => (0..=key.len()).any(|skip| match_words(rest, &key[skip..])),
        Some((Word::One, rest)) => !key.is_empty() && match_words(rest, &key[1..]),
        Some((Word::Literal(w), rest)) => {
            key.first().is_some_and(|k| k == w) && match_words(rest, &key[1..])
        }
    }
}

impl std::str::FromStr for Pattern {
    type Err = ErrorCode;

    fn from_str(text: &str) -> Result<Self, ErrorCode> {
        if text.is_empty() || text.len() > 255 {
            return Err(ErrorCode::invalid(
                "a subscription pattern must have 1 to 255 bytes",
            ));
        }
        let words = text
            .split('.')
            .map(|w| match w {
                "*" => Ok(Word::One),
                "#" => Ok(Word::Any),
                "" => Err(ErrorCode::invalid(format!(
                    "pattern `{text}` has an empty word"
                ))),
                w if w.contains(['*', '#']) => Err(ErrorCode::invalid(format!(
                    "pattern `{text}`: `*` and `#` must stand alone between dots"
                ))),
                w => Ok(Word::Literal(w.to_string())),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            text: text.to_string(),
            words,
        })
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({})", self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        s.parse().unwrap()
    }

    #[test]
    fn star_is_exactly_one_word() {
        assert!(p("vm.*").matches("vm.Started"));
        assert!(!p("vm.*").matches("vm"));
        assert!(!p("vm.*").matches("vm.a.b"));
        assert!(p("*.Started").matches("vm.Started"));
    }

    #[test]
    fn hash_is_any_number_of_words() {
        assert!(p("#").matches("a"));
        assert!(p("#").matches("a.b.c"));
        assert!(p("vm.#").matches("vm"));
        assert!(p("vm.#.done").matches("vm.a.b.done"));
        assert!(p("vm.#.done").matches("vm.done"));
        assert!(!p("vm.#.done").matches("vm.a.b"));
        assert!(p("#.x.#").matches("a.x.b"));
    }

    #[test]
    fn literals_must_match_whole_words() {
        assert!(p("vm.Started").matches("vm.Started"));
        assert!(!p("vm.Started").matches("vm.StartedX"));
        assert!(p("vm.Started").is_exact());
        assert!(!p("vm.*").is_exact());
    }

    #[test]
    fn bad_patterns_are_clear_errors() {
        for bad in ["", "vm..x", "vm.*x", "a#", ".vm"] {
            let err = bad.parse::<Pattern>().unwrap_err();
            assert!(err.is(crate::codes::INVALID_ARGUMENT), "{bad}: {err}");
        }
        assert!("x".repeat(256).parse::<Pattern>().is_err());
    }
}
