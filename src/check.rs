//! `ringcast check`: can this host hold N connections? It reads the kernel profile the tuning
//! scripts apply (`sysctl/99-ringcast.conf`, embedded at build time so there is one source of
//! truth), the running kernel and the process limits, and says what is missing and the command
//! that fixes it. The server runs the same assessment at start ([`startup_warnings`]).
//!
//! What the host offers is gathered into [`HostFacts`] first, so [`assess`] is a pure function
//! that tests drive with made-up hosts.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::Path;

use crate::config::{Backend, Config};

/// The kernel profile, as shipped in `sysctl/` and applied by `make tune`.
pub const PROFILE_TEXT: &str = include_str!("../sysctl/99-ringcast.conf");

/// Connections the shipped profile is sized for (its header says so).
pub const PROFILE_CONNECTIONS: u64 = 1_000_000;

/// Descriptors the process needs besides its connections: per shard a listener, a ring or
/// epoll instance and a wake-up eventfd (3), plus stdio, log files and the broker client. 256
/// covers 64 shards with room to spare.
pub const FD_HEADROOM: u64 = 256;

/// Kernel memory of one idle TCP socket (struct sock, file, dentry, inode, epoll item): 3.8 KiB
/// of slab measured on Linux 6.18 with `sysctl/socket-memory.py`, rounded up for slab
/// fragmentation and what slab accounting misses (docs/tuning.md).
pub const KERNEL_BYTES_PER_CONNECTION: u64 = 5 * 1024;

/// User-space memory of one idle connection: the design target (docs/architecture.md).
pub const USER_BYTES_PER_CONNECTION: u64 = 512;

/// Socket-buffer memory of one connection under fan-out: one page sent but not yet
/// acknowledged. Idle connections hold none; this is the headroom for load.
pub const BUFFER_BYTES_PER_CONNECTION: u64 = 4096;

/// Size of the pages `net.ipv4.tcp_mem` counts in.
const PAGE_BYTES: u64 = 4096;

/// Keys whose need grows with the number of connections; [`assess`] checks them against N, so
/// they are left out of the comparison with the 1M profile.
const SCALED_KEYS: &[&str] = &[
    "fs.file-max",
    "fs.nr_open",
    "fs.epoll.max_user_watches",
    "net.ipv4.tcp_mem",
    "net.netfilter.nf_conntrack_max",
];

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

/// The open-file limit of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// What the process may open now.
    pub soft: u64,
    /// What the soft limit may be raised to without privilege.
    pub hard: u64,
}

/// Whether io_uring can be used by this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoUringSupport {
    /// A ring could be set up.
    Available,
    /// It cannot; the reason says what refused it.
    Unavailable {
        /// `kernel.io_uring_disabled = 2`, a seccomp filter, an old kernel, ...
        reason: String,
    },
}

/// What the host offers, gathered once, so [`assess`] stays pure and testable.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostFacts {
    /// This process's RLIMIT_NOFILE, when it could be read.
    pub nofile: Option<NofileLimit>,
    /// Current sysctl values by dotted key; a key the kernel lacks is absent.
    pub sysctls: BTreeMap<String, String>,
    /// `MemAvailable` in bytes, when it could be read.
    pub mem_available: Option<u64>,
    /// File handles allocated system-wide now (first field of `fs.file-nr`).
    pub files_in_use: Option<u64>,
    /// io_uring support; `None` when not probed.
    pub io_uring: Option<IoUringSupport>,
}

impl HostFacts {
    /// Reads the running kernel and this process's limits.
    pub fn from_host(profile: &Profile) -> Self {
        let proc = Path::new("/proc");
        let mut facts = Self::from_proc(proc, profile);
        facts.io_uring = Some(probe_io_uring(&facts));
        facts
    }

