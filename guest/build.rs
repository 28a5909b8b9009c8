//! Builds the guest agent as a static x86-64 binary and hands its path to the crate,
//! which embeds it in every initramfs it writes.
//!
//! The agent is built by a nested `cargo build` into its own target directory, with
//! `+crt-static` applied to it alone (`--target` keeps host artifacts such as build
//! scripts and proc macros dynamic).

// A build script fails the build by panicking, with the reason.
#![allow(clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

const TARGET: &str = "x86_64-unknown-linux-gnu";

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let workspace = manifest.parent().expect("workspace root").to_path_buf();
    for p in [
        "guest/agent/src",
        "guest/agent/Cargo.toml",
        "guest/protocol/src",
        "guest/protocol/Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(p).display());
    }
    let target_dir = workspace.join("target").join("guest-agent");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "modvisor-guest-agent",
            "--target",
            TARGET,
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "CARGO_PRIMARY_PACKAGE",
        "RUSTC",
        "RUSTDOC",
    ] {
        cmd.env_remove(var);
    }
    // Small and reproducible: no debug info, symbols stripped.
    cmd.env("CARGO_PROFILE_RELEASE_DEBUG", "0")
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols");
    cmd.env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static");
    let status = cmd
        .status()
        .expect("running cargo to build the guest agent");
    assert!(
        status.success(),
        "building the guest agent failed: {status}"
    );
    let bin = target_dir
        .join(TARGET)
        .join("release")
        .join("modvisor-guest-agent");
    println!("cargo:rustc-env=MODVISOR_GUEST_AGENT_BIN={}", bin.display());
}
