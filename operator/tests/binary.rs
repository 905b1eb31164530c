//! The `berth` binary itself, without an engine: arguments, the CRD output, usage errors.
//!
//! (Having an integration test here also makes `cargo test --workspace` build the binary with
//! the run's feature set, so the engine tests in `tests/` reuse it instead of building it
//! again.)

use std::process::Command;

fn berth(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_berth")).args(args).output().expect("run berth")
}

#[test]
fn crd_prints_both_definitions_as_yaml() {
    let out = berth(&["crd"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("name: containersets.berth.dev"), "{text}");
    assert!(text.contains("name: dockerhosts.berth.dev"), "{text}");
}

#[test]
fn a_missing_file_is_an_input_error_before_any_engine_is_contacted() {
    // DOCKER_HOST points nowhere: if berth tried an engine, the error would say so instead.
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["plan", "-f", "/nonexistent/berth.yaml"])
        .env("DOCKER_HOST", "unix:///nonexistent.sock")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("/nonexistent/berth.yaml: cannot read"), "{err}");
    assert!(err.contains("no host was touched"), "{err}");
}

#[test]
fn unknown_subcommands_are_usage_errors() {
    let out = berth(&["deploy"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage error code");
}
