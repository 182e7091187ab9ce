//! The `ringcast` command line: `ringcast serve` runs the server, `ringcast check` says whether
//! this host can hold the connections asked for. Settings come from `--config FILE`, then
//! `RINGCAST_*` variables, then flags (see `ringcast::config`).

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ringcast::check::{self, HostFacts, Profile};
use ringcast::config::{self, LogConfig, LogFormat, Settings};

/// mimalloc: small, fast size classes and low per-allocation overhead for the millions of
/// tiny allocations a dense server makes (outboxes, partial frames, handshake buffers).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for a configuration that does not load, as clap uses for usage errors.
const EXIT_CONFIG: u8 = 2;

/// Told after the flags in `--help`: the other two spellings of every flag.
const SOURCES_HELP: &str = "\
Every flag is also an environment variable and a config file key: --max-connections is
RINGCAST_MAX_CONNECTIONS and `max_connections` (HTTP, WebSocket and log settings sit in the
[http], [ws] and [log] tables of the file). Precedence: file < environment < flags.
Durations: integer seconds or 500ms, 1.5s, 2m, 1h. Example file: deploy/ringcast.toml.";

/// ringcast: a WebSocket pub/sub server speaking the Pusher Channels protocol.
#[derive(Debug, Parser)]
#[command(name = "ringcast", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server until SIGTERM or SIGINT drains it.
    #[command(after_help = SOURCES_HELP)]
    Serve(ServeArgs),
    /// Say whether this host can hold N connections, what is missing and how to fix it (exit 1
    /// when it cannot).
    #[command(after_help = SOURCES_HELP)]
    Check(CheckArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    settings: Settings,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// Connections to check for [default: max-connections].
    #[arg(long, value_name = "N")]
    connections: Option<u64>,
    #[command(flatten)]
    settings: Settings,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // clap reads the RINGCAST_* variables too, and blames the flag for a bad one; name
            // the variable instead, as `config::load` would.
            if let Err(env_error) = Settings::from_env(std::env::vars_os()) {
                eprintln!("ringcast: {env_error}");
                return ExitCode::from(EXIT_CONFIG);
            }
            error.exit()
        }
    };
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Check(args) => check(args),
    }
}

