//! The kernel profile, `sysctl/99-ringcast.conf`: the sysctl.d format plus `#@ check:` lines
//! that say how each field is compared. Parsed and judged exactly as `sysctl/tune.sh` does, so
//! `ringcast check` and `make tune-check` agree (a test in `tests/cli.rs` holds them to it).

use std::fmt;

/// The kernel profile, as shipped in `sysctl/` and applied by `make tune`.
pub const PROFILE_TEXT: &str = include_str!("../../sysctl/99-ringcast.conf");

/// How the current value of one field of a setting is compared with the profile's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// At least the profile value (raising is safe).
    Min,
    /// At most the profile value.
    Max,
    /// Exactly the profile value.
    Eq,
}

/// How a current setting compares with the profile, worst field first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every field passes its rule.
    Ok,
    /// A `min` field is below the profile.
    Low,
    /// A `max` field is above the profile.
    High,
    /// An `eq` field differs.
    Differs,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ok => "OK",
            Self::Low => "LOW",
            Self::High => "HIGH",
            Self::Differs => "DIFF",
        })
    }
}

/// One key of the profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileEntry {
    /// The sysctl name, dotted (`net.core.somaxconn`).
    pub key: String,
    /// Marked with a leading `-`: the key exists only when a module is loaded.
    pub optional: bool,
    /// One rule per field; the last applies to any further fields.
    pub rules: Vec<Rule>,
    /// The wanted value, one number per field.
    pub wanted: Vec<u64>,
}

impl ProfileEntry {
    /// Compares a value as the kernel prints it (fields separated by blanks) with this entry,
    /// exactly as `sysctl/tune.sh` does.
    pub fn judge(&self, current: &str) -> Verdict {
        let fields: Vec<&str> = current.split_whitespace().collect();
        let mut verdict = Verdict::Ok;
        for (index, wanted) in self.wanted.iter().enumerate() {
            let rule = self
                .rules
                .get(index)
                .or(self.rules.last())
                .copied()
                .unwrap_or(Rule::Min);
            let value = fields
                .get(index)
                .and_then(|field| field.parse::<u64>().ok());
            let passes = match (rule, value) {
                (_, None) => false,
                (Rule::Min, Some(value)) => value >= *wanted,
                (Rule::Max, Some(value)) => value <= *wanted,
                (Rule::Eq, Some(value)) => value == *wanted,
            };
            if !passes {
                let failed = match rule {
                    Rule::Min => Verdict::Low,
                    Rule::Max => Verdict::High,
                    Rule::Eq => Verdict::Differs,
                };
                verdict = worse(verdict, failed);
            }
        }
        verdict
    }

    /// The wanted value as the kernel and `sysctl -w` take it.
    pub fn wanted_text(&self) -> String {
        let fields: Vec<String> = self.wanted.iter().map(u64::to_string).collect();
        fields.join(" ")
    }
}

/// The worse of two verdicts, in the order the scripts report them: LOW, HIGH, DIFF, OK.
fn worse(a: Verdict, b: Verdict) -> Verdict {
    let rank = |v| match v {
        Verdict::Ok => 0,
        Verdict::Differs => 1,
        Verdict::High => 2,
        Verdict::Low => 3,
    };
    if rank(b) > rank(a) { b } else { a }
}

/// A line of the profile that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sysctl profile line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for ProfileError {}

/// The kernel profile: the sysctl.d format plus `#@ check:` comment lines (see the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The keys, in file order.
    pub entries: Vec<ProfileEntry>,
}

impl Profile {
    /// The profile shipped in `sysctl/`.
    pub fn builtin() -> Result<Self, ProfileError> {
        Self::parse(PROFILE_TEXT)
    }

