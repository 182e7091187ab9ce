//! The `ringcast` binary end to end: exit statuses and messages of `check` and of a `serve`
//! whose configuration does not load (those stop before any socket is opened), and the
//! capacity a `serve` under a low open-files limit reports.

use std::process::{Command, Output};

fn ringcast(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringcast"));
    command.args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run ringcast: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_answers_no_with_status_1_when_the_host_cannot() {
    let output = ringcast(&["check", "--connections", "18446744073709551615"], &[]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.starts_with("ringcast check: can this host hold"),
        "{stdout}"
    );
    assert!(stdout.contains("FAIL  memory"), "{stdout}");
    assert!(
        stdout
            .lines()
            .last()
            .is_some_and(|line| line.starts_with("no: ")),
        "{stdout}"
    );
}

#[test]
fn check_status_agrees_with_its_verdict() {
    let output = ringcast(&["check", "--connections", "1"], &[]);
    let stdout = text(&output.stdout);
    let verdict = stdout.lines().last().unwrap_or_default();
    match output.status.code() {
        Some(0) => assert!(verdict.starts_with("yes: "), "{stdout}"),
        Some(1) => assert!(verdict.starts_with("no: "), "{stdout}"),
        other => panic!("status {other:?}: {stdout}"),
    }
}

#[test]
fn a_bad_setting_stops_serve_with_status_2_and_the_fix() {
    let output = ringcast(&["serve", "--shards", "0"], &[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("shards (--shards): 0 shards cannot serve anything"),
        "{stderr}"
    );

    let output = ringcast(&["serve"], &[("RINGCAST_MAX_CONNECTIONS", "lots")]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("RINGCAST_MAX_CONNECTIONS"), "{stderr}");

    let output = ringcast(&["check", "--config", "/nonexistent/ringcast.toml"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("/nonexistent/ringcast.toml"));
}

#[test]
fn a_bad_flag_is_a_usage_error() {
    let output = ringcast(&["serve", "--backend", "kqueue"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("auto, uring or epoll"));
}

/// `ringcast check` and `make tune-check` read one profile; they must also judge it alike.
#[test]
fn the_rust_check_and_the_shell_script_judge_alike() {
    use ringcast::check::{HostFacts, Profile};

    let root = std::env::temp_dir().join(format!("ringcast-agree-{}", std::process::id()));
    let values = [
        ("fs.file-max", "9223372036854775807"),
        ("fs.nr_open", "1048576"),
        ("fs.epoll.max_user_watches", "2097152"),
        ("net.core.somaxconn", "4096"),
        ("net.ipv4.tcp_max_syn_backlog", "65535"),
        ("net.ipv4.ip_local_port_range", "1024\t60999"),
        ("net.ipv4.tcp_mem", "786432\t1048576\t100"),
        ("net.ipv4.tcp_rmem", "4096\t131072\t6291456"),
        ("net.ipv4.tcp_wmem", "4096\t16384\t4194304"),
        ("net.ipv4.tcp_fin_timeout", "10"),
        ("net.ipv4.tcp_tw_reuse", "2"),
        ("net.ipv4.tcp_max_orphans", "262144"),
    ];
    for (key, value) in values {
        let path = root.join("sys").join(key.replace('.', "/"));
        std::fs::create_dir_all(path.parent().unwrap_or(&root)).unwrap();
        std::fs::write(path, format!("{value}\n")).unwrap();
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/sysctl/tune.sh");
    let output = Command::new("sh")
        .args([script, "check"])
        .env("RINGCAST_SYSCTL_ROOT", root.join("sys"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run sh: {e}"));
    let profile = Profile::builtin().unwrap();
    let facts = HostFacts::from_proc(&root, &profile);
    std::fs::remove_dir_all(&root).unwrap();

    let table = text(&output.stdout);
    let mut compared = 0;
    for entry in &profile.entries {
        let row = table
            .lines()
            .find(|line| line.split_whitespace().next() == Some(entry.key.as_str()))
            .unwrap_or_else(|| panic!("no row for {} in\n{table}", entry.key));
        let rust_says = match facts.sysctls.get(&entry.key) {
            Some(current) => entry.judge(current).to_string(),
            None if entry.optional => "SKIP".to_owned(),
            None => "MISSING".to_owned(),
        };
        let status = if row.ends_with("SKIP (module not loaded)") {
            Some("SKIP")
        } else {
            row.split_whitespace().last()
        };
        assert_eq!(status, Some(rust_says.as_str()), "{row}");
        compared += 1;
    }
    assert_eq!(compared, profile.entries.len());
    assert_eq!(output.status.code(), Some(1), "the host is off the profile");
}

/// Under an open-files limit of 256, a server configured for 100000 connections reports the
/// connections it can hold as `capacity` and the configured maximum beside it.
#[test]
fn health_reports_the_capacity_the_open_files_limit_allows() {
    use std::io::{BufRead, BufReader, Read, Write};

    // `ulimit -n` sets both the soft and the hard limit, so the server cannot raise it.
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -n 256 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_ringcast"))
        .args([
            "serve",
            "--listen=127.0.0.1:0",
            "--shards=1",
            "--backend=epoll",
        ])
        .args(["--max-connections=100000", "--pin-shards=false"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run ringcast: {e}"));
    let stderr = child.stderr.take().expect("piped stderr");
    let mut log = String::new();
    let mut addr = None;
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap_or_default();
        log.push_str(&line);
        log.push('\n');
        if line.contains("shard listening") {
            addr = line
                .split_whitespace()
                .find_map(|word| word.strip_prefix("listen="))
                .map(str::to_owned);
            break;
        }
    }
    let Some(addr) = addr else {
        let _ = child.kill();
        panic!("the server did not start listening:\n{log}");
    };
    let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let _ = child.kill();
    let _ = child.wait();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let json: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"));
    let capacity = json["capacity"]
        .as_u64()
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(json["capacity_configured"], 100_000, "{json}");
    assert!(capacity > 0 && capacity < 256, "{json}");
}
