//! Issue 12 item 9 through the binary: unchecked input is a clear error (exit 1 or clap's 2),
//! never a panic (exit 101), and `plan --config` rejects what `run` rejects.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code panics on failure"
)]

use std::process::{Command, Output};

fn proxier(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_proxier"))
        .args(args)
        .env_clear()
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_70000_character_interface_name_is_refused_without_a_panic() {
    let name = "x".repeat(70_000);
    for command in ["cleanup", "run"] {
        let output = proxier(&[command, "--interface", &name]);
        let code = output.status.code();
        let text = stderr(&output);
        assert_eq!(
            code,
            Some(2),
            "{command}: {code:?}\n{}",
            &text[..text.len().min(500)]
        );
        assert!(
            text.contains("not an interface name"),
            "{command}: {text:.500}"
        );
        println!("item 9: {command} --interface <70,000 chars> -> exit {code:?}");
    }
    let output = proxier(&["cleanup", "--interface", "a/b"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}

#[test]
fn a_zero_sync_period_is_refused() {
    let output = proxier(&["run", "--source", "/nonexistent", "--sync-period", "0s"]);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("syncPeriod") && text.contains("greater than 0"),
        "{text}"
    );
    println!("item 9: run --sync-period 0s -> exit 1: {}", text.trim());
}

#[test]
fn plan_config_rejects_what_run_rejects() {
    let dir = std::env::temp_dir().join(format!("proxier-cli-checks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cluster = dir.join("cluster");
    std::fs::create_dir_all(&cluster).unwrap();
    for (yaml, needle) in [
        ("mode: iptables\n", "IPVS mode only"),
        ("healthzBindAddress: somewhere\n", "healthzBindAddress"),
        ("ipvs: {scheduler: fancy}\n", "not an IPVS scheduler"),
        ("ipvs: {syncPeriod: 30x}\n", "ipvs.syncPeriod"),
        ("logging: {format: xml}\n", "logging.format"),
    ] {
        let config = dir.join("config.yaml");
        std::fs::write(&config, yaml).unwrap();
        for command in [
            vec![
                "plan",
                "-f",
                cluster.to_str().unwrap(),
                "--node",
                "n",
                "--config",
            ],
            vec![
                "run",
                "--source",
                cluster.to_str().unwrap(),
                "--node",
                "n",
                "--config",
            ],
        ] {
            let mut args = command.clone();
            args.push(config.to_str().unwrap());
            let output = proxier(&args);
            let text = stderr(&output);
            assert_eq!(
                output.status.code(),
                Some(1),
                "{args:?} with {yaml:?}: {text}"
            );
            assert!(text.contains(needle), "{args:?} with {yaml:?}: {text}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
