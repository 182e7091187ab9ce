//! The `ringcast` binary end to end: exit statuses and messages of `check` and of a `serve`
//! whose configuration does not load (those stop before any socket is opened).

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
