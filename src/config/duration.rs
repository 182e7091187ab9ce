//! The one duration syntax of ringcast and its load generator: integer seconds (`30`) or a
//! decimal number with a unit (`500ms`, `1.5s`, `2m`, `1h`). Flags, environment variables and
//! string values in the config file all go through [`parse_duration`].

use std::fmt;
use std::time::Duration;

/// Nanoseconds per unit a duration may be written in.
const UNITS: &[(&str, u128)] = &[
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Fraction digits read; more are below a nanosecond for every unit and are dropped.
const MAX_FRACTION_DIGITS: usize = 20;

/// Why a text is not a duration; each message shows the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurationError {
    /// Nothing, or only blanks.
    Empty,
    /// A leading minus: no timeout or interval runs backwards.
    Negative(String),
    /// No number where one was expected (`soon`, `s`, `1.`).
    NotANumber(String),
    /// A fraction with no unit (`1.5`): bare numbers are whole seconds.
    FractionWithoutUnit(String),
    /// A unit other than ms, s, m or h.
    UnknownUnit {
        /// The whole text.
        text: String,
        /// The unit as written.
        unit: String,
    },
    /// More than `Duration` holds (about 584 billion years).
    TooLong(String),
}

/// The accepted forms, told in every error.
const FORMS: &str = "integer seconds or a number with a unit (500ms, 1.5s, 30s, 2m, 1h)";

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => write!(f, "no duration given; expected {FORMS}"),
            Self::Negative(text) => {
                write!(
                    f,
                    "a duration cannot be negative ({text:?}); expected {FORMS}"
                )
            }
            Self::NotANumber(text) => write!(f, "expected {FORMS}, not {text:?}"),
            Self::FractionWithoutUnit(text) => write!(
                f,
                "{text:?} has a fraction but no unit; bare numbers are whole seconds, so write \
                 {text}s, or use {FORMS}"
            ),
            Self::UnknownUnit { text, unit } => write!(
                f,
                "unknown unit {unit:?} in {text:?}; use ms, s, m or h: {FORMS}"
            ),
            Self::TooLong(text) => write!(f, "{text:?} is too long a duration; expected {FORMS}"),
        }
    }
}

impl std::error::Error for DurationError {}

/// Parses a duration: integer seconds (`30`) or a decimal number with a unit (`500ms`, `1.5s`,
/// `2m`, `1h`), blanks allowed around and between number and unit. Digits below a nanosecond
/// are dropped.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    if text.starts_with('-') {
        return Err(DurationError::Negative(text.to_owned()));
    }
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(number_end);
    let unit = unit.trim_start();
    let not_a_number = || DurationError::NotANumber(text.to_owned());
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (number, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || fraction.is_some_and(|f| !all_digits(f)) {
        return Err(not_a_number());
    }
    let nanos_per_unit = if unit.is_empty() {
        if fraction.is_some() {
            return Err(DurationError::FractionWithoutUnit(text.to_owned()));
        }
        1_000_000_000
    } else {
        match UNITS.iter().find(|(name, _)| *name == unit) {
            Some(&(_, nanos)) => nanos,
            None => {
                return Err(DurationError::UnknownUnit {
                    text: text.to_owned(),
                    unit: unit.to_owned(),
                });
            }
        }
    };
    let too_long = || DurationError::TooLong(text.to_owned());
    let whole: u128 = whole.parse().map_err(|_| too_long())?;
    let mut nanos = whole.checked_mul(nanos_per_unit).ok_or_else(too_long)?;
    if let Some(fraction) = fraction {
        let digits = &fraction[..fraction.len().min(MAX_FRACTION_DIGITS)];
        let scale = 10u128.pow(digits.len() as u32);
        let value: u128 = digits.parse().map_err(|_| not_a_number())?;
        nanos += value * nanos_per_unit / scale;
    }
    let seconds = u64::try_from(nanos / 1_000_000_000).map_err(|_| too_long())?;
    let subsec = (nanos % 1_000_000_000) as u32;
    Ok(Duration::new(seconds, subsec))
}

/// Deserializes an optional duration from the config file: integer seconds or a string that
/// [`parse_duration`] accepts.
pub(super) fn deserialize_option<'de, D>(deserializer: D) -> Result<Option<Duration>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Visitor;

    impl serde::de::Visitor<'_> for Visitor {
        type Value = Option<Duration>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("integer seconds or a string such as \"500ms\", \"1.5s\", \"2m\", \"1h\"")
        }

        fn visit_u64<E: serde::de::Error>(self, seconds: u64) -> Result<Self::Value, E> {
            Ok(Some(Duration::from_secs(seconds)))
        }

        fn visit_i64<E: serde::de::Error>(self, seconds: i64) -> Result<Self::Value, E> {
            u64::try_from(seconds)
                .map(|seconds| Some(Duration::from_secs(seconds)))
                .map_err(|_| E::custom(DurationError::Negative(seconds.to_string())))
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
            parse_duration(text).map(Some).map_err(E::custom)
        }
    }

    deserializer.deserialize_any(Visitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_by_one_rule() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("30", Some(Duration::from_secs(30))),
            ("30s", Some(Duration::from_secs(30))),
            ("30 s", Some(Duration::from_secs(30))),
            (" 2m ", Some(Duration::from_secs(120))),
            ("500ms", Some(Duration::from_millis(500))),
            ("1.5s", Some(Duration::from_millis(1500))),
            ("0.25ms", Some(Duration::from_micros(250))),
            ("1.5m", Some(Duration::from_secs(90))),
            ("0.5h", Some(Duration::from_secs(1800))),
            ("2m", Some(Duration::from_secs(120))),
            ("1h", Some(Duration::from_secs(3600))),
            ("0", Some(Duration::ZERO)),
            ("0.000000000001s", Some(Duration::ZERO)),
            ("", None),
            ("   ", None),
            ("s", None),
            ("-1s", None),
            ("-1", None),
            ("1.5", None),
            ("1.s", None),
            (".5s", None),
            ("1..5s", None),
            ("10d", None),
            ("10us", None),
            ("5 parsecs", None),
            ("99999999999999999999s", None),
            ("18446744073709551615h", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text).ok(), *want, "{text:?}");
        }
    }

    #[test]
    fn errors_say_what_was_wrong_and_show_the_forms() {
        let cases: &[(&str, &str)] = &[
            ("", "no duration given"),
            ("-1s", "cannot be negative"),
            ("soon", "not \"soon\""),
            ("1.5", "write 1.5s"),
            ("10d", "unknown unit \"d\""),
            ("99999999999999999999s", "too long"),
        ];
        for (text, want) in cases {
            let message = parse_duration(text).unwrap_err().to_string();
            assert!(message.contains(want), "{text:?} gave {message}");
            assert!(message.contains("500ms, 1.5s"), "{text:?} gave {message}");
        }
    }
}
