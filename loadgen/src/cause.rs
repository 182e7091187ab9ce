//! Why a connection failed or dropped, in words a person can act on.

use serde::{Deserialize, Serialize};

/// Why a connection attempt failed or an open connection ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Cause {
    /// EADDRNOTAVAIL: no local port left for this source and destination.
    AddrNotAvail,
    /// EMFILE or ENFILE: out of file descriptors.
    TooManyFiles,
    /// ECONNREFUSED: nothing listens, or the accept queue overflowed.
    Refused,
    /// ECONNRESET or EPIPE: the server reset the connection.
    Reset,
    /// The TCP connect or the WebSocket handshake did not finish within `--connect-timeout`.
    Timeout,
    /// The server answered the upgrade with something other than 101.
    Rejected,
    /// The upgrade answer was malformed or its `Sec-WebSocket-Accept` was wrong.
    BadHandshake,
    /// The server broke the WebSocket or Pusher protocol.
    Protocol,
    /// The server sent a close frame (or `pusher:error` that closes).
    ServerClose,
    /// The server closed the TCP connection without a close frame.
    Eof,
    /// Any other socket error.
    Other,
}

impl Cause {
    /// Every cause, in report order.
    pub const ALL: [Cause; 11] = [
        Cause::AddrNotAvail,
        Cause::TooManyFiles,
        Cause::Refused,
        Cause::Reset,
        Cause::Timeout,
        Cause::Rejected,
        Cause::BadHandshake,
        Cause::Protocol,
        Cause::ServerClose,
        Cause::Eof,
        Cause::Other,
    ];

    /// Classifies a socket error.
    pub fn of_errno(errno: i32) -> Self {
        match errno {
            libc::EADDRNOTAVAIL | libc::EADDRINUSE => Cause::AddrNotAvail,
            libc::EMFILE | libc::ENFILE => Cause::TooManyFiles,
            libc::ECONNREFUSED => Cause::Refused,
            libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED => Cause::Reset,
            libc::ETIMEDOUT => Cause::Timeout,
            _ => Cause::Other,
        }
    }

    /// Position in [`Cause::ALL`] and in count arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Short machine name, as used in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Cause::AddrNotAvail => "addr_not_avail",
            Cause::TooManyFiles => "too_many_files",
            Cause::Refused => "refused",
            Cause::Reset => "reset",
            Cause::Timeout => "timeout",
            Cause::Rejected => "rejected",
            Cause::BadHandshake => "bad_handshake",
            Cause::Protocol => "protocol",
            Cause::ServerClose => "server_close",
            Cause::Eof => "eof",
            Cause::Other => "other",
        }
    }

    /// What it means and what to do about it.
    pub fn explain(self) -> &'static str {
        match self {
            Cause::AddrNotAvail => {
                "EADDRNOTAVAIL: local ports ran out. One source address reaches one destination \
                 address:port from about 28,000 ports (net.ipv4.ip_local_port_range); add source \
                 addresses with --src 127.0.0.2-127.0.0.60, target more ports with several --url, \
                 or widen the port range"
            }
            Cause::TooManyFiles => {
                "EMFILE/ENFILE: out of file descriptors. Raise the hard limit (ulimit -Hn, \
                 LimitNOFILE=, /etc/security/limits.conf) or add worker processes with --procs; \
                 ENFILE means the system-wide fs.file-max is reached"
            }
            Cause::Refused => {
                "ECONNREFUSED: nothing listens on the target, or its accept queue overflowed \
                 (raise net.core.somaxconn and the listen backlog, or lower --rate)"
            }
            Cause::Reset => "ECONNRESET: the server reset the connection (overload or a limit hit)",
            Cause::Timeout => {
                "timeout: connect plus handshake took longer than --connect-timeout (server \
                 overloaded, SYN backlog full, or --rate too high for it)"
            }
            Cause::Rejected => {
                "the server refused the upgrade with an HTTP status (429/503: a per-IP or total \
                 connection limit; 404: wrong path)"
            }
            Cause::BadHandshake => {
                "the upgrade answer was malformed or its Sec-WebSocket-Accept wrong"
            }
            Cause::Protocol => "the server broke the WebSocket or Pusher protocol",
            Cause::ServerClose => "the server closed with a close frame or a fatal pusher:error",
            Cause::Eof => "the server closed the TCP connection without a close frame",
            Cause::Other => "another socket error",
        }
    }
}

/// A count per [`Cause`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CauseCounts(pub [u64; Cause::ALL.len()]);

impl CauseCounts {
    /// Counts one more.
    pub fn add(&mut self, cause: Cause) {
        if let Some(slot) = self.0.get_mut(cause.index()) {
            *slot += 1;
        }
    }

    /// Adds another set of counts.
    pub fn merge(&mut self, other: &Self) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }

    /// Sum over all causes.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The non-zero counts with their causes.
    pub fn nonzero(&self) -> impl Iterator<Item = (Cause, u64)> + '_ {
        Cause::ALL
            .iter()
            .zip(self.0.iter())
            .filter(|(_, n)| **n > 0)
            .map(|(c, n)| (*c, *n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_map_to_causes() {
        let cases = [
            (libc::EADDRNOTAVAIL, Cause::AddrNotAvail),
            (libc::EMFILE, Cause::TooManyFiles),
            (libc::ENFILE, Cause::TooManyFiles),
            (libc::ECONNREFUSED, Cause::Refused),
            (libc::ECONNRESET, Cause::Reset),
            (libc::ETIMEDOUT, Cause::Timeout),
            (libc::EHOSTUNREACH, Cause::Other),
        ];
        for (errno, cause) in cases {
            assert_eq!(Cause::of_errno(errno), cause, "errno {errno}");
        }
    }

    #[test]
    fn every_cause_has_its_own_slot() {
        for (i, c) in Cause::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
        let mut counts = CauseCounts::default();
        counts.add(Cause::Refused);
        counts.add(Cause::Refused);
        counts.add(Cause::Eof);
        assert_eq!(
            counts.nonzero().collect::<Vec<_>>(),
            vec![(Cause::Refused, 2), (Cause::Eof, 1)]
        );
        assert_eq!(counts.total(), 3);
    }
}
