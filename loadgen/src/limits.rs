//! How many worker processes a run needs, from the open-files limit read at run time.

/// Descriptors a worker keeps for itself besides connections: stdio, one epoll instance and one
/// wake-up descriptor per thread, publisher HTTP connections and slack for the runtime.
/// Generous on purpose: running out mid-run costs far more than one more worker.
pub const RESERVED_FDS: u64 = 256;

/// Connections one worker may hold under an open-files limit of `nofile`.
pub fn conns_per_worker(nofile: u64) -> u64 {
    nofile.saturating_sub(RESERVED_FDS).max(1)
}

/// Workers needed for `conns` connections under a per-process limit of `nofile`, never fewer
/// than `asked`.
pub fn workers_needed(conns: u64, nofile: u64, asked: Option<u32>) -> u32 {
    let needed = conns.div_ceil(conns_per_worker(nofile)).max(1);
    let needed = u32::try_from(needed).unwrap_or(u32::MAX);
    asked.map_or(needed, |a| a.max(needed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_follow_the_limit() {
        // (conns, nofile, asked, workers)
        let cases = [
            (100, 1024, None, 1),
            (768, 1024, None, 1),
            (769, 1024, None, 2),
            (19_000, 20_000, None, 1),
            (1_000_000, 20_000, None, 51),
            (1_000_000, 1_048_576, None, 1),
            (100, 1024, Some(4), 4),
            (1_000_000, 20_000, Some(2), 51),
            (0, 1024, None, 1),
            (10, 0, None, 10),
        ];
        for (conns, nofile, asked, want) in cases {
            assert_eq!(
                workers_needed(conns, nofile, asked),
                want,
                "{conns} conns, nofile {nofile}"
            );
        }
    }
}
