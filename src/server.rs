//! `ringcast serve`: raise the descriptor limit, pick the backend, bind one SO_REUSEPORT listener
//! per shard, start one pinned thread per shard, then wait for signals. The first SIGTERM or
//! SIGINT drains every shard (stop accepting, 503 to handshakes, close 1001 to connections) and
//! [`run`] returns `Ok` once they are gone or the drain timeout passed; a second signal returns
//! at once with [`ServeError::Interrupted`].
//!
//! A shard that panics takes the process down: its connections, its share of the hub's counts
//! and its presence members would otherwise stay behind for good while the process kept
//! serving one shard short. The shard's registry slot is marked failed at once (`/health` and
//! `/ready` answer 503 from then on), one error line names the shard and the panic, and [`run`]
//! returns [`ServeError::ShardPanicked`] without waiting for the other shards, so the process
//! exits non-zero and its supervisor (systemd, Kubernetes) starts a fresh one.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::{AdminListen, Backend, Config, DEFAULT_ADMIN_LISTEN};
use crate::driver::Driver;
use crate::driver::epoll::EpollDriver;
use crate::driver::sys;
use crate::driver::uring::{self, UringConfig, UringDriver};
use crate::limits::IpLimits;
use crate::mesh::{Mailbox, MailboxSender, MeshConfig};
use crate::metrics::{ProcessInfo, Registry};
use crate::shard::hub::Hub;
use crate::shard::{ConnLimit, Shard, ShardError};

/// Listen backlog asked for; the kernel caps it at `net.core.somaxconn` (4096 by default since
/// Linux 5.4), which `make tune` raises for connection storms.
const LISTEN_BACKLOG: i32 = 65535;

/// Descriptors a process needs besides connections: stdio, the signal pipe, and slack for logs
/// and libraries.
const RESERVED_FDS_PROCESS: u64 = 32;

/// Descriptors each shard needs besides connections: listener, eventfd, and the ring or epoll.
const RESERVED_FDS_PER_SHARD: u64 = 3;

