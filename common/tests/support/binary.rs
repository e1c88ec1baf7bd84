//! Runs a service binary with nothing but the given variables (and `PATH`), for the start-up
//! tests of ingest, the worker and the scheduler (each includes this file with `#[path]`,
//! since only a crate's own tests know its `CARGO_BIN_EXE_*`).

use std::process::Command;

/// A key that is valid but not the development one.
pub const REAL_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// Runs `binary` with `vars`; returns its exit code and standard error.
pub fn start(binary: &str, vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(binary);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run the binary");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts that a missing, empty or development `ENCRYPTION_KEY` stops `binary` with exit
/// code 2 and a message naming the variable, and that `HULL_ORGANIZATIONS` is required
/// outside local mode.
pub fn refuses_unsafe_configuration(binary: &str) {
    for vars in [
        vec![],
        vec![("ENCRYPTION_KEY", "")],
        vec![("ENCRYPTION_KEY", common::config::DEV_ENCRYPTION_KEY)],
        vec![("ENCRYPTION_KEY", ""), ("LOCAL_MODE", "true")],
    ] {
        let (code, stderr) = start(binary, &vars);
        assert_eq!(code, Some(2), "{vars:?}: {stderr}");
        assert!(stderr.contains("ENCRYPTION_KEY"), "{vars:?}: {stderr}");
    }
    let (code, stderr) = start(binary, &[("ENCRYPTION_KEY", REAL_KEY)]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("HULL_ORGANIZATIONS"),
        "fails closed: {stderr}"
    );
}