    /// Reads everything but the io_uring probe from a `/proc`-shaped tree, so tests can point
    /// it at a scratch copy.
    pub fn from_proc(proc: &Path, profile: &Profile) -> Self {
        let sys = proc.join("sys");
        let read_key = |key: &str| {
            let path = sys.join(key.replace('.', "/"));
            std::fs::read_to_string(path).ok().map(|text| {
                let fields: Vec<&str> = text.split_whitespace().collect();
                fields.join(" ")
            })
        };
        let keys = profile
            .entries
            .iter()
            .map(|entry| entry.key.as_str())
            .chain(["kernel.io_uring_disabled"]);
        let sysctls = keys
            .filter_map(|key| Some((key.to_owned(), read_key(key)?)))
            .collect();
        let files_in_use = read_key("fs.file-nr")
            .and_then(|text| text.split_whitespace().next().and_then(|n| n.parse().ok()));
        let limits = std::fs::read_to_string(proc.join("self/limits")).unwrap_or_default();
        let meminfo = std::fs::read_to_string(proc.join("meminfo")).unwrap_or_default();
        Self {
            nofile: parse_nofile(&limits),
            sysctls,
            mem_available: parse_mem_available(&meminfo),
            files_in_use,
            io_uring: None,
        }
    }

    /// A numeric field of a sysctl (0-based), when present.
    fn sysctl_field(&self, key: &str, field: usize) -> Option<u64> {
        self.sysctls
            .get(key)?
            .split_whitespace()
            .nth(field)?
            .parse()
            .ok()
    }
}

/// The "Max open files" line of `/proc/<pid>/limits`.
fn parse_nofile(limits: &str) -> Option<NofileLimit> {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    let mut numbers = line["Max open files".len()..]
        .split_whitespace()
        .map(|field| {
            if field == "unlimited" {
                Some(u64::MAX)
            } else {
                field.parse().ok()
            }
        });
    Some(NofileLimit {
        soft: numbers.next()??,
        hard: numbers.next()??,
    })
}

/// `MemAvailable` of `/proc/meminfo`, in bytes.
fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find(|line| line.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Tries to set up a one-entry io_uring and closes it at once: the only test that also
/// catches seccomp filters (Docker's default profile refuses io_uring) and old kernels.
fn probe_io_uring(facts: &HostFacts) -> IoUringSupport {
    if let Some(value) = facts.sysctls.get("kernel.io_uring_disabled")
        && value.trim() == "2"
    {
        return IoUringSupport::Unavailable {
            reason: "kernel.io_uring_disabled = 2 turns it off for every process".to_owned(),
        };
    }
    // struct io_uring_params is 120 bytes of u32/u64 fields (linux/io_uring.h); zeroed means
    // no flags and kernel-chosen sizes.
    let mut params = [0u64; 15];
    // SAFETY: io_uring_setup(2) reads and writes exactly sizeof(struct io_uring_params) = 120
    // bytes at the pointer, which points at 120 zeroed, writable, 8-aligned bytes that live
    // until the call returns.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        let error = std::io::Error::last_os_error();
        let why = match error.raw_os_error() {
            Some(libc::ENOSYS) => "the kernel has no io_uring (older than 5.1, or built without)",
            Some(libc::EPERM) => {
                "refused: kernel.io_uring_disabled = 1 without io_uring_group, or a seccomp filter \
                 (containers)"
            }
            _ => "io_uring_setup failed",
        };
        return IoUringSupport::Unavailable {
            reason: format!("{why} ({error})"),
        };
    }
    if let Ok(fd) = i32::try_from(fd) {
        // SAFETY: `fd` was just returned by io_uring_setup and is owned by nothing else.
        unsafe { libc::close(fd) };
    }
    IoUringSupport::Available
}

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Nothing to do.
    Ok,
    /// Works, but worse than it should (profile drift, fallbacks, headroom under load).
    Warn,
    /// The host cannot hold the connections asked for until this is fixed.
    Fail,
}

/// One thing the check looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How much it matters.
    pub severity: Severity,
    /// What was looked at (`open files`, `net.core.somaxconn`).
    pub subject: String,
    /// What was found.
    pub detail: String,
    /// The command or change that fixes it.
    pub fix: Option<String>,
}

/// The answer of [`assess`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The connections asked about.
    pub connections: u64,
    /// Limits that scale with the connections, io_uring and memory.
    pub findings: Vec<Finding>,
    /// Settings that differ from the 1M profile but do not cap the count.
    pub profile_drift: Vec<Finding>,
}