/// Why the server could not start, or stopped badly. Each message tells the operator the fix.
#[derive(Debug)]
pub enum ServeError {
    /// Zero shards configured.
    NoShards,
    /// A listener could not be bound.
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The socket error.
        source: io::Error,
    },
    /// `--backend uring` was asked for and io_uring is not usable here.
    UringUnavailable(String),
    /// The signal handlers could not be installed.
    Signals(io::Error),
    /// A shard thread could not be started or could not set up its driver.
    ShardStart {
        /// Which shard.
        shard: usize,
        /// The error.
        source: io::Error,
    },
    /// A shard's event loop failed while serving.
    ShardFailed {
        /// Which shard.
        shard: usize,
        /// The error.
        source: ShardError,
    },
    /// A shard's thread panicked; the process exits so that its supervisor restarts it.
    ShardPanicked {
        /// Which shard.
        shard: usize,
        /// The panic's message.
        message: String,
    },
    /// A second signal arrived during the drain; connections were not waited for.
    Interrupted,
    /// The Pusher apps (configured or development) are not usable.
    Apps(crate::pusher::apps::AppsError),
    /// Cluster mode could not start (`--broker-required` and the broker is unreachable).
    Cluster(crate::cluster::ClusterError),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoShards => write!(f, "shards must be at least 1; set --shards"),
            Self::Bind { addr, source } => write!(
                f,
                "cannot listen on {addr}: {source}; is another process using it? Pick another \
                 --listen address (a port below 1024 also needs CAP_NET_BIND_SERVICE)"
            ),
            Self::UringUnavailable(why) => write!(
                f,
                "--backend uring asked for, but {why}; use --backend auto (falls back to epoll) \
                 or --backend epoll"
            ),
            Self::Signals(e) => write!(f, "cannot install SIGTERM/SIGINT handlers: {e}"),
            Self::ShardStart { shard, source } => write!(
                f,
                "shard {shard} could not start: {source}; with io_uring on kernels before 5.12 \
                 raise RLIMIT_MEMLOCK (ulimit -l), or use --backend epoll"
            ),
            Self::ShardFailed { shard, source } => write!(f, "shard {shard} stopped: {source}"),
            Self::ShardPanicked { shard, message } => write!(
                f,
                "shard {shard} panicked: {message}; exiting so the supervisor restarts the process"
            ),
            Self::Interrupted => write!(f, "second signal during drain: exited without waiting"),
            Self::Apps(e) => write!(f, "the Pusher apps are not usable: {e}"),
            Self::Cluster(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ServeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Bind { source, .. } | Self::ShardStart { source, .. } => Some(source),
            Self::Signals(source) => Some(source),
            Self::ShardFailed { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The backend the shards run on, after probing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chosen {
    Uring,
    Epoll,
}

/// What shard threads and the signal thread tell the control loop.
enum Control {
    Ready {
        shard: usize,
        mailbox: MailboxSender,
        backend: &'static str,
    },
    StartFailed {
        shard: usize,
        error: io::Error,
    },
    Exited {
        shard: usize,
        result: Result<(), ShardError>,
    },
    Panicked {
        shard: usize,
        message: String,
    },
    Signal(i32),
}

/// Serves until drained by a signal. See the module docs.
pub fn run(config: Config) -> Result<(), ServeError> {
    if config.shards == 0 {
        return Err(ServeError::NoShards);
    }
    let configured = config.max_connections as u64;
    let capacity = effective_capacity(configured, raised_nofile_limit(), config.shards);
    if capacity < configured {
        tracing::warn!(
            capacity,
            max_connections = config.max_connections,
            "the open-files limit allows fewer connections than max_connections; raise the hard \
             RLIMIT_NOFILE (see `ringcast check` and `make tune`)"
        );
    }
    let backend = choose_backend(config.backend)?;
    let listeners = bind_listeners(config.listen, config.shards)?;
    let listen_addr = listeners
        .first()
        .and_then(|l| l.local_addr().ok()?.as_socket());
    let mut signals = Signals::new([SIGTERM, SIGINT]).map_err(ServeError::Signals)?;
    let signal_handle = signals.handle();

    let hub = Arc::new(Hub::for_config(&config, config.shards).map_err(ServeError::Apps)?);
    let config = Arc::new(config);
    let limit = Arc::new(ConnLimit::new(config.max_connections));
    let registry = Arc::new(Registry::new(
        config.shards,
        ProcessInfo {
            version: env!("CARGO_PKG_VERSION"),
            backend: match backend {
                Chosen::Uring => "io_uring",
                Chosen::Epoll => "epoll",
            },
            start_time: std::time::SystemTime::now(),
            capacity,
            capacity_configured: configured,
        },
    ));
    if let Some(broker) = crate::cluster::start(&config, &hub).map_err(ServeError::Cluster)? {
        registry.set_broker(broker);
    }
    let ip_limits = Arc::new(IpLimits::new(config.ip_limits.clone()));
    start_admin(&config, &registry)?;
    let cpus = sys::allowed_cpus().unwrap_or_default();
    let pin = config.pin_shards && cpus.len() >= config.shards;
    let (control_tx, control_rx) = mpsc::channel();
    let mut threads = Vec::new();
    for (shard, listener) in listeners.into_iter().enumerate() {
        let cpu = if pin { cpus.get(shard).copied() } else { None };
        let (config, limit, control) =
            (Arc::clone(&config), Arc::clone(&limit), control_tx.clone());
        let hub = Arc::clone(&hub);
        let (registry, ip_limits) = (Arc::clone(&registry), Arc::clone(&ip_limits));
        let spawned = thread::Builder::new()
            .name(format!("shard-{shard}"))
            .spawn(move || {
                let shared = Shared {
                    config,
                    limit,
                    hub,
                    registry,
                    ip_limits,
                };
                shard_thread(shard, cpu, backend, listener.into(), shared, control)
            });
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(source) => return Err(ServeError::ShardStart { shard, source }),
        }
    }
    let signal_tx = control_tx;
    let signal_thread = thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal_tx.send(Control::Signal(signal)).is_err() {
                    break;
                }
            }
        })
        .map_err(ServeError::Signals)?;

    let result = control_loop(&control_rx, config.shards, listen_addr, capacity);
    signal_handle.close();
    let _ = signal_thread.join();
    // After a second signal or a panic the other shards are still serving: not waited for.
    if !matches!(
        result,
        Err(ServeError::Interrupted | ServeError::ShardPanicked { .. })
    ) {
        for handle in threads {
            let _ = handle.join();
        }
        // The other instances hear of the drained connections' presence leaves now, not
        // when this instance's lease runs out.
        if let Some(bridge) = hub.bridge()
            && !bridge.flush(crate::cluster::FLUSH_TIMEOUT)
        {
            tracing::warn!("the broker did not take the last messages before the exit");
        }
    }
    result
}

