//! The configuration from every source: files, variables, precedence and the errors that name
//! the fix.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::settings::parse_origins;
use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
    pairs
        .iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect()
}

fn file(text: &str) -> Settings {
    match Settings::from_toml(text, Path::new("test.toml")) {
        Ok(layer) => layer,
        Err(e) => panic!("{e}"),
    }
}

fn error_of(result: Result<(Config, LogConfig), ConfigError>) -> String {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

/// Every key of the file, each with a value that differs from its default.
const FULL_FILE: &str = r#"
    listen = "127.0.0.1:9000"
    shards = 3
    backend = "epoll"
    max_connections = 5000
    drain_timeout = "45s"
    handshake_timeout = 7
    ping_interval = "30s"
    pong_timeout = "15s"
    idle_timeout = "2m"
    close_timeout = "1500ms"
    recv_buffer_size = 4096
    recv_buffers = 64
    max_outbox_bytes = 2097152
    pin_shards = false

    [http]
    max_request_line = 4096
    max_header_bytes = 16384
    max_headers = 32
    allowed_origins = ["https://example.com", "http://localhost:3000"]

    [ws]
    max_frame_size = 16384
    max_message_size = 1048576
    max_fragments = 16

    [log]
    level = "ringcast=debug,warn"
    format = "json"
"#;

#[test]
fn every_file_key_is_parsed() {
    let (config, log) = file(FULL_FILE).resolve().unwrap();
    assert_eq!(config.listen, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(config.shards, 3);
    assert_eq!(config.backend, Backend::Epoll);
    assert_eq!(config.max_connections, 5000);
    assert_eq!(config.drain_timeout, Duration::from_secs(45));
    assert_eq!(config.handshake_timeout, Duration::from_secs(7));
    assert_eq!(config.ping_interval, Duration::from_secs(30));
    assert_eq!(config.pong_timeout, Duration::from_secs(15));
    assert_eq!(config.idle_timeout, Duration::from_secs(120));
    assert_eq!(config.close_timeout, Duration::from_millis(1500));
    assert_eq!(config.http.max_request_line, 4096);
    assert_eq!(config.http.max_header_bytes, 16384);
    assert_eq!(config.http.max_headers, 32);
    assert_eq!(
        config.http.allowed_origins,
        vec![
            "https://example.com".to_owned(),
            "http://localhost:3000".to_owned()
        ]
    );
    assert_eq!(config.ws.max_frame_size, 16384);
    assert_eq!(config.ws.max_message_size, 1048576);
    assert_eq!(config.ws.max_fragments, 16);
    assert_eq!(config.recv_buffer_size, 4096);
    assert_eq!(config.recv_buffers, 64);
    assert_eq!(config.max_outbox_bytes, 2097152);
    assert!(!config.pin_shards);
    assert_eq!(log.filter, "ringcast=debug,warn");
    assert_eq!(log.format, LogFormat::Json);
}

#[test]
fn apps_sections_and_development_app_variables() {
    let layer = file(
        r#"
        [[apps]]
        id = "1"
        key = "k1"
        secret = "s1"
        client_events = true

        [[apps]]
        id = "2"
        key = "k2"
        secret = "s2"
        limits = { max_event_payload_bytes = 2048 }
        "#,
    );
    let (config, _) = layer.resolve().unwrap();
    let keys: Vec<&str> = config.apps.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(keys, ["k1", "k2"]);
    assert!(config.apps[0].client_events && !config.apps[1].client_events);
    assert_eq!(config.apps[1].limits.max_event_payload_bytes, 2048);

    let vars = env(&[("RINGCAST_APP_ID", "7"), ("RINGCAST_APP_KEY", "dev-key")]);
    let (layer, warnings) = Settings::from_env(vars).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let (config, _) = layer.resolve().unwrap();
    assert!(config.apps.is_empty());
    assert_eq!(config.dev_app.id.as_deref(), Some("7"));
    assert_eq!(config.dev_app.key.as_deref(), Some("dev-key"));
    assert_eq!(config.dev_app.secret, None);
}

#[test]
fn duplicate_app_keys_are_refused() {
    let layer = file(
        r#"
        [[apps]]
        id = "1"
        key = "same"
        secret = "s1"
        [[apps]]
        id = "2"
        key = "same"
        secret = "s2"
        "#,
    );
    let message = error_of(layer.resolve());
    assert!(message.starts_with("apps"), "{message}");
}

#[test]
fn every_env_variable_is_parsed() {
    let vars = env(&[
        ("RINGCAST_LISTEN", "127.0.0.1:9001"),
        ("RINGCAST_SHARDS", "5"),
        ("RINGCAST_BACKEND", "uring"),
        ("RINGCAST_MAX_CONNECTIONS", "70"),
        ("RINGCAST_DRAIN_TIMEOUT", "1m"),
        ("RINGCAST_HANDSHAKE_TIMEOUT", "3s"),
        ("RINGCAST_PING_INTERVAL", "10"),
        ("RINGCAST_PONG_TIMEOUT", "4s"),
        ("RINGCAST_IDLE_TIMEOUT", "1h"),
        ("RINGCAST_CLOSE_TIMEOUT", "250ms"),
        ("RINGCAST_MAX_REQUEST_LINE", "100"),
        ("RINGCAST_MAX_HEADER_BYTES", "200"),
        ("RINGCAST_MAX_HEADERS", "10"),
        (
            "RINGCAST_ALLOWED_ORIGINS",
            "https://a.example, https://b.example",
        ),
        ("RINGCAST_MAX_FRAME_SIZE", "300"),
        ("RINGCAST_MAX_MESSAGE_SIZE", "400"),
        ("RINGCAST_MAX_FRAGMENTS", "2"),
        ("RINGCAST_RECV_BUFFER_SIZE", "2048"),
        ("RINGCAST_RECV_BUFFERS", "128"),
        ("RINGCAST_MAX_OUTBOX_BYTES", "500"),
        ("RINGCAST_PIN_SHARDS", "false"),
        ("RINGCAST_LOG_LEVEL", "debug"),
        ("RINGCAST_LOG_FORMAT", "json"),
    ]);
    let loaded = load(Settings::default(), vars).unwrap();
    let config = loaded.config;
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(config.listen, "127.0.0.1:9001".parse().unwrap());
    assert_eq!(config.shards, 5);
    assert_eq!(config.backend, Backend::Uring);
    assert_eq!(config.max_connections, 70);
    assert_eq!(config.drain_timeout, Duration::from_secs(60));
    assert_eq!(config.handshake_timeout, Duration::from_secs(3));
    assert_eq!(config.ping_interval, Duration::from_secs(10));
    assert_eq!(config.pong_timeout, Duration::from_secs(4));
    assert_eq!(config.idle_timeout, Duration::from_secs(3600));
    assert_eq!(config.close_timeout, Duration::from_millis(250));
    assert_eq!(config.http.max_request_line, 100);
    assert_eq!(config.http.max_header_bytes, 200);
    assert_eq!(config.http.max_headers, 10);
    assert_eq!(
        config.http.allowed_origins,
        ["https://a.example", "https://b.example"]
    );
    assert_eq!(config.ws.max_frame_size, 300);
    assert_eq!(config.ws.max_message_size, 400);
    assert_eq!(config.ws.max_fragments, 2);
    assert_eq!(config.recv_buffer_size, 2048);
    assert_eq!(config.recv_buffers, 128);
    assert_eq!(config.max_outbox_bytes, 500);
    assert!(!config.pin_shards);
    assert_eq!(
        loaded.log,
        LogConfig {
            filter: "debug".into(),
            format: LogFormat::Json
        }
    );
}

#[test]
fn no_source_gives_the_defaults() {
    let loaded = load(Settings::default(), env(&[("PATH", "/bin")])).unwrap();
    let defaults = Config::default();
    assert_eq!(loaded.config.listen, defaults.listen);
    assert_eq!(loaded.config.shards, defaults.shards);
    assert_eq!(loaded.config.max_connections, defaults.max_connections);
    assert_eq!(loaded.config.http, defaults.http);
    assert_eq!(loaded.config.ws, defaults.ws);
    assert_eq!(loaded.log, LogConfig::default());
}

#[test]
fn flags_beat_env_and_env_beats_the_file() {
    let dir = std::env::temp_dir().join(format!("ringcast-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ringcast.toml");
    std::fs::write(
        &path,
        "shards = 2\nmax_connections = 10\nbackend = \"epoll\"\n",
    )
    .unwrap();
    let vars = env(&[
        ("RINGCAST_CONFIG", path.to_str().unwrap()),
        ("RINGCAST_MAX_CONNECTIONS", "20"),
        ("RINGCAST_BACKEND", "uring"),
    ]);
    let flags = Settings {
        backend: Some(Backend::Auto),
        ..Settings::default()
    };
    let loaded = load(flags, vars);
    std::fs::remove_dir_all(&dir).unwrap();
    let config = loaded.unwrap().config;
    assert_eq!(config.shards, 2, "file only");
    assert_eq!(config.max_connections, 20, "env over file");
    assert_eq!(config.backend, Backend::Auto, "flag over env and file");
}

#[test]
fn config_flag_beats_config_env() {
    let vars = env(&[("RINGCAST_CONFIG", "/nonexistent/env.toml")]);
    let flags = Settings {
        config: Some(PathBuf::from("/nonexistent/flag.toml")),
        ..Settings::default()
    };
    let message = load(flags, vars).unwrap_err().to_string();
    assert!(message.contains("flag.toml"), "{message}");
}

#[test]
fn rust_log_is_the_filter_only_when_no_setting_names_one() {
    let loaded = load(Settings::default(), env(&[("RUST_LOG", "trace")])).unwrap();
    assert_eq!(loaded.log.filter, "trace");
    let vars = env(&[("RUST_LOG", "trace"), ("RINGCAST_LOG_LEVEL", "warn")]);
    assert_eq!(load(Settings::default(), vars).unwrap().log.filter, "warn");
}

#[test]
fn unknown_env_names_warn_and_script_names_do_not() {
    let vars = env(&[("RINGCAST_SHARD", "4"), ("RINGCAST_SYSCTL_ROOT", "/tmp")]);
    let loaded = load(Settings::default(), vars).unwrap();
    assert_eq!(loaded.warnings.len(), 1);
    assert!(loaded.warnings[0].contains("RINGCAST_SHARD"));
}

#[test]
fn frame_limit_follows_the_message_limit_unless_set() {
    let (config, _) = file("[ws]\nmax_message_size = 1000000").resolve().unwrap();
    assert_eq!(config.ws.max_frame_size, 1000000);
    let (config, _) = file("[ws]\nmax_message_size = 32768").resolve().unwrap();
    assert_eq!(config.ws.max_frame_size, 32768);
}

#[test]
fn star_allows_every_origin() {
    let (config, _) = file("[http]\nallowed_origins = [\"*\"]").resolve().unwrap();
    assert!(config.http.allowed_origins.is_empty());
    assert_eq!(parse_origins("*"), Ok(Origins(Vec::new())));
}

#[test]
fn bad_files_name_the_key() {
    let cases: &[(&str, &str)] = &[
        ("shard = 4", "unknown field `shard`"),
        ("shards = -1", "shards"),
        ("pin_shards = \"no\"", "bool"),
        ("recv_buffers = 70000", "recv_buffers"),
        ("backend = \"kqueue\"", "unknown variant `kqueue`"),
        ("listen = \"localhost\"", "listen"),
        ("drain_timeout = \"soon\"", "500ms"),
        ("drain_timeout = -5", "negative"),
        ("[ws]\nmax_size = 1", "unknown field `max_size`"),
        ("shards = ", "test.toml"),
    ];
    for (text, want) in cases {
        let message = Settings::from_toml(text, Path::new("test.toml"))
            .map(drop)
            .unwrap_err()
            .to_string();
        assert!(message.contains(want), "{text:?} gave {message}");
    }
}

#[test]
fn bad_env_values_name_the_variable() {
    let cases: &[(&str, &str, &str)] = &[
        ("RINGCAST_SHARDS", "four", "whole number"),
        ("RINGCAST_BACKEND", "io_uring", "auto, uring or epoll"),
        ("RINGCAST_LISTEN", "8080", "address"),
        ("RINGCAST_DRAIN_TIMEOUT", "forever", "500ms"),
        ("RINGCAST_LOG_FORMAT", "xml", "human or json"),
        ("RINGCAST_PIN_SHARDS", "yes", "true"),
        ("RINGCAST_RECV_BUFFERS", "65536", "too large"),
    ];
    for (var, value, want) in cases {
        let message = load(Settings::default(), env(&[(var, value)])).unwrap_err();
        let message = message.to_string();
        assert!(message.contains(var), "{message}");
        assert!(message.contains(want), "{var}={value} gave {message}");
    }
}

#[test]
fn invalid_values_tell_the_fix() {
    let cases: &[(&str, &str)] = &[
        ("shards = 0", "shards (--shards): 0 shards"),
        ("max_connections = 0", "max_connections (--max-connections)"),
        (
            "handshake_timeout = 0",
            "handshake_timeout (--handshake-timeout)",
        ),
        (
            "idle_timeout = \"20s\"",
            "raise idle_timeout or lower ping_interval",
        ),
        ("[http]\nmax_headers = 3", "at least 5 headers"),
        ("[http]\nmax_request_line = 9000", "max_header_bytes (8192)"),
        ("[http]\nmax_header_bytes = 0", "http.max_header_bytes"),
        ("[http]\nallowed_origins = [\"example.com\"]", "no scheme"),
        (
            "[http]\nallowed_origins = [\"https://example.com/\"]",
            "has a path",
        ),
        ("[ws]\nmax_message_size = 0", "16 MiB"),
        ("[ws]\nmax_message_size = 16777217", "16 MiB"),
        ("[ws]\nmax_frame_size = 70000", "max_message_size (65536)"),
        (
            "[ws]\nmax_fragments = 0",
            "ws.max_fragments (--max-fragments)",
        ),
        (
            "mesh_queue_capacity = 0",
            "mesh_queue_capacity (--mesh-queue-capacity)",
        ),
        (
            "mesh_turn_budget = 0",
            "mesh_turn_budget (--mesh-turn-budget)",
        ),
        (
            "[log]\nlevel = \"ringcast=loud\"",
            "log.level (--log-level): \"ringcast=loud\"",
        ),
        (
            "recv_buffer_size = 100",
            "recv_buffer_size (--recv-buffer-size)",
        ),
        ("recv_buffers = 100", "not a power of two"),
        ("recv_buffers = 0", "not a power of two"),
        ("max_outbox_bytes = 1000", "below max_message_size (65536)"),
    ];
    for (text, want) in cases {
        let message = error_of(file(text).resolve());
        assert!(message.contains(want), "{text:?} gave {message}");
    }
}

#[test]
fn an_unreadable_file_names_the_path_and_the_fix() {
    let message = Settings::from_file(Path::new("/nonexistent/ringcast.toml"))
        .map(drop)
        .unwrap_err()
        .to_string();
    assert!(message.contains("/nonexistent/ringcast.toml"), "{message}");
    assert!(message.contains("--config"), "{message}");
}

#[test]
fn limit_keys_reach_the_config_from_every_source() {
    let text = "max_connections_per_ip = 5\ntrusted_proxies = \"10.0.0.0/8\"\n\
                outbox_policy = \"drop-oldest\"\nwrite_stall_timeout = \"3s\"\n\
                min_drain_rate = 100\n";
    let (config, _) = file(text).resolve().unwrap();
    assert_eq!(config.ip_limits.max_connections_per_ip, 5);
    assert_eq!(config.ip_limits.trusted_proxies.len(), 1);
    assert_eq!(
        config.outbox_policy,
        crate::limits::OutboxPolicy::DropOldest
    );
    assert_eq!(config.write_stall_timeout, Duration::from_secs(3));
    assert_eq!(config.min_drain_rate, 100);
    let env = [
        ("RINGCAST_LIMITS_EXEMPT", ""),
        ("RINGCAST_MAX_MESSAGES_PER_SEC", "7"),
        ("RINGCAST_MIN_DRAIN_RATE", "0"),
    ]
    .map(|(k, v)| (OsString::from(k), OsString::from(v)));
    let (layer, _) = Settings::from_env(env).unwrap();
    let (config, _) = layer.resolve().unwrap();
    assert!(config.ip_limits.exempt.is_empty());
    assert_eq!(config.message_rate.messages_per_second, 7);
    assert_eq!(config.min_drain_rate, 0);
    let bad = Settings::from_toml("trusted_proxies = \"10.0.0.0/99\"", Path::new("t"));
    assert!(bad.is_err(), "a bad range is reported, not dropped");
}

#[test]
fn byte_rate_below_one_message_is_refused() {
    let layer = Settings {
        max_bytes_per_sec: Some(1000),
        ..Settings::default()
    };
    assert!(layer.resolve().is_err());
}

#[test]
fn the_example_file_in_deploy_is_valid() {
    let text = include_str!("../../deploy/ringcast.toml");
    file(text).resolve().unwrap();
}

/// The `[default: X]` in each flag's help is what `fill` applies: setting X explicitly gives the
/// same configuration as leaving it out.
#[test]
fn documented_defaults_are_the_defaults() {
    use clap::{Args, FromArgMatches};
    // Defaults that depend on the host or on another setting, so no literal can be given.
    const NOT_LITERAL: &[&str] = &["online CPUs", "max-message-size"];
    let command = Settings::augment_args(clap::Command::new("ringcast"))
        .no_binary_name(true)
        .mut_args(|arg| arg.env(None));
    let unset = format!("{:?}", Settings::default().resolve().unwrap());
    let mut checked = 0;
    for arg in command.get_arguments() {
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        let Some((_, rest)) = help.split_once("[default: ") else {
            continue;
        };
        let value = rest.split(']').next().unwrap_or_default();
        if NOT_LITERAL.contains(&value) {
            continue;
        }
        let long = arg.get_long().unwrap_or_default();
        let matches = command
            .clone()
            .try_get_matches_from([format!("--{long}={value}")])
            .unwrap_or_else(|e| panic!("--{long}={value}: {e}"));
        let settings = Settings::from_arg_matches(&matches).unwrap();
        let set = format!("{:?}", settings.resolve().unwrap());
        assert_eq!(set, unset, "--{long} documents {value} as its default");
        checked += 1;
    }
    assert!(checked >= 25, "only {checked} documented defaults");
}

#[test]
fn admin_and_per_ip_keys_reach_the_config() {
    let text = "admin_listen = \"off\"\nadmin_request_timeout = \"3s\"\nadmin_max_feeds = 2\n\
                max_pending_handshakes_per_ip = 4\nipv6_prefix = 56\n";
    let (config, _) = file(text).resolve().unwrap();
    assert_eq!(config.admin_listen, AdminListen::Off);
    assert_eq!(config.admin_request_timeout, Duration::from_secs(3));
    assert_eq!(config.admin_max_feeds, 2);
    assert_eq!(config.ip_limits.max_pending_handshakes_per_ip, 4);
    assert_eq!(config.ip_limits.ipv6_prefix, 56);
    let (default, _) = Settings::default().resolve().unwrap();
    assert_eq!(
        default.admin_listen,
        AdminListen::Addr(DEFAULT_ADMIN_LISTEN)
    );
    let env =
        [("RINGCAST_ADMIN_LISTEN", "public")].map(|(k, v)| (OsString::from(k), OsString::from(v)));
    let (layer, _) = Settings::from_env(env).unwrap();
    assert_eq!(layer.resolve().unwrap().0.admin_listen, AdminListen::Public);
    let bad = Settings::from_toml("admin_listen = \"loopback\"", Path::new("t"));
    assert!(bad.is_err(), "neither an address nor off nor public");
    let message = error_of(file("ipv6_prefix = 0").resolve());
    assert!(message.contains("ipv6_prefix"), "{message}");
    let message = error_of(file("admin_request_timeout = \"0s\"").resolve());
    assert!(message.contains("admin_request_timeout"), "{message}");
}

#[test]
fn broker_settings_from_flags_env_and_file() {
    let env = [
        ("RINGCAST_BROKER", "nats://127.0.0.1:4223"),
        ("RINGCAST_BROKER_PREFIX", "blue"),
        ("RINGCAST_BROKER_REQUIRED", "true"),
    ]
    .map(|(k, v)| (OsString::from(k), OsString::from(v)));
    let (layer, warnings) = Settings::from_env(env).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let (config, _) = layer.resolve().unwrap();
    let broker = config.broker.expect("a broker");
    assert_eq!((broker.host.as_str(), broker.port), ("127.0.0.1", 4223));
    assert_eq!(config.broker_prefix, "blue");
    assert!(config.broker_required);
    let (config, _) = file("broker = \"redis://h/2\"").resolve().unwrap();
    assert_eq!(config.broker.map(|b| b.port), Some(6379));
    assert_eq!(config.broker_prefix, "ringcast");
    assert!(!config.broker_required);
    let none = Config::default();
    assert!(none.broker.is_none(), "standalone unless a broker is set");
}

#[test]
fn bad_broker_settings_are_refused_with_the_reason() {
    let env =
        [("RINGCAST_BROKER", "http://h")].map(|(k, v)| (OsString::from(k), OsString::from(v)));
    let error = Settings::from_env(env).unwrap_err().to_string();
    assert!(
        error.contains("RINGCAST_BROKER") && error.contains("scheme"),
        "{error}"
    );
    let error = Settings::from_toml("broker = \"redis://h:0\"", Path::new("t"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("invalid port"), "{error}");
    let required = Settings {
        broker_required: Some(true),
        ..Settings::default()
    };
    let error = required.resolve().unwrap_err().to_string();
    assert!(error.contains("broker_required"), "{error}");
    let short = Settings {
        presence_lease: Some(Duration::from_millis(100)),
        ..Settings::default()
    };
    let error = short.resolve().unwrap_err().to_string();
    assert!(error.contains("presence_lease"), "{error}");
    let empty = Settings {
        broker_queue_capacity: Some(0),
        ..Settings::default()
    };
    let error = empty.resolve().unwrap_err().to_string();
    assert!(error.contains("broker_queue_capacity"), "{error}");
    for prefix in ["", "a b", "a.b", "a:b", "*"] {
        let layer = Settings {
            broker_prefix: Some(prefix.to_owned()),
            ..Settings::default()
        };
        let error = layer.resolve().unwrap_err().to_string();
        assert!(error.contains("broker_prefix"), "{prefix:?}: {error}");
    }
}

#[test]
fn a_broker_ca_file_needs_rediss_and_a_certificate() {
    let dir = std::env::temp_dir().join(format!("ringcast-ca-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let garbled = dir.join("garbled.crt");
    std::fs::write(
        &garbled,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let env = [
        ("RINGCAST_BROKER", "rediss://127.0.0.1:6380"),
        ("RINGCAST_BROKER_CA_FILE", garbled.to_str().unwrap()),
    ]
    .map(|(k, v)| (OsString::from(k), OsString::from(v)));
    let (layer, _) = Settings::from_env(env).unwrap();
    assert_eq!(layer.broker_ca_file.as_deref(), Some(garbled.as_path()));
    let message = error_of(layer.resolve());
    assert!(
        message.contains("broker_ca_file") && message.contains("certificate"),
        "{message}"
    );
    let text = format!("broker_ca_file = {:?}", garbled.to_str().unwrap());
    let message = error_of(file(&format!("broker = \"redis://h\"\n{text}")).resolve());
    assert!(message.contains("not rediss://"), "{message}");
    let message = error_of(file(&text).resolve());
    assert!(message.contains("not rediss://"), "{message}");
    let message = error_of(
        file("broker = \"rediss://h\"\nbroker_ca_file = \"/nonexistent/ca.crt\"").resolve(),
    );
    assert!(message.contains("cannot read"), "{message}");
    let (config, _) = file("broker = \"rediss://h\"").resolve().unwrap();
    assert!(
        config.broker.is_some_and(|url| url.tls),
        "system roots without a CA file"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