impl Report {
    /// True when nothing found stops the host from holding the connections.
    pub fn can_hold(&self) -> bool {
        self.findings
            .iter()
            .all(|finding| finding.severity != Severity::Fail)
    }

    /// The report as `ringcast check` prints it.
    pub fn render(&self) -> String {
        let mut out = format!(
            "ringcast check: can this host hold {} connections?\n",
            self.connections
        );
        for finding in self.findings.iter().chain(&self.profile_drift) {
            let label = match finding.severity {
                Severity::Ok => "ok  ",
                Severity::Warn => "WARN",
                Severity::Fail => "FAIL",
            };
            let _ = writeln!(out, "  {label}  {}: {}", finding.subject, finding.detail);
            if let Some(fix) = &finding.fix {
                let _ = writeln!(out, "        fix: {fix}");
            }
        }
        let fails = self
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Fail)
            .count();
        if fails == 0 {
            let _ = writeln!(
                out,
                "yes: this host can hold {} connections",
                self.connections
            );
        } else {
            let _ = writeln!(
                out,
                "no: {fails} problem(s) above stop {} connections; fix them (most: `sudo make \
                 tune`) and run this again",
                self.connections
            );
        }
        out
    }
}

/// Judges whether a host with `facts` can hold `connections` on `backend`.
pub fn assess(profile: &Profile, facts: &HostFacts, connections: u64, backend: Backend) -> Report {
    let mut findings = Vec::new();
    let uses_epoll = check_io_uring(facts, backend, &mut findings);
    check_descriptors(facts, connections, &mut findings);
    if uses_epoll {
        check_scaled(
            facts,
            "fs.epoll.max_user_watches",
            connections.saturating_add(FD_HEADROOM),
            "descriptors registered with epoll",
            &mut findings,
        );
    }
    if facts.sysctls.contains_key("net.netfilter.nf_conntrack_max") {
        check_scaled(
            facts,
            "net.netfilter.nf_conntrack_max",
            connections.saturating_add(FD_HEADROOM),
            "tracked connections (nf_conntrack is loaded)",
            &mut findings,
        );
    }
    check_memory(facts, connections, &mut findings);
    let profile_drift = profile
        .entries
        .iter()
        .filter(|entry| !SCALED_KEYS.contains(&entry.key.as_str()))
        .filter_map(|entry| drift(entry, facts))
        .collect();
    Report {
        connections,
        findings,
        profile_drift,
    }
}

/// Adds the io_uring finding; returns whether the shards will run on epoll.
fn check_io_uring(facts: &HostFacts, backend: Backend, findings: &mut Vec<Finding>) -> bool {
    let subject = "io_uring".to_owned();
    let unavailable = match &facts.io_uring {
        Some(IoUringSupport::Unavailable { reason }) => Some(reason.clone()),
        Some(IoUringSupport::Available) | None => None,
    };
    let fix = "sysctl -w kernel.io_uring_disabled=0, and allow io_uring_setup in the container's \
               seccomp profile"
        .to_owned();
    match (backend, unavailable) {
        (Backend::Epoll, _) => {
            findings.push(ok(subject, "not used (--backend epoll)".to_owned()));
            true
        }
        (_, None) => {
            let detail = if facts.io_uring.is_some() {
                "available"
            } else {
                "not probed"
            };
            findings.push(ok(subject, detail.to_owned()));
            false
        }
        (Backend::Uring, Some(reason)) => {
            findings.push(Finding {
                severity: Severity::Fail,
                subject,
                detail: format!("unavailable, and --backend uring requires it: {reason}"),
                fix: Some(format!("{fix}; or run with --backend auto or epoll")),
            });
            true
        }
        (Backend::Auto, Some(reason)) => {
            findings.push(Finding {
                severity: Severity::Warn,
                subject,
                detail: format!("unavailable, the shards will use epoll: {reason}"),
                fix: Some(fix),
            });
            true
        }
    }
}