/// Starts the admin listener `admin_listen` asks for. The address must bind, except the
/// default one, which another instance on the host may hold: that is warned about and the
/// process serves without admin routes.
fn start_admin(config: &Config, registry: &Arc<Registry>) -> Result<(), ServeError> {
    let Some(addr) = config.admin_listen.addr() else {
        if config.admin_listen == AdminListen::Public {
            tracing::warn!("admin routes (/metrics, /dashboard) served on the public listener");
        }
        return Ok(());
    };
    let limits = crate::admin::AdminLimits {
        request_timeout: config.admin_request_timeout,
        max_feeds: config.admin_max_feeds,
    };
    match crate::admin::spawn(addr, Arc::clone(registry), limits) {
        Ok(admin) => {
            tracing::info!(admin = %admin, "admin routes listening");
            Ok(())
        }
        Err(source)
            if addr == DEFAULT_ADMIN_LISTEN && source.kind() == io::ErrorKind::AddrInUse =>
        {
            tracing::warn!(
                admin = %addr,
                error = %source,
                "admin routes not served: the default admin address is taken; set \
                 --admin-listen to another address, or off"
            );
            Ok(())
        }
        Err(source) => Err(ServeError::Bind { addr, source }),
    }
}

fn control_loop(
    control: &mpsc::Receiver<Control>,
    shards: usize,
    listen: Option<SocketAddr>,
    capacity: u64,
) -> Result<(), ServeError> {
    let mut mailboxes = Vec::with_capacity(shards);
    let mut failure = None;
    let mut running = 0;
    let mut started = 0;
    let mut draining = false;
    let drain_all = |mailboxes: &[MailboxSender]| {
        for mailbox in mailboxes {
            // A shard that already stopped needs no drain.
            let _ = mailbox.drain();
        }
    };
    while let Ok(message) = control.recv() {
        match message {
            Control::Ready {
                shard,
                mailbox,
                backend,
            } => {
                started += 1;
                running += 1;
                mailboxes.push(mailbox);
                let listen = listen.map(|a| a.to_string()).unwrap_or_default();
                tracing::info!(shard, backend, listen = %listen, capacity, "shard listening");
                if draining || failure.is_some() {
                    drain_all(&mailboxes);
                }
            }
            Control::StartFailed { shard, error } => {
                started += 1;
                failure.get_or_insert(ServeError::ShardStart {
                    shard,
                    source: error,
                });
                drain_all(&mailboxes);
            }
            Control::Exited { shard, result } => {
                running -= 1;
                if let Err(source) = result {
                    tracing::error!(shard, error = %source, "shard stopped");
                    failure.get_or_insert(ServeError::ShardFailed { shard, source });
                    drain_all(&mailboxes);
                }
            }
            // `main` logs the error, naming the shard and the panic.
            Control::Panicked { shard, message } => {
                return Err(ServeError::ShardPanicked { shard, message });
            }
            Control::Signal(signal) => {
                if draining {
                    tracing::warn!(
                        signal,
                        "second signal: exiting without waiting for the drain"
                    );
                    return Err(ServeError::Interrupted);
                }
                draining = true;
                tracing::info!(signal, "draining: closing connections with 1001");
                drain_all(&mailboxes);
            }
        }
        if started == shards && running == 0 {
            break;
        }
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// What every shard thread gets a handle of.
struct Shared {
    config: Arc<Config>,
    limit: Arc<ConnLimit>,
    hub: Arc<Hub>,
    registry: Arc<Registry>,
    ip_limits: Arc<IpLimits>,
}

fn shard_thread(
    shard: usize,
    cpu: Option<usize>,
    backend: Chosen,
    listener: OwnedFd,
    shared: Shared,
    control: mpsc::Sender<Control>,
) {
    let config = Arc::clone(&shared.config);
    let registry = Arc::clone(&shared.registry);
    if let Some(cpu) = cpu
        && let Err(error) = sys::pin_current_thread(cpu)
    {
        tracing::debug!(shard, cpu, %error, "could not pin shard thread");
    }
    // Unwind safety: after a panic nothing of the shard is used again; the process exits.
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| match backend {
        Chosen::Uring => {
            let uring_config = UringConfig {
                recv_buffers: config.recv_buffers,
                recv_buffer_size: config.recv_buffer_size.min(u32::MAX as usize) as u32,
            };
            UringDriver::new(uring_config)
                .and_then(|driver| serve(shard, driver, listener, shared, &control))
        }
        Chosen::Epoll => EpollDriver::new(config.recv_buffer_size)
            .and_then(|driver| serve(shard, driver, listener, shared, &control)),
    }));
    let message = match outcome {
        Ok(Ok(result)) => Control::Exited { shard, result },
        Ok(Err(error)) => Control::StartFailed { shard, error },
        Err(payload) => {
            if let Some(slot) = registry.shard(shard) {
                slot.mark_failed();
            }
            Control::Panicked {
                shard,
                message: panic_message(payload.as_ref()),
            }
        }
    };
    let _ = control.send(message);
}

