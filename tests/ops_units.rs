//! The systemd units and the installer: a test install into a temporary root (so every
//! ExecStart points at an existing binary), `systemd-analyze verify` on every unit with no
//! warning, and an uninstall that leaves nothing behind.

mod support;

use std::path::Path;
use std::process::Command;
use support::cli::SSEFS;

const UNITS: [&str; 3] = [
    "ssefs@.service",
    "ssefs-rotate@.service",
    "ssefs-rotate@.timer",
];

fn install(root: &Path, extra: &[&str]) -> std::process::Output {
    Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install.sh"))
        .arg("--prefix")
        .arg(root.join("usr"))
        .arg("--unitdir")
        .arg(root.join("units"))
        .arg("--sbindir")
        .arg(root.join("sbin"))
        .args(extra)
        .output()
        .expect("bash runs")
}

#[test]
fn installed_units_verify_and_uninstall_leaves_nothing() {
    let root = tempfile::tempdir().unwrap();
    let out = install(root.path(), &["--binary", SSEFS]);
    assert!(out.status.success(), "install: {out:?}");
    let bin = root.path().join("usr/bin/ssefs");
    let helper = root.path().join("sbin/mount.fuse.ssefs");
    assert_eq!(std::fs::read_link(&helper).unwrap(), bin);
    assert_eq!(std::fs::read(&bin).unwrap(), std::fs::read(SSEFS).unwrap());

    let analyze = Command::new("systemd-analyze").arg("--version").output();
    assert!(
        analyze.is_ok_and(|o| o.status.success()),
        "systemd-analyze is missing: install the systemd package (scripts/setup.sh does)"
    );
    // Instances named as they would be used, next to their templates.
    let units = root.path().join("units");
    let mut paths = Vec::new();
    for unit in UNITS {
        let text = std::fs::read_to_string(units.join(unit)).unwrap();
        assert!(
            !text.contains("@BINDIR@") && !text.contains("@DOCDIR@"),
            "{unit}"
        );
        assert!(text.contains(&bin.display().to_string()) || unit.ends_with(".timer"));
        let instance = units.join(unit.replace("@.", "@srv-data."));
        std::fs::write(&instance, text).unwrap();
        paths.push(units.join(unit));
        paths.push(instance);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "verify failed: {stderr}");
    assert!(stderr.trim().is_empty(), "verify warned: {stderr}");
    for path in paths
        .iter()
        .filter(|p| p.to_string_lossy().contains("srv-data"))
    {
        std::fs::remove_file(path).unwrap();
    }

    let out = install(root.path(), &["--uninstall"]);
    assert!(out.status.success(), "uninstall: {out:?}");
    let left: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn verify_catches_a_missing_binary() {
    // The check above is only worth something if verify fails on a unit it cannot run.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/ssefs@.service"
    ))
    .unwrap()
    .replace("@BINDIR@", "/nonexistent/bin")
    .replace("@DOCDIR@", "/nonexistent/doc");
    let unit = dir.path().join("ssefs@srv-data.service");
    std::fs::write(&unit, text).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
}

#[test]
fn the_mount_unit_has_no_private_mount_namespace() {
    // A mount made in a unit's own mount namespace never reaches the host.
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/ssefs@.service"
    ))
    .unwrap();
    let settings: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    for namespacing in [
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "PrivateMounts",
        "ReadWritePaths",
        "ReadOnlyPaths",
        "InaccessiblePaths",
        "TemporaryFileSystem",
        "BindPaths",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectControlGroups",
        "MountFlags",
    ] {
        assert!(!settings.contains(&namespacing), "{namespacing}");
    }
    for needed in [
        "Type",
        "LoadCredential",
        "NoNewPrivileges",
        "CapabilityBoundingSet",
        "DeviceAllow",
        "LimitCORE",
        "Restart",
    ] {
        assert!(settings.contains(&needed), "{needed}");
    }
    assert!(text.contains("Type=notify") && text.contains("DeviceAllow=/dev/fuse rw"));
}

#[test]
fn install_refuses_to_overwrite_what_it_did_not_install() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("sbin")).unwrap();
    let foreign = root.path().join("sbin/mount.fuse.ssefs");
    std::fs::write(&foreign, b"someone else's").unwrap();
    let out = install(root.path(), &["--binary", SSEFS]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("was not installed by this script"));
    assert_eq!(std::fs::read(&foreign).unwrap(), b"someone else's");
    assert!(!root.path().join("usr").exists(), "nothing was installed");
}