/// Open-file limits: the process's RLIMIT_NOFILE, the per-process ceiling and the system's.
fn check_descriptors(facts: &HostFacts, connections: u64, findings: &mut Vec<Finding>) {
    let needed = connections.saturating_add(FD_HEADROOM);
    match facts.nofile {
        None => findings.push(Finding {
            severity: Severity::Warn,
            subject: "open files".to_owned(),
            detail: "could not read RLIMIT_NOFILE from /proc/self/limits".to_owned(),
            fix: None,
        }),
        // `ringcast serve` raises its soft limit to the hard one at start, so the hard limit
        // is what it gets.
        Some(limit) if limit.hard >= needed => findings.push(ok(
            "open files".to_owned(),
            format!(
                "hard limit {} covers {needed} descriptors (soft {}; serve raises it to the hard \
                 limit)",
                limit.hard, limit.soft
            ),
        )),
        Some(limit) => {
            findings.push(Finding {
                severity: Severity::Fail,
                subject: "open files".to_owned(),
                detail: format!(
                    "RLIMIT_NOFILE is soft {} / hard {}, {needed} descriptors needed (limits of \
                     this process; a systemd unit has its own LimitNOFILE)",
                    limit.soft, limit.hard
                ),
                fix: Some(
                    "`sudo make tune` (raises fs.nr_open, installs nofile for logins and \
                     LimitNOFILE for the unit), then log in again or restart the unit"
                        .to_owned(),
                ),
            });
            check_scaled(
                facts,
                "fs.nr_open",
                needed,
                "the per-process ceiling RLIMIT_NOFILE can be raised to",
                findings,
            );
        }
    }
    let in_use = facts.files_in_use.unwrap_or(0);
    check_scaled(
        facts,
        "fs.file-max",
        needed.saturating_add(in_use),
        "open files system-wide (those in use now included)",
        findings,
    );
}

/// A sysctl that must be at least `needed`: a failure names `sysctl -w` and `make tune`.
fn check_scaled(
    facts: &HostFacts,
    key: &str,
    needed: u64,
    what: &str,
    findings: &mut Vec<Finding>,
) {
    let finding = match facts.sysctl_field(key, 0) {
        None => Finding {
            severity: Severity::Warn,
            subject: key.to_owned(),
            detail: format!("could not read it ({what})"),
            fix: None,
        },
        Some(value) if value >= needed => ok(key.to_owned(), format!("{value} >= {needed}")),
        Some(value) => Finding {
            severity: Severity::Fail,
            subject: key.to_owned(),
            detail: format!("{value}, {needed} needed: {what}"),
            fix: Some(format!(
                "`sudo make tune`, or `sudo sysctl -w {key}={needed}`"
            )),
        },
    };
    findings.push(finding);
}

/// Memory: idle connections must fit in MemAvailable; connections under load should.
fn check_memory(facts: &HostFacts, connections: u64, findings: &mut Vec<Finding>) {
    let idle = connections.saturating_mul(KERNEL_BYTES_PER_CONNECTION + USER_BYTES_PER_CONNECTION);
    let loaded = idle.saturating_add(connections.saturating_mul(BUFFER_BYTES_PER_CONNECTION));
    let subject = "memory".to_owned();
    let Some(available) = facts.mem_available else {
        findings.push(Finding {
            severity: Severity::Warn,
            subject,
            detail: "could not read MemAvailable from /proc/meminfo".to_owned(),
            fix: None,
        });
        return;
    };
    let budget = format!(
        "{} MiB available; {} MiB for idle connections ({} B each: {} kernel + {} ringcast), {} \
         MiB under load (+{} B of socket buffers each)",
        available >> 20,
        idle >> 20,
        KERNEL_BYTES_PER_CONNECTION + USER_BYTES_PER_CONNECTION,
        KERNEL_BYTES_PER_CONNECTION,
        USER_BYTES_PER_CONNECTION,
        loaded >> 20,
        BUFFER_BYTES_PER_CONNECTION
    );
    let fix = Some("add memory, or lower --max-connections to what fits".to_owned());
    if idle > available {
        findings.push(Finding {
            severity: Severity::Fail,
            subject,
            detail: budget,
            fix,
        });
    } else if loaded > available {
        findings.push(Finding {
            severity: Severity::Warn,
            subject,
            detail: budget,
            fix,
        });
    } else {
        findings.push(ok(subject, budget));
    }
    let tcp_mem_pages = facts.sysctl_field("net.ipv4.tcp_mem", 2);
    let wanted_pages = connections.saturating_mul(BUFFER_BYTES_PER_CONNECTION) / PAGE_BYTES;
    if let Some(pages) = tcp_mem_pages
        && pages < wanted_pages
    {
        findings.push(Finding {
            severity: Severity::Warn,
            subject: "net.ipv4.tcp_mem".to_owned(),
            detail: format!(
                "its limit is {pages} pages, {wanted_pages} wanted for one queued page per \
                 connection under fan-out (idle connections are unaffected)"
            ),
            fix: Some("`sudo make tune`".to_owned()),
        });
    }
}