/// The text a panic was raised with (`panic!` gives a `&str` or a `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Sets the shard up on `driver`, reports it ready, runs it. The outer error is a start-up
/// failure, the inner one a failure while serving.
fn serve<D: Driver>(
    shard: usize,
    driver: D,
    listener: OwnedFd,
    shared: Shared,
    control: &mpsc::Sender<Control>,
) -> io::Result<Result<(), ShardError>> {
    let backend = driver.backend();
    // One data lane per shard: every shard may publish to every other; in a cluster one more,
    // after the shards', for the broker bridge's deliveries.
    let lanes = shared.hub.shards() + usize::from(shared.hub.bridge().is_some());
    let mesh = MeshConfig::for_config(&shared.config, lanes);
    let (mailbox_tx, mailbox) = Mailbox::new(driver.waker(), &mesh);
    let Shared {
        config,
        limit,
        hub,
        registry,
        ip_limits,
    } = shared;
    hub.register_peer(shard, mailbox_tx.clone());
    let shard_loop = Shard::with_hub(driver, listener, config, mailbox, limit, hub, shard)?
        .with_shared(shard, registry, ip_limits);
    let _ = control.send(Control::Ready {
        shard,
        mailbox: mailbox_tx,
        backend,
    });
    Ok(shard_loop.run())
}

/// Raises the soft open-files limit to the hard one and returns the soft limit in force after.
fn raised_nofile_limit() -> u64 {
    match sys::raise_nofile_limit() {
        Ok(soft) => soft,
        Err(error) => {
            tracing::warn!(%error, "could not raise RLIMIT_NOFILE to its hard limit");
            sys::nofile_limit().map(|(soft, _)| soft).unwrap_or(0)
        }
    }
}

