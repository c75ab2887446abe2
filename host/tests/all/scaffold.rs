//! `plugin new`: the crate it writes builds natively and for wasm32-wasip2 as is, its own tests
//! pass, `plugin check` accepts it, `plugin run` reads its node files and config, and a chain of
//! the three kinds serves a real Envoy. Bad names and occupied directories are refused.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::app::{plugin_entry, ConfigDir};
use crate::support::envoy::{Envoy, XdsMode};
use crate::support::{repo_root, text_tail, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_nebucloud-xds");

/// `nebucloud-xds plugin new ARGS…` in `dir`, with the guest SDK of this checkout.
fn plugin_new(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(["plugin", "new"])
        .args(args)
        .arg("--sdk-path")
        .arg(repo_root().join("guest-sdk"))
        .current_dir(dir)
        .output()
        .unwrap()
}

/// Where the scaffolded crates build: the target directory of this test run, so that the SDK
/// and the Envoy types built for the workspace are reused rather than built again.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// `cargo ARGS…` in `dir`, as a plugin author runs it (without the flags a coverage run of
/// this test would hand down); panics with cargo's output on failure. Under `nice`: a cold
/// build takes minutes of both cores, and the tests running beside it wait on real clients.
fn cargo(dir: &Path, args: &[&str]) -> String {
    let started = Instant::now();
    let out = Command::new("nice")
        .args(["-n", "10"])
        .arg(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir())
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("LLVM_PROFILE_FILE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "cargo {args:?} in {}:\n{}",
        dir.display(),
        text_tail(&stderr, 60)
    );
    eprintln!(
        "cargo {args:?} in {}: {:.1?}",
        dir.display(),
        started.elapsed()
    );
    format!("{}{stderr}", String::from_utf8_lossy(&out.stdout))
}

/// `nebucloud-xds ARGS…`; panics with its stderr on failure, else returns its stdout.
fn nx(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nebucloud-xds {args:?}:\n{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wasm(name: &str) -> PathBuf {
    target_dir()
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")))
}

#[test]
fn plugin_new_refuses_bad_names_and_occupied_directories() {
    let dir = tempfile::tempdir().unwrap();
    for (name, rule) in [
        ("9lives", "starts with an ASCII letter"),
        ("my policy", "ASCII letters, digits, `-` and `_`"),
        ("fn", "Rust keyword"),
        (&"a".repeat(65), "at most 64"),
    ] {
        let out = plugin_new(dir.path(), &[name]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(rule), "{name}: {err}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    std::fs::create_dir(dir.path().join("taken")).unwrap();
    std::fs::write(dir.path().join("taken/notes.txt"), "mine").unwrap();
    let out = plugin_new(dir.path(), &["taken"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not empty"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path().join("taken")).unwrap().count(),
        1
    );

    // An empty directory is fine; the crate gets every file, and the SDK checkout's lock.
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let out = plugin_new(dir.path(), &["empty", "--kind", "validator"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in [
        "Cargo.toml",
        "Cargo.lock",
        "src/lib.rs",
        "nodes/envoy.yaml",
        "nodes/grpc.yaml",
        "inputs/services.yaml",
        "nebucloud-xds.toml",
    ] {
        assert!(dir.path().join("empty").join(file).is_file(), "{file}");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("[[plugins]]") && stdout.contains("name = \"empty\""),
        "the config snippet to paste: {stdout}"
    );
}

/// The three kinds, built and tested as their author would, then chained in a server that a
/// real Envoy connects to: the generator's clusters arrive with the transform's circuit
/// breakers, having passed the validator.
#[tokio::test]
async fn scaffolded_plugins_build_pass_their_tests_and_serve_a_real_envoy() {
    let dir = tempfile::tempdir().unwrap();
    for kind in ["generator", "transform", "validator"] {
        let name = format!("my-{kind}");
        let out = plugin_new(dir.path(), &[&name, "--kind", kind]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let krate = dir.path().join(&name);
        let tests = cargo(&krate, &["test"]);
        assert!(tests.contains("test result: ok"), "{tests}");
        cargo(&krate, &["build", "--target", "wasm32-wasip2", "--release"]);
        let checked = nx(&krate, &["plugin", "check", wasm(&name).to_str().unwrap()]);
        assert!(checked.contains(": ok, version "), "{checked}");
    }

    // The generator's own config and node files run as the guide says.
    let generator = dir.path().join("my-generator");
    let run: Value = serde_json::from_str(&nx(
        &generator,
        &[
            "plugin",
            "run",
            "--config",
            "nebucloud-xds.toml",
            "--node",
            "nodes/grpc.yaml",
        ],
    ))
    .unwrap();
    let names: Vec<&str> = run["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(names.contains(&"hello"), "{run}");

    let config = ConfigDir::new();
    config.write_input(
        "services.yaml",
        "kind: Service\nname: hello\nprotocol: http\nendpoints:\n  - { address: 127.0.0.1, port: 8080, zone: a }\n",
    );
    let server = config
        .serve(&format!(
            "[inputs]\ndir = \"inputs\"\ninterval_ms = 20\n\n{}{}{}",
            plugin_entry(
                "my-generator",
                &wasm("my-generator"),
                "{ connect_timeout_ms = 2000 }"
            ),
            plugin_entry(
                "my-transform",
                &wasm("my-transform"),
                "{ max_requests = 64 }"
            ),
            plugin_entry(
                "my-validator",
                &wasm("my-validator"),
                "{ max_connect_timeout_ms = 5000 }"
            ),
        ))
        .await;
    let envoy = Envoy::start(server.addr.port(), "envoy-scaffold", XdsMode::SotwAds)
        .await
        .unwrap();
    let dump = wait_until(
        Duration::from_secs(20),
        Duration::from_millis(100),
        async || {
            let dump = envoy.config_dump_with_eds().await?.to_string();
            Ok(
                (dump.contains("\"max_requests\":64") && dump.contains("\"port_value\":8080"))
                    .then_some(dump),
            )
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", envoy.log_tail()));
    assert!(
        dump.contains("\"name\":\"hello\"") && dump.contains("\"connect_timeout\":\"2s\""),
        "{dump}"
    );
}
