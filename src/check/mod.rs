//! `ringcast check`: can this host hold N connections? It reads the kernel profile the tuning
//! scripts apply (`sysctl/99-ringcast.conf`, embedded at build time so there is one source of
//! truth), the running kernel and the process limits, and says what is missing and the command
//! that fixes it. The server runs the same assessment at start ([`startup_warnings`]).
//!
//! What the host offers is gathered into [`HostFacts`] first, so [`assess`] is a pure function
//! that tests drive with made-up hosts.

mod host;
mod profile;

use std::fmt::Write as _;

pub use host::{HostFacts, IoUringSupport, NofileLimit};
pub use profile::{PROFILE_TEXT, Profile, ProfileEntry, ProfileError, Rule, Verdict};

use crate::config::{Backend, Config};

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
    use std::collections::BTreeMap;

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
}