/// Loads the configuration; on failure prints the fix and gives the exit status.
fn load(settings: Settings) -> Result<config::Loaded, ExitCode> {
    config::load(settings, std::env::vars_os()).map_err(|e| {
        eprintln!("ringcast: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn serve(args: ServeArgs) -> ExitCode {
    let loaded = match load(args.settings) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    if let Err(e) = init_logging(&loaded.log) {
        eprintln!("ringcast: cannot start logging: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    for warning in check::startup_warnings(&loaded.config) {
        tracing::warn!("{warning}");
    }
    match ringcast::server::run(loaded.config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("ringcast serve failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(args: CheckArgs) -> ExitCode {
    let loaded = match load(args.settings) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    for warning in &loaded.warnings {
        eprintln!("ringcast: {warning}");
    }
    let profile = match Profile::builtin() {
        Ok(profile) => profile,
        Err(e) => {
            eprintln!("ringcast: {e}");
            return ExitCode::FAILURE;
        }
    };
    let connections = args
        .connections
        .unwrap_or_else(|| u64::try_from(loaded.config.max_connections).unwrap_or(u64::MAX));
    let facts = HostFacts::from_host(&profile);
    let report = check::assess(&profile, &facts, connections, loaded.config.backend);
    print!("{}", report.render());
    if report.can_hold() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Installs the global subscriber: human lines or JSON lines on stderr, filtered by
/// `--log-level` (RUST_LOG syntax). Records of the `log` crate are forwarded to it.
fn init_logging(log: &LogConfig) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use tracing_subscriber::util::SubscriberInitExt as _;
    // Colours only for a person at a terminal; journald, files and shippers get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    subscriber(log, std::io::stderr, ansi)?.try_init()?;
    Ok(())
}

/// A log subscriber for `log` writing to `writer`, with ANSI colours when `ansi`; split from
/// [`init_logging`] so tests can read what it writes.
fn subscriber<W>(
    log: &LogConfig,
    writer: W,
    ansi: bool,
) -> Result<Box<dyn tracing::Subscriber + Send + Sync>, tracing_subscriber::filter::ParseError>
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_new(&log.filter)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    Ok(match log.format {
        LogFormat::Human => Box::new(builder.finish()),
        LogFormat::Json => Box::new(builder.json().with_current_span(false).finish()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ringcast").chain(args.iter().copied()))
    }

    /// A writer that keeps what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(filter: &str, format: LogFormat) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let log = LogConfig {
            filter: filter.to_owned(),
            format,
        };
        let subscriber = subscriber(&log, move || writer.clone(), false).unwrap();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(shard = 3, "shard listening");
            tracing::debug!("per-connection detail");
        });
        let bytes = captured
            .0
            .lock()
            .map(|bytes| bytes.clone())
            .unwrap_or_default();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn logs_are_human_lines_or_json_lines_and_filtered() {
        let human = logged("info", LogFormat::Human);
        assert!(
            human.contains("INFO") && human.contains("shard listening"),
            "{human}"
        );
        assert!(human.contains("shard=3"), "{human}");
        assert!(
            !human.contains("per-connection"),
            "debug is filtered out at info"
        );

        let json = logged("info", LogFormat::Json);
        let lines: Vec<&str> = json.lines().collect();
        assert_eq!(lines.len(), 1, "{json}");
        assert!(
            lines[0].starts_with('{') && lines[0].ends_with('}'),
            "{json}"
        );
        assert!(lines[0].contains(r#""level":"INFO""#), "{json}");
        assert!(
            lines[0].contains(r#""message":"shard listening""#),
            "{json}"
        );
        assert!(lines[0].contains(r#""shard":3"#), "{json}");

        assert_eq!(
            logged("ringcast=debug", LogFormat::Human).lines().count(),
            2
        );
        assert_eq!(logged("warn", LogFormat::Human), "");
    }

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_without_flags_sets_nothing() {
        let Command::Serve(args) = parse(&["serve"]).unwrap().command else {
            panic!("not serve")
        };
        assert_eq!(args.settings, Settings::default());
    }

    #[test]
    fn serve_takes_every_setting_as_a_flag() {
        let cli = parse(&[
            "serve",
            "--config=ringcast.toml",
            "--listen=127.0.0.1:1",
            "--shards=2",
            "--backend=epoll",
            "--max-connections=3",
            "--drain-timeout=4s",
            "--handshake-timeout=5",
            "--ping-interval=6s",
            "--pong-timeout=7s",
            "--idle-timeout=8m",
            "--close-timeout=900ms",
            "--max-request-line=10",
            "--max-header-bytes=11",
            "--max-headers=12",
            "--allowed-origins=https://a.example,https://b.example",
            "--max-frame-size=13",
            "--max-message-size=14",
            "--max-fragments=15",
            "--recv-buffer-size=16",
            "--recv-buffers=17",
            "--max-outbox-bytes=18",
            "--pin-shards=false",
            "--log-level=debug",
            "--log-format=json",
        ])
        .unwrap();
        let Command::Serve(ServeArgs { settings }) = cli.command else {
            panic!("not serve")
        };
        assert!(settings.config.is_some());
        assert_eq!(settings.listen, Some("127.0.0.1:1".parse().unwrap()));
        assert_eq!(settings.shards, Some(2));
        assert_eq!(settings.backend, Some(ringcast::config::Backend::Epoll));
        assert_eq!(settings.max_connections, Some(3));
        assert_eq!(
            settings.drain_timeout,
            Some(std::time::Duration::from_secs(4))
        );
        assert_eq!(
            settings.handshake_timeout,
            Some(std::time::Duration::from_secs(5))
        );
        assert_eq!(
            settings.idle_timeout,
            Some(std::time::Duration::from_secs(480))
        );
        assert_eq!(
            settings.close_timeout,
            Some(std::time::Duration::from_millis(900))
        );
        assert_eq!(settings.http.max_headers, Some(12));
        assert_eq!(
            settings.http.allowed_origins.map(|o| o.0),
            Some(vec![
                "https://a.example".to_owned(),
                "https://b.example".to_owned()
            ])
        );
        assert_eq!(settings.ws.max_fragments, Some(15));
        assert_eq!(settings.recv_buffers, Some(17));
        assert_eq!(settings.max_outbox_bytes, Some(18));
        assert_eq!(settings.pin_shards, Some(false));
        assert_eq!(settings.log.format, Some(LogFormat::Json));
    }

    #[test]
    fn bad_flags_are_usage_errors_that_name_the_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["serve", "--backend=kqueue"], "--backend"),
            (&["serve", "--shards=many"], "--shards"),
            (&["serve", "--drain-timeout=soon"], "500ms"),
            (&["serve", "--listen=8080"], "--listen"),
            (&["serve", "--no-such-flag"], "--no-such-flag"),
            (&["check", "--connections=-1"], "--connections"),
        ];
        for (args, want) in cases {
            let error = parse(args).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{args:?}");
            assert!(error.to_string().contains(want), "{args:?}: {error}");
        }
    }

    #[test]
    fn check_takes_connections_and_the_settings() {
        let cli = parse(&["check", "--connections", "19000", "--backend", "epoll"]).unwrap();
        let Command::Check(args) = cli.command else {
            panic!("not check")
        };
        assert_eq!(args.connections, Some(19000));
        assert_eq!(
            args.settings.backend,
            Some(ringcast::config::Backend::Epoll)
        );
    }

    #[test]
    fn help_names_the_env_and_file_spellings() {
        let mut command = Cli::command();
        let help = command
            .find_subcommand_mut("serve")
            .map(|serve| serve.render_long_help().to_string())
            .unwrap_or_default();
        assert!(help.contains("--max-connections"), "{help}");
        assert!(help.contains("RINGCAST_MAX_CONNECTIONS"), "{help}");
        assert!(help.contains("[default: 0.0.0.0:8080]"), "{help}");
    }

    /// The recipes in deploy/ call the binary with flags this CLI must accept.
    #[test]
    fn deploy_recipes_use_valid_flags() {
        let recipes = [
            include_str!("../deploy/ringcast.service"),
            include_str!("../deploy/Dockerfile"),
            include_str!("../deploy/compose.yaml"),
        ];
        let mut seen = 0;
        for recipe in recipes {
            for line in recipe.lines() {
                let words: Vec<&str> = line
                    .split(|c: char| c.is_whitespace() || matches!(c, '"' | '[' | ']' | ','))
                    .filter(|word| !word.is_empty())
                    .collect();
                let Some(start) = words.iter().position(|word| *word == "serve") else {
                    continue;
                };
                parse(&words[start..]).unwrap_or_else(|e| panic!("{line}: {e}"));
                seen += 1;
            }
        }
        assert!(seen >= 3, "each recipe has a `ringcast serve` line");
    }
}