/// A finding for a profile key whose current value is off the profile; `None` when it is on it
/// or when an optional key is absent.
fn drift(entry: &ProfileEntry, facts: &HostFacts) -> Option<Finding> {
    let wanted = entry.wanted_text();
    let Some(current) = facts.sysctls.get(&entry.key) else {
        return (!entry.optional).then(|| Finding {
            severity: Severity::Warn,
            subject: entry.key.clone(),
            detail: "not present in this kernel".to_owned(),
            fix: None,
        });
    };
    let verdict = entry.judge(current);
    (verdict != Verdict::Ok).then(|| Finding {
        severity: Severity::Warn,
        subject: entry.key.clone(),
        detail: format!("{current} ({verdict}), the 1M profile wants {wanted}"),
        fix: Some(format!(
            "`sudo make tune`, or `sudo sysctl -w {}=\"{wanted}\"`",
            entry.key
        )),
    })
}

/// An OK finding.
fn ok(subject: String, detail: String) -> Finding {
    Finding {
        severity: Severity::Ok,
        subject,
        detail,
        fix: None,
    }
}

/// The check for `config.max_connections` on this host, as log lines for the server's start:
/// one per problem that caps the count, and one summing up drift from the kernel profile.
pub fn startup_warnings(config: &Config) -> Vec<String> {
    let profile = match Profile::builtin() {
        Ok(profile) => profile,
        Err(e) => return vec![format!("host check skipped: {e}")],
    };
    let facts = HostFacts::from_host(&profile);
    let connections = u64::try_from(config.max_connections).unwrap_or(u64::MAX);
    warnings_of(&assess(&profile, &facts, connections, config.backend))
}

