//! What the host offers, gathered once from `/proc` and one io_uring probe, so the assessment
//! stays a pure function of [`HostFacts`].

use std::collections::BTreeMap;
use std::path::Path;

use super::profile::Profile;

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

/// What the host offers, gathered once, so [`super::assess`] stays pure and testable.
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
    pub(super) fn sysctl_field(&self, key: &str, field: usize) -> Option<u64> {
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

/// Runs the driver's io_uring probe: the only test that also catches seccomp filters (Docker's
/// default profile refuses io_uring), old kernels and missing opcodes.
fn probe_io_uring(facts: &HostFacts) -> IoUringSupport {
    if let Some(value) = facts.sysctls.get("kernel.io_uring_disabled")
        && value.trim() == "2"
    {
        return IoUringSupport::Unavailable {
            reason: "kernel.io_uring_disabled = 2 turns it off for every process".to_owned(),
        };
    }
    // The server's own start-up probe: ring setup, every opcode it uses, a multishot receive.
    match crate::driver::uring::probe() {
        Ok(()) => IoUringSupport::Available,
        Err(unavailable) => IoUringSupport::Unavailable {
            reason: unavailable.0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> Profile {
        Profile::builtin().unwrap()
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