/// The connections the process can hold: the `configured` maximum, or fewer when the open-files
/// limit `nofile` leaves room for fewer once the process and its `shards` have their own
/// descriptors. `/health` and `ringcast_connections_capacity` report this figure.
fn effective_capacity(configured: u64, nofile: u64, shards: usize) -> u64 {
    let reserved = RESERVED_FDS_PROCESS + RESERVED_FDS_PER_SHARD * shards as u64;
    configured.min(nofile.saturating_sub(reserved))
}

/// Probes io_uring for `auto` and `uring`; `auto` falls back to epoll with one line saying why.
fn choose_backend(backend: Backend) -> Result<Chosen, ServeError> {
    match backend {
        Backend::Epoll => Ok(Chosen::Epoll),
        Backend::Uring => uring::probe()
            .map(|()| Chosen::Uring)
            .map_err(|why| ServeError::UringUnavailable(why.to_string())),
        Backend::Auto => match uring::probe() {
            Ok(()) => Ok(Chosen::Uring),
            Err(why) => {
                tracing::warn!(reason = %why, "io_uring unavailable; using epoll");
                Ok(Chosen::Epoll)
            }
        },
    }
}

/// One SO_REUSEPORT listener per shard on `addr`. With port 0 the first binds an ephemeral port
/// and the others bind the port it got, so all shards share one address.
fn bind_listeners(addr: SocketAddr, shards: usize) -> Result<Vec<Socket>, ServeError> {
    let mut listeners: Vec<Socket> = Vec::with_capacity(shards);
    let mut bound = addr;
    for _ in 0..shards {
        let listener = bind_one(bound).map_err(|source| ServeError::Bind {
            addr: bound,
            source,
        })?;
        if let Some(local) = listener.local_addr().ok().and_then(|a| a.as_socket()) {
            bound = local;
        }
        listeners.push(listener);
    }
    Ok(listeners)
}

fn bind_one(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_binds_every_shard_to_the_same_port() {
        let listeners = bind_listeners("127.0.0.1:0".parse().expect("addr"), 3).expect("bind");
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| {
                l.local_addr()
                    .expect("addr")
                    .as_socket()
                    .expect("inet")
                    .port()
            })
            .collect();
        assert_ne!(ports[0], 0);
        assert!(
            ports.iter().all(|&p| p == ports[0]),
            "ports differ: {ports:?}"
        );
    }

    #[test]
    fn bind_conflict_names_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        match bind_listeners(addr, 1) {
            Err(ServeError::Bind { addr: failed, .. }) => assert_eq!(failed, addr),
            other => panic!("expected a bind error, got {other:?}"),
        }
    }

    #[test]
    fn the_soft_limit_is_raised_and_capacity_leaves_room_for_the_process_and_shards() {
        let (soft, _) = sys::nofile_limit().expect("rlimit");
        let raised = raised_nofile_limit();
        assert!(raised >= soft);
        assert_eq!(sys::nofile_limit().expect("rlimit").0, raised);
        let room = raised.saturating_sub(RESERVED_FDS_PROCESS + 2 * RESERVED_FDS_PER_SHARD);
        assert_eq!(effective_capacity(u64::MAX, raised, 2), room);
    }

    #[test]
    fn capacity_is_the_configured_one_or_what_the_open_files_limit_allows() {
        let reserved = RESERVED_FDS_PROCESS + 4 * RESERVED_FDS_PER_SHARD;
        let cases: &[(u64, u64, u64)] = &[
            // (configured, RLIMIT_NOFILE, effective)
            (1_000_000, 20_000, 20_000 - reserved),
            (1_000, 20_000, 1_000),
            (1_000_000, 2_097_152, 1_000_000),
            (1_000_000, 10, 0),
        ];
        for &(configured, nofile, effective) in cases {
            assert_eq!(
                effective_capacity(configured, nofile, 4),
                effective,
                "{configured} configured, nofile {nofile}"
            );
        }
    }
}