/// The log lines of [`startup_warnings`] for a report.
fn warnings_of(report: &Report) -> Vec<String> {
    let mut lines: Vec<String> = report
        .findings
        .iter()
        .filter(|finding| finding.severity != Severity::Ok)
        .map(|finding| {
            let mut line = format!(
                "host check for max_connections={}: {}: {}",
                report.connections, finding.subject, finding.detail
            );
            if let Some(fix) = &finding.fix {
                let _ = write!(line, "; fix: {fix}");
            }
            line
        })
        .collect();
    if !report.profile_drift.is_empty() {
        let keys: Vec<&str> = report
            .profile_drift
            .iter()
            .map(|f| f.subject.as_str())
            .collect();
        lines.push(format!(
            "{} kernel setting(s) differ from the 1M-connection profile ({}); run `ringcast \
             check` for details and `sudo make tune` to apply it",
            keys.len(),
            keys.join(", ")
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host with the profile applied, room for 1M connections and io_uring.
    fn tuned_host(profile: &Profile) -> HostFacts {
        let mut sysctls: BTreeMap<String, String> = profile
            .entries
            .iter()
            .filter(|entry| !entry.optional)
            .map(|entry| (entry.key.clone(), entry.wanted_text()))
            .collect();
        sysctls.insert("kernel.io_uring_disabled".into(), "0".into());
        HostFacts {
            nofile: Some(NofileLimit {
                soft: 2_097_152,
                hard: 2_097_152,
            }),
            sysctls,
            mem_available: Some(64 << 30),
            files_in_use: Some(10_000),
            io_uring: Some(IoUringSupport::Available),
        }
    }

    /// A stock host: a 6.x kernel's defaults, the usual 1024/524288 open-file limits, 8 GiB.
    fn stock_host() -> HostFacts {
        let sysctls = [
            ("fs.file-max", "9223372036854775807"),
            ("fs.nr_open", "1048576"),
            ("fs.epoll.max_user_watches", "1000000"),
            ("net.core.somaxconn", "4096"),
            ("net.ipv4.tcp_max_syn_backlog", "1024"),
            ("net.core.netdev_max_backlog", "1000"),
            ("net.ipv4.ip_local_port_range", "32768 60999"),
            ("net.ipv4.tcp_mem", "88413 117886 176826"),
            ("net.ipv4.tcp_rmem", "4096 131072 6291456"),
            ("net.ipv4.tcp_wmem", "4096 16384 4194304"),
            ("net.ipv4.tcp_fin_timeout", "60"),
            ("net.ipv4.tcp_tw_reuse", "2"),
            ("net.ipv4.tcp_max_tw_buckets", "65536"),
            ("net.ipv4.tcp_max_orphans", "65536"),
        ];
        HostFacts {
            nofile: Some(NofileLimit {
                soft: 1024,
                hard: 524_288,
            }),
            sysctls: sysctls
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            mem_available: Some(8 << 30),
            files_in_use: Some(5_000),
            io_uring: Some(IoUringSupport::Available),
        }
    }

    fn profile() -> Profile {
        Profile::builtin().unwrap()
    }

    fn failing(report: &Report) -> Vec<&str> {
        report
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Fail)
            .map(|f| f.subject.as_str())
            .collect()
    }

    fn finding<'a>(report: &'a Report, subject: &str) -> &'a Finding {
        report
            .findings
            .iter()
            .chain(&report.profile_drift)
            .find(|f| f.subject == subject)
            .unwrap_or_else(|| panic!("no finding for {subject}: {report:#?}"))
    }

    #[test]
    fn the_shipped_profile_parses_and_names_what_the_check_relies_on() {
        let profile = profile();
        for key in SCALED_KEYS {
            assert!(
                profile.entry(key).is_some(),
                "{key} missing from the profile"
            );
        }
        assert!(
            profile
                .entry("net.netfilter.nf_conntrack_max")
                .unwrap()
                .optional
        );
        let range = profile.entry("net.ipv4.ip_local_port_range").unwrap();
        assert_eq!(range.rules, [Rule::Max, Rule::Min]);
        assert_eq!(range.wanted, [1024, 65535]);
        assert_eq!(profile.entry("fs.file-max").unwrap().rules, [Rule::Min]);
    }

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

    #[test]
    fn a_tuned_host_holds_a_million() {
        let profile = profile();
        let report = assess(&profile, &tuned_host(&profile), 1_000_000, Backend::Auto);
        assert!(report.can_hold(), "{}", report.render());
        assert!(
            report.profile_drift.is_empty(),
            "{:?}",
            report.profile_drift
        );
        assert!(report.render().contains("yes: this host can hold 1000000"));
    }

    #[test]
    fn a_stock_host_fails_a_million_and_says_what_to_run() {
        let report = assess(&profile(), &stock_host(), 1_000_000, Backend::Auto);
        assert!(!report.can_hold());
        assert_eq!(failing(&report), ["open files"]);
        let fix = finding(&report, "open files")
            .fix
            .clone()
            .unwrap_or_default();
        assert!(
            fix.starts_with("`sudo make tune`"),
            "the hard limit is short too: {fix}"
        );
        let somaxconn = finding(&report, "net.core.somaxconn");
        assert_eq!(somaxconn.severity, Severity::Warn);
        assert!(
            somaxconn.detail.contains("4096 (LOW)"),
            "{}",
            somaxconn.detail
        );
        assert_eq!(
            finding(&report, "net.ipv4.tcp_fin_timeout").severity,
            Severity::Warn
        );
        assert_eq!(
            finding(&report, "net.ipv4.tcp_mem").severity,
            Severity::Warn
        );
        let rendered = report.render();
        assert!(rendered.contains("FAIL  open files"), "{rendered}");
        assert!(rendered.contains("no: 1 problem(s)"), "{rendered}");

        let report = assess(&profile(), &stock_host(), 2_000_000, Backend::Auto);
        assert_eq!(failing(&report), ["open files", "fs.nr_open", "memory"]);
        let nr_open = finding(&report, "fs.nr_open");
        assert_eq!(
            nr_open.fix.as_deref(),
            Some("`sudo make tune`, or `sudo sysctl -w fs.nr_open=2000256`")
        );
    }

    #[test]
    fn the_hard_limit_counts_as_serve_raises_the_soft_one() {
        let mut host = stock_host();
        let report = assess(&profile(), &host, 500_000, Backend::Auto);
        assert!(
            report.can_hold(),
            "soft 1024, hard 524288: {}",
            report.render()
        );
        assert!(
            finding(&report, "open files")
                .detail
                .contains("hard limit 524288")
        );
        host.nofile = Some(NofileLimit {
            soft: 4096,
            hard: 4096,
        });
        let report = assess(&profile(), &host, 4096, Backend::Auto);
        assert_eq!(failing(&report), ["open files"]);
        assert_eq!(finding(&report, "fs.nr_open").severity, Severity::Ok);
    }

    #[test]
    fn the_system_file_limit_counts_files_already_open() {
        let profile = profile();
        let mut host = tuned_host(&profile);
        host.sysctls.insert("fs.file-max".into(), "1500000".into());
        host.files_in_use = Some(600_000);
        let report = assess(&profile, &host, 1_000_000, Backend::Auto);
        assert_eq!(failing(&report), ["fs.file-max"]);
        assert!(
            finding(&report, "fs.file-max")
                .detail
                .contains("1600256 needed")
        );
    }

    #[test]
    fn io_uring_is_required_only_by_the_uring_backend() {
        let profile = profile();
        let mut host = tuned_host(&profile);
        host.io_uring = Some(IoUringSupport::Unavailable {
            reason: "seccomp".into(),
        });
        host.sysctls
            .insert("fs.epoll.max_user_watches".into(), "500000".into());

        let uring = assess(&profile, &host, 1_000_000, Backend::Uring);
        assert!(failing(&uring).contains(&"io_uring"));

        let auto = assess(&profile, &host, 1_000_000, Backend::Auto);
        assert_eq!(finding(&auto, "io_uring").severity, Severity::Warn);
        assert_eq!(
            failing(&auto),
            ["fs.epoll.max_user_watches"],
            "auto falls back to epoll"
        );

        host.io_uring = Some(IoUringSupport::Available);
        let on_uring = assess(&profile, &host, 1_000_000, Backend::Auto);
        assert!(
            on_uring.can_hold(),
            "epoll watches do not matter on io_uring"
        );
        let on_epoll = assess(&profile, &host, 1_000_000, Backend::Epoll);
        assert_eq!(failing(&on_epoll), ["fs.epoll.max_user_watches"]);
    }

    #[test]
    fn conntrack_counts_only_when_loaded() {
        let profile = profile();
        let mut host = tuned_host(&profile);
        assert!(assess(&profile, &host, 1_000_000, Backend::Auto).can_hold());
        host.sysctls
            .insert("net.netfilter.nf_conntrack_max".into(), "262144".into());
        let report = assess(&profile, &host, 1_000_000, Backend::Auto);
        assert_eq!(failing(&report), ["net.netfilter.nf_conntrack_max"]);
    }

    #[test]
    fn memory_budget() {
        let profile = profile();
        let mut host = tuned_host(&profile);
        let per_idle = KERNEL_BYTES_PER_CONNECTION + USER_BYTES_PER_CONNECTION;
        host.mem_available = Some(1_000_000 * per_idle - 1);
        let report = assess(&profile, &host, 1_000_000, Backend::Auto);
        assert_eq!(failing(&report), ["memory"]);

        host.mem_available = Some(1_000_000 * per_idle);
        let report = assess(&profile, &host, 1_000_000, Backend::Auto);
        assert!(report.can_hold());
        assert_eq!(
            finding(&report, "memory").severity,
            Severity::Warn,
            "idle fits, load does not"
        );
    }

    #[test]
    fn unreadable_facts_warn_but_do_not_fail() {
        let report = assess(&profile(), &HostFacts::default(), 1_000, Backend::Auto);
        assert!(report.can_hold(), "{}", report.render());
        assert_eq!(finding(&report, "open files").severity, Severity::Warn);
        assert_eq!(finding(&report, "memory").severity, Severity::Warn);
    }

    #[test]
    fn startup_warnings_are_one_line_per_problem_and_one_for_drift() {
        let report = assess(&profile(), &stock_host(), 1_000_000, Backend::Auto);
        let lines = warnings_of(&report);
        assert!(lines[0].starts_with("host check for max_connections=1000000: open files:"));
        assert!(
            lines.iter().any(|l| l.contains("fix: `sudo make tune`")),
            "{lines:#?}"
        );
        let last = lines.last().map(String::as_str).unwrap_or_default();
        assert!(last.contains("kernel setting(s) differ") && last.contains("net.core.somaxconn"));
        let profile = profile();
        assert!(
            warnings_of(&assess(&profile, &tuned_host(&profile), 10, Backend::Auto)).is_empty()
        );
    }

    #[test]
    fn facts_are_read_from_a_proc_tree() {
        let root = std::env::temp_dir().join(format!("ringcast-check-{}", std::process::id()));
        let write = |path: &str, text: &str| {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("sys/net/core/somaxconn", "4096\n");
        write("sys/net/ipv4/ip_local_port_range", "32768\t60999\n");
        write("sys/fs/file-nr", "12345\t0\t9223372036854775807\n");
        write("sys/kernel/io_uring_disabled", "0\n");
        write(
            "self/limits",
            "Limit                     Soft Limit           Hard Limit           Units\n\
             Max cpu time              unlimited            unlimited            seconds\n\
             Max open files            1024                 524288               files\n",
        );
        write(
            "meminfo",
            "MemTotal:       24000000 kB\nMemAvailable:   12000000 kB\n",
        );
        let facts = HostFacts::from_proc(&root, &profile());
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            facts.nofile,
            Some(NofileLimit {
                soft: 1024,
                hard: 524_288
            })
        );
        assert_eq!(facts.mem_available, Some(12_000_000 * 1024));
        assert_eq!(facts.files_in_use, Some(12345));
        assert_eq!(facts.sysctls["net.core.somaxconn"], "4096");
        assert_eq!(facts.sysctls["net.ipv4.ip_local_port_range"], "32768 60999");
        assert_eq!(facts.sysctls["kernel.io_uring_disabled"], "0");
        assert!(
            !facts.sysctls.contains_key("fs.nr_open"),
            "absent keys stay absent"
        );
    }

    #[test]
    fn limits_lines_parse() {
        let cases: &[(&str, Option<NofileLimit>)] = &[
            (
                "Max open files  1024  4096  files",
                Some(NofileLimit {
                    soft: 1024,
                    hard: 4096,
                }),
            ),
            (
                "Max open files  unlimited  unlimited  files",
                Some(NofileLimit {
                    soft: u64::MAX,
                    hard: u64::MAX,
                }),
            ),
            ("Max open files  1024", None),
            ("Max processes  1024  1024  processes", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_nofile(text), *want, "{text:?}");
        }
    }

    #[test]
    fn disabled_by_sysctl_is_reported_without_a_syscall() {
        let mut facts = HostFacts::default();
        facts
            .sysctls
            .insert("kernel.io_uring_disabled".into(), "2".into());
        let IoUringSupport::Unavailable { reason } = probe_io_uring(&facts) else {
            panic!("io_uring_disabled = 2 must read as unavailable");
        };
        assert!(reason.contains("io_uring_disabled = 2"));
    }
}
