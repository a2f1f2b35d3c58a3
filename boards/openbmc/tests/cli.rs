//! The binary's command line: help text and configuration faults reported
//! with their line (no root needed).
use std::process::Command;

fn relay() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lastgasp-bmc-relay"))
}

#[test]
fn help_explains_the_program() -> Result<(), Box<dyn std::error::Error>> {
    let out = relay().arg("--help").output()?;
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout)?;
    for want in ["obmc-console", "AF_PACKET", "run", "check-config", "--config", "--log-level"] {
        assert!(help.contains(want), "--help lacks {want:?}:\n{help}");
    }
    Ok(())
}

#[test]
fn check_config_points_at_the_faulty_line() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("lastgasp-openbmc-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cfg = dir.join("relay.toml");
    let example = include_str!("../contrib/relay.toml");
    // Break the second collector's address (line 44 of the example).
    let broken = example.replacen("address = \"10.0.1.5:6666\"", "address = \"10.0.1.5\"", 1);
    assert_ne!(broken, example);
    let line = broken.lines().position(|l| l == "address = \"10.0.1.5\"").map(|i| i + 1).unwrap_or(0);
    std::fs::write(&cfg, broken)?;
    let out = relay().arg("--config").arg(&cfg).arg("check-config").output()?;
    assert!(!out.status.success(), "a broken config was accepted");
    let err = String::from_utf8(out.stderr)?;
    assert!(err.contains(&format!("relay.toml:{line}:")), "no line {line} in: {err}");

    let out = relay().arg("--config").arg(dir.join("missing.toml")).arg("check-config").output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr)?.contains("cannot read"));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