    /// Parses sysctl.d text with `#@ check:` directives.
    pub fn parse(text: &str) -> Result<Self, ProfileError> {
        let mut entries = Vec::new();
        let mut pending_rules: Option<Vec<Rule>> = None;
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let error = |reason: String| ProfileError {
                line: line_no,
                reason,
            };
            let line = raw.trim();
            if let Some(directive) = line.strip_prefix("#@") {
                let words = directive.trim().strip_prefix("check:").ok_or_else(|| {
                    error("a #@ line must read `#@ check: min|max|eq ...`".to_owned())
                })?;
                let rules = words
                    .split_whitespace()
                    .map(|word| match word {
                        "min" => Ok(Rule::Min),
                        "max" => Ok(Rule::Max),
                        "eq" => Ok(Rule::Eq),
                        _ => Err(error(format!("unknown rule {word:?}; use min, max or eq"))),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if rules.is_empty() {
                    return Err(error("a #@ check: line names no rule".to_owned()));
                }
                pending_rules = Some(rules);
                continue;
            }
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let (optional, line) = match line.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, line),
            };
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| error("expected `key = value`".to_owned()))?;
            let key = key.trim();
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(error(format!("bad key {key:?}")));
            }
            let wanted = value
                .split_whitespace()
                .map(|field| {
                    field
                        .parse::<u64>()
                        .map_err(|_| error(format!("{key}: {field:?} is not a number")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if wanted.is_empty() {
                return Err(error(format!("{key} has no value")));
            }
            let rules = pending_rules.take().unwrap_or_else(|| vec![Rule::Min]);
            entries.push(ProfileEntry {
                key: key.to_owned(),
                optional,
                rules,
                wanted,
            });
        }
        Ok(Self { entries })
    }

    /// The entry for `key`, if the profile has one.
    pub fn entry(&self, key: &str) -> Option<&ProfileEntry> {
        self.entries.iter().find(|entry| entry.key == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_parsing() {
        let ok = Profile::parse("# c\n\n; c\n#@ check: max min\n -a.b = 1\t2 \nc.d=3\n").unwrap();
        assert_eq!(
            ok.entries,
            [
                ProfileEntry {
                    key: "a.b".into(),
                    optional: true,
                    rules: vec![Rule::Max, Rule::Min],
                    wanted: vec![1, 2]
                },
                ProfileEntry {
                    key: "c.d".into(),
                    optional: false,
                    rules: vec![Rule::Min],
                    wanted: vec![3]
                },
            ]
        );
        let bad: &[(&str, usize, &str)] = &[
            ("a.b", 1, "key = value"),
            ("a.b = x", 1, "not a number"),
            ("a.b =", 1, "no value"),
            ("\n#@ check: most\na = 1", 2, "unknown rule"),
            ("#@ check:\na = 1", 1, "no rule"),
            ("#@ warn: min", 1, "#@ check:"),
            ("a b = 1", 1, "bad key"),
        ];
        for (text, line, want) in bad {
            let error = Profile::parse(text).unwrap_err();
            assert_eq!(error.line, *line, "{text:?}");
            assert!(error.reason.contains(want), "{text:?}: {error}");
        }
    }

    #[test]
    fn judging_follows_the_rules_field_by_field() {
        let entry = |rules: Vec<Rule>, wanted: Vec<u64>| ProfileEntry {
            key: "k".into(),
            optional: false,
            rules,
            wanted,
        };
        let min = entry(vec![Rule::Min], vec![10]);
        let range = entry(vec![Rule::Max, Rule::Min], vec![1024, 65535]);
        let eq = entry(vec![Rule::Eq], vec![1]);
        let cases: &[(&ProfileEntry, &str, Verdict)] = &[
            (&min, "10", Verdict::Ok),
            (&min, "11", Verdict::Ok),
            (&min, "9", Verdict::Low),
            (&min, "", Verdict::Low),
            (&min, "x", Verdict::Low),
            (&range, "1024\t65535", Verdict::Ok),
            (&range, "1000 65535", Verdict::Ok),
            (&range, "32768 65535", Verdict::High),
            (&range, "32768 60999", Verdict::Low),
            (&range, "1024", Verdict::Low),
            (&eq, "1", Verdict::Ok),
            (&eq, "2", Verdict::Differs),
        ];
        for (entry, current, want) in cases {
            assert_eq!(entry.judge(current), *want, "{:?} {current:?}", entry.rules);
        }
    }
}
