//! The start-up check that this kernel can run the io_uring driver at all: ring setup, every
//! opcode the driver submits, and a real multishot receive into a provided-buffer ring.

use std::io;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use io_uring::{IoUring, opcode};

use super::{UringConfig, UringDriver};
use crate::driver::{ConnKey, Driver, Event};

/// Why io_uring cannot serve as the backend on this host, in words for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks, once at start, that this kernel lets us set up a ring and offers every operation the
/// driver uses, including multishot receive into a provided-buffer ring (tried for real on a
/// socket pair, because the opcode probe cannot tell multishot support apart).
pub fn probe() -> Result<(), Unavailable> {
    let ring = IoUring::new(8).map_err(|e| Unavailable(setup_refused(&e)))?;
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| Unavailable(format!("io_uring opcode probe refused: {e}")))?;
    let needed = [
        ("accept", opcode::AcceptMulti::CODE),
        ("recv", opcode::RecvMulti::CODE),
        ("sendmsg", opcode::SendMsg::CODE),
        ("timeout", opcode::Timeout::CODE),
        ("poll_add", opcode::PollAdd::CODE),
        ("async_cancel", opcode::AsyncCancel2::CODE),
    ];
    for (name, code) in needed {
        if !probe.is_supported(code) {
            return Err(Unavailable(format!(
                "kernel lacks the io_uring {name} operation"
            )));
        }
    }
    drop(ring);
    probe_multishot_recv().map_err(|e| {
        Unavailable(format!(
            "multishot receive with a provided-buffer ring unavailable: {e}"
        ))
    })
}

fn probe_multishot_recv() -> io::Result<()> {
    let (a, b) = std::os::unix::net::UnixStream::pair()?;
    let mut driver = UringDriver::new(UringConfig {
        recv_buffers: 2,
        recv_buffer_size: 64,
    })?;
    let key = ConnKey {
        slot: 0,
        generation: 1,
    };
    driver.register(key, OwnedFd::from(a))?;
    std::io::Write::write_all(&mut &b, b"x")?;
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        driver.wait(Duration::from_millis(50))?;
        while let Some(event) = driver.poll_event() {
            match event {
                Event::Recv { buf, .. } => {
                    driver.release(buf);
                    // A multishot receive that stays armed reports no follow-up RecvStopped.
                    return if driver.pending.is_empty() {
                        Ok(())
                    } else {
                        Err(io::Error::other("receive completed without staying armed"))
                    };
                }
                Event::Eof { .. } | Event::RecvStopped { .. } => {
                    return Err(io::Error::other("receive did not deliver the probe byte"));
                }
                _ => {}
            }
        }
    }
    Err(io::Error::other("no completion within a second"))
}

/// Words for a refused `io_uring_setup`, naming the sysctl when it is the cause.
fn setup_refused(err: &io::Error) -> String {
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    match (err.raw_os_error(), sysctl.as_str()) {
        (Some(libc::EPERM), "2") => "io_uring disabled by sysctl kernel.io_uring_disabled=2".into(),
        (Some(libc::EPERM), "1") => {
            "io_uring restricted by kernel.io_uring_disabled=1 to the io_uring_group".into()
        }
        (Some(libc::EPERM | libc::ENOSYS), _) => {
            format!(
                "io_uring_setup refused ({err}): blocked by seccomp or a kernel without io_uring"
            )
        }
        _ => format!("io_uring_setup failed: {err}"),
    }
}

/// A driver for the unit tests, or `None` (with a line saying why) when this kernel refuses
/// io_uring itself: disabled by sysctl, blocked by seccomp, or not built in; a missing kernel
/// feature is the one reason a test may skip. Any other failure of the probe fails the test.
#[cfg(test)]
pub(crate) fn test_driver(config: UringConfig) -> Option<UringDriver> {
    if let Err(err) = IoUring::new(8)
        && matches!(err.raw_os_error(), Some(libc::EPERM | libc::ENOSYS))
    {
        eprintln!("skipping io_uring test: {}", setup_refused(&err));
        return None;
    }
    if let Err(why) = probe() {
        panic!("the kernel offers io_uring but the driver's probe failed: {why}");
    }
    Some(UringDriver::new(config).expect("io_uring driver"))
}
