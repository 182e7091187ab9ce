//! Fault injection for the test suite, compiled into debug builds only: release binaries carry
//! none of it. `RINGCAST_TEST_PANIC_SHARD=N` makes shard N panic on its first accepted
//! connection, so a test can check what a shard panic does to the whole process
//! (`tests/shard_panic.rs`).

/// The variable naming the shard that panics. Test-only: never set it in production.
const PANIC_SHARD: &str = "RINGCAST_TEST_PANIC_SHARD";

/// The faults asked of one shard.
#[derive(Debug)]
pub(super) struct Fault {
    /// Panic on the next accepted connection.
    panic_on_accept: bool,
}

impl Fault {
    /// The faults the environment asks of shard `index`.
    pub(super) fn from_env(index: usize) -> Self {
        let chosen = std::env::var(PANIC_SHARD)
            .ok()
            .and_then(|value| value.trim().parse::<usize>().ok());
        Self {
            panic_on_accept: chosen == Some(index),
        }
    }

    /// A connection was accepted: panics when asked to.
    pub(super) fn handle_accept(&self) {
        if self.panic_on_accept {
            panic!("fault injected by {PANIC_SHARD}");
        }
    }
}
