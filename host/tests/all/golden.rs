//! `nebucloud-xds plugin test`: the quickstart chain's golden files pass as committed, and a
//! changed input fails naming the resource and the field; `--update` writes them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{plugin_wasm, repo_root};

const BIN: &str = env!("CARGO_BIN_EXE_nebucloud-xds");

/// `examples/quickstart/golden/`: the committed cases.
fn quickstart_golden() -> PathBuf {
    repo_root().join("examples/quickstart/golden")
}

/// The quickstart config (`make run` serves it) written to `dir`, with its plugins taken from
/// `NX_PLUGIN_DIR` and its inputs from `examples/quickstart/inputs/`.
fn quickstart_config(dir: &Path) -> PathBuf {
    let quickstart = repo_root().join("examples/quickstart");
    let text = std::fs::read_to_string(quickstart.join("config.toml")).unwrap();
    assert_eq!(text.matches("\"../../build/plugins/").count(), 3, "{text}");
    let plugins = plugin_wasm("mesh").parent().unwrap().display().to_string();
    let text = text
        .replace("\"../../build/plugins/", &format!("\"{plugins}/"))
        .replace(
            "dir = \"inputs\"",
            &format!("dir = \"{}\"", quickstart.join("inputs").display()),
        );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `plugin test --config CONFIG [ARGS…] CASES`.
/// `dir/cases/` holding the quickstart's Envoy node file and no expected file.
fn envoy_case(dir: &Path) -> PathBuf {
    let cases = dir.join("cases");
    std::fs::create_dir_all(&cases).unwrap();
    std::fs::copy(
        quickstart_golden().join("envoy.yaml"),
        cases.join("envoy.yaml"),
    )
    .unwrap();
    cases
}

fn plugin_test(config: &Path, cases: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["plugin", "test", "--config"])
        .arg(config)
        .args(args)
        .arg(cases)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

/// stdout and stderr, for assertions and their messages.
fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A copy of the quickstart inputs in `dir/inputs`, with `from` replaced by `to` in
/// `services.yaml`.
fn changed_inputs(dir: &Path, from: &str, to: &str) -> PathBuf {
    let inputs = dir.join("inputs");
    std::fs::create_dir_all(&inputs).unwrap();
    let services =
        std::fs::read_to_string(repo_root().join("examples/quickstart/inputs/services.yaml"))
            .unwrap();
    assert!(services.contains(from), "{services}");
    std::fs::write(inputs.join("services.yaml"), services.replacen(from, to, 1)).unwrap();
    inputs
}

#[test]
fn plugin_test_passes_on_the_quickstart_goldens_and_names_resource_and_field_when_an_input_changes()
{
    let dir = tempfile::tempdir().unwrap();
    let config = quickstart_config(dir.path());
    let golden = quickstart_golden();

    let out = plugin_test(&config, &golden, &[]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    for case in ["envoy.yaml", "grpc.yaml"] {
        assert!(
            all.lines().any(|l| l.starts_with("ok") && l.contains(case)),
            "no ok line for {case}:\n{all}"
        );
    }

    // The hello service's endpoint moves from port 8080 to 8081.
    let inputs = changed_inputs(dir.path(), "port: 8080", "port: 8081");
    let out = plugin_test(&config, &golden, &["--inputs", inputs.to_str().unwrap()]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains(
            "ClusterLoadAssignment \"hello\": endpoints[0].lbEndpoints[0].endpoint.address.socketAddress.portValue: expected 8080, got 8081"
        ),
        "{all}"
    );
    assert!(all.contains("envoy.expected.json"), "{all}");
    assert!(all.contains("--update"), "{all}");
    // The committed files are untouched by a failing run.
    let out = plugin_test(&config, &golden, &[]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn plugin_test_update_creates_and_rewrites_expected_files_and_says_which_changed() {
    let dir = tempfile::tempdir().unwrap();
    let config = quickstart_config(dir.path());
    let cases = envoy_case(dir.path());
    let expected = cases.join("envoy.expected.json");

    // No expected file: a failure that says how to make one.
    let out = plugin_test(&config, &cases, &[]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("envoy.expected.json")
            && all.contains("does not exist")
            && all.contains("--update"),
        "{all}"
    );
    assert!(!expected.exists());

    let out = plugin_test(&config, &cases, &["--update"]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.lines()
            .any(|l| l.starts_with("created") && l.contains("envoy.expected.json")),
        "{all}"
    );
    // The file is the committed golden's content: deterministic, without versions or timing.
    let written = std::fs::read_to_string(&expected).unwrap();
    assert_eq!(
        written,
        std::fs::read_to_string(quickstart_golden().join("envoy.expected.json")).unwrap()
    );
    let json: serde_json::Value = serde_json::from_str(&written).unwrap();
    let resources = json["resources"].as_array().unwrap();
    assert!(!resources.is_empty(), "{json}");
    assert!(
        resources.iter().all(|r| r.get("version").is_none()),
        "{json}"
    );
    let keys: Vec<(&str, &str)> = resources
        .iter()
        .map(|r| (r["type_url"].as_str().unwrap(), r["name"].as_str().unwrap()))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "resources sorted by type, then name");
    assert!(plugin_test(&config, &cases, &[]).status.success());

    // Unchanged output leaves the file alone and says so.
    let out = plugin_test(&config, &cases, &["--update"]);
    let all = text(&out);
    assert!(
        out.status.success()
            && all
                .lines()
                .any(|l| l.starts_with("unchanged") && l.contains("envoy.expected.json")),
        "{all}"
    );

    // A changed input: --update rewrites the file and says so, then the cases pass on it.
    let inputs = changed_inputs(dir.path(), "port: 8080", "port: 8081");
    let inputs = inputs.to_str().unwrap();
    let out = plugin_test(&config, &cases, &["--update", "--inputs", inputs]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.lines()
            .any(|l| l.starts_with("updated") && l.contains("envoy.expected.json")),
        "{all}"
    );
    assert!(std::fs::read_to_string(&expected).unwrap().contains("8081"));
    assert!(plugin_test(&config, &cases, &["--inputs", inputs])
        .status
        .success());
}

#[test]
fn plugin_test_names_added_and_removed_resources_and_bounds_its_diff() {
    let dir = tempfile::tempdir().unwrap();
    let config = quickstart_config(dir.path());
    let cases = envoy_case(dir.path());
    assert!(plugin_test(&config, &cases, &["--update"]).status.success());

    // `hello` renamed `hullo`: its cluster and endpoints are gone, `hullo`'s are new.
    let inputs = changed_inputs(dir.path(), "name: hello", "name: hullo");
    let out = plugin_test(&config, &cases, &["--inputs", inputs.to_str().unwrap()]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("Cluster \"hello\": removed"), "{all}");
    assert!(all.contains("Cluster \"hullo\": added"), "{all}");

    // 500 services more: each is several new resources, far more than the diff shows.
    let mut many = String::new();
    for i in 0..500 {
        many.push_str(&format!(
            "---\nkind: Service\nname: extra-{i}\nprotocol: http\nendpoints:\n  - {{ address: 127.0.0.1, port: {} }}\n",
            9000 + i
        ));
    }
    std::fs::write(inputs.join("more.yaml"), many).unwrap();
    let out = plugin_test(&config, &cases, &["--inputs", inputs.to_str().unwrap()]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(all.lines().count() < 100, "{all}");
    assert!(all.contains("more differences not shown"), "{all}");
}

#[test]
fn plugin_test_refuses_a_node_file_over_the_inputs_file_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = quickstart_config(dir.path());
    let text_config = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text_config.replace("[inputs]\n", "[inputs]\nmax_file_bytes = 100000\n"),
    )
    .unwrap();
    let cases = dir.path().join("cases");
    std::fs::create_dir_all(&cases).unwrap();
    let padding = "# padding\n".repeat(20_000);
    std::fs::write(cases.join("big.yaml"), format!("id: big\n{padding}")).unwrap();
    let out = plugin_test(&config, &cases, &["--update"]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("big.yaml") && all.contains("inputs.max_file_bytes = 100000"),
        "{all}"
    );
    assert!(!cases.join("big.expected.json").exists());
}
