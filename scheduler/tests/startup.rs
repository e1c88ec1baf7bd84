//! Outside local mode, `closeio-scheduler` refuses to start without a real `ENCRYPTION_KEY`, and says
//! which variable is wrong.

use std::process::Command;

fn start(vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_closeio-scheduler"));
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

#[test]
fn a_missing_empty_or_development_key_stops_it_naming_the_variable() {
    for vars in [
        vec![],
        vec![("ENCRYPTION_KEY", "")],
        vec![("ENCRYPTION_KEY", common::config::DEV_ENCRYPTION_KEY)],
        vec![("ENCRYPTION_KEY", ""), ("LOCAL_MODE", "true")],
    ] {
        let (code, stderr) = start(&vars);
        assert_eq!(code, Some(2), "{vars:?}: {stderr}");
        assert!(stderr.contains("ENCRYPTION_KEY"), "{vars:?}: {stderr}");
    }
}

#[test]
fn without_hull_organizations_it_fails_closed() {
    let (code, stderr) = start(&[(
        "ENCRYPTION_KEY",
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    )]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("HULL_ORGANIZATIONS"), "{stderr}");
}
