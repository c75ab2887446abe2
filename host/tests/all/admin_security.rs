//! Who may use the admin API and which plugin files a reload may read, against the real
//! binary: a cross-origin "simple" POST, a `Host` that is not the server (DNS rebinding), a
//! missing or wrong token, and reload paths that are a device, a FIFO, too large or outside
//! the plugin directories — each refused with its status and reason, the serving versions
//! unchanged and the server's memory flat.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::admin::{admin, start_logging};
use crate::support::http::{http_request, HttpResponse};
use crate::support::{file_tail, free_port, plugin_wasm, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_nebucloud-xds");
const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);
const JSON: (&str, &str) = ("Content-Type", "application/json");
const EVIL_ORIGIN: (&str, &str) = ("Origin", "http://evil.example");

/// The real binary serving mesh → cluster-guard, both copied into `plugins/` of its own
/// directory (the default plugin directory), with `extra` TOML after the plugins.
struct Served {
    dir: TempDir,
    admin: u16,
    child: Child,
}

impl Served {
    async fn start(extra: &str) -> Served {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), extra);
        let (xds, admin_port) = (free_port(), free_port());
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = start_logging(dir.path(), xds, admin_port, Stdio::from(log)).await;
        let served = Served {
            dir,
            admin: admin_port,
            child,
        };
        let ready = wait_until(WAIT, POLL, async || {
            Ok((admin(admin_port, "/readyz").await?.0 == 200).then_some(()))
        })
        .await;
        assert!(ready.is_ok(), "never ready:\n{}", served.log());
        served
    }

    fn plugins(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    fn log(&self) -> String {
        file_tail(&self.dir.path().join("server.log"), 30)
    }

    /// `method path` naming the server in `Host`, plus `headers`.
    async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> HttpResponse {
        let host = format!("127.0.0.1:{}", self.admin);
        let mut all = vec![("Host", host.as_str())];
        all.extend_from_slice(headers);
        http_request(self.admin, method, path, &all, body.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e:#}\n{}", self.log()))
    }

    /// A JSON reload of `plugin` from `path`; the answer and how long it took.
    async fn reload_from(&self, plugin: &str, path: &Path) -> (HttpResponse, Duration) {
        let body = serde_json::json!({ "path": path }).to_string();
        let started = Instant::now();
        let r = self
            .request("POST", &format!("/plugins/{plugin}/reload"), &[JSON], &body)
            .await;
        (r, started.elapsed())
    }

    /// Each plugin's name, file, serving and previous version and load count.
    async fn versions(&self, auth: &[(&str, &str)]) -> Vec<(String, String, String, String, u64)> {
        let r = self.request("GET", "/debug/plugins", auth, "").await;
        assert_eq!(r.status, 200, "{}", r.body);
        let plugins: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        plugins
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let s = |k: &str| p[k].as_str().unwrap_or_default().to_owned();
                (
                    s("name"),
                    s("path"),
                    s("version"),
                    s("previous_version"),
                    p["loads"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    /// `admin_requests_refused_total{reason}`.
    async fn refused(&self, reason: &str, auth: &[(&str, &str)]) -> f64 {
        let r = self.request("GET", "/metrics", auth, "").await;
        let lines = r.body.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
        scrape
            .samples
            .iter()
            .filter(|s| {
                s.metric == "admin_requests_refused_total" && s.labels.get("reason") == Some(reason)
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    }

    /// The server's resident memory, in bytes.
    fn rss(&self) -> u64 {
        let pid = self.child.id().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        kb * 1024
    }
}

fn write_config(dir: &Path, extra: &str) {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for name in ["mesh", "cluster_guard"] {
        std::fs::copy(plugin_wasm(name), plugins.join(format!("{name}.wasm"))).unwrap();
    }
    let config = format!(
        "[[plugins]]\nname = \"mesh\"\npath = \"plugins/mesh.wasm\"\n\
         config = {{ listener_port = 10000 }}\n\
         [[plugins]]\nname = \"cluster-guard\"\npath = \"plugins/cluster_guard.wasm\"\n{extra}"
    );
    std::fs::write(dir.join("config.toml"), config).unwrap();
}

/// Before: any web page could POST here (a "simple" request needs no preflight) and the
/// rollback swapped the serving version (200).
#[tokio::test]
async fn a_cross_origin_simple_post_is_refused_415_and_the_serving_version_is_unchanged() {
    let s = Served::start("").await;
    // A legitimate change first, so that a rollback would change what serves.
    let retries = s.plugins().join("retries.wasm");
    std::fs::copy(plugin_wasm("retries"), &retries).unwrap();
    let (r, _) = s.reload_from("cluster-guard", &retries).await;
    assert_eq!(r.status, 200, "{}\n{}", r.body, s.log());
    assert!(r.body.contains("swapped"), "{}", r.body);
    let before = s.versions(&[]).await;

    let guard = s.plugins().join("cluster_guard.wasm");
    let other_file = serde_json::json!({ "path": guard }).to_string();
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    for (path, headers, body) in [
        ("/plugins/cluster-guard/rollback", vec![EVIL_ORIGIN], ""),
        ("/plugins/cluster-guard/reload", vec![EVIL_ORIGIN], ""),
        (
            "/plugins/cluster-guard/reload",
            vec![EVIL_ORIGIN, ("Content-Type", "text/plain")],
            other_file.as_str(),
        ),
        (
            "/plugins/cluster-guard/rollback",
            vec![EVIL_ORIGIN, form],
            "a=b",
        ),
    ] {
        let r = s.request("POST", path, &headers, body).await;
        assert_eq!(r.status, 415, "{path} {headers:?}: {}", r.body);
        assert!(
            r.body.contains("Content-Type: application/json"),
            "{}",
            r.body
        );
    }
    assert_eq!(
        s.versions(&[]).await,
        before,
        "the serving versions did not move"
    );
    assert_eq!(s.refused("content_type", &[]).await, 4.0);

    // The same rollback as a JSON request is a change an operator asked for.
    let r = s
        .request("POST", "/plugins/cluster-guard/rollback", &[JSON], "")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_ne!(s.versions(&[]).await, before);
}

/// Before: a page whose own name was re-pointed at 127.0.0.1 read every node's config and
/// could reload plugins, because any `Host` was served.
#[tokio::test]
async fn a_host_that_does_not_name_the_admin_api_is_refused_421_except_on_the_probes() {
    let s = Served::start("").await;
    let before = s.versions(&[]).await;
    let evil = format!("evil.example:{}", s.admin);
    let wrong = [("Host", evil.as_str())];
    let requests = [
        ("GET", "/debug/nodes/x/config", vec![], String::new()),
        ("GET", "/debug/plugins", vec![], String::new()),
        ("GET", "/metrics", vec![], String::new()),
        (
            "POST",
            "/plugins/mesh/reload",
            vec![JSON],
            serde_json::json!({ "path": s.plugins().join("cluster_guard.wasm") }).to_string(),
        ),
    ];
    for (method, path, headers, body) in &requests {
        let mut all = wrong.to_vec();
        all.extend_from_slice(headers);
        let r = http_request(s.admin, method, path, &all, body.as_bytes())
            .await
            .unwrap();
        assert_eq!(r.status, 421, "{method} {path}: {}", r.body);
        assert!(r.body.contains("Host"), "{}", r.body);
    }
    for probe in ["/healthz", "/readyz"] {
        let r = http_request(s.admin, "GET", probe, &wrong, b"")
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{probe} is for probes: {}", r.body);
    }
    // The names of this server: its address, localhost and [::1] with its port.
    for host in [
        format!("127.0.0.1:{}", s.admin),
        format!("localhost:{}", s.admin),
        format!("[::1]:{}", s.admin),
    ] {
        let r = http_request(
            s.admin,
            "GET",
            "/debug/nodes/x/config",
            &[("Host", &host)],
            b"",
        )
        .await
        .unwrap();
        assert_eq!(r.status, 404, "{host}: x is not connected: {}", r.body);
    }
    for host in [format!("127.0.0.1:{}", s.admin + 1), "127.0.0.1".to_owned()] {
        let r = http_request(s.admin, "GET", "/debug/nodes", &[("Host", &host)], b"")
            .await
            .unwrap();
        assert_eq!(r.status, 421, "{host}: {}", r.body);
    }
    assert_eq!(s.versions(&[]).await, before);
    assert_eq!(s.refused("host", &[]).await, 6.0);
}

/// Before: `[admin] token_file` was an unknown key, and anyone who reached the port used it.
#[tokio::test]
async fn with_a_token_every_route_but_the_probes_needs_it_401_missing_403_wrong_200_right() {
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("admin.token");
    std::fs::write(&token_file, "s3cret-0123456789\n").unwrap();
    let s = Served::start(&format!(
        "[admin]\ntoken_file = \"{}\"\nallowed_hosts = [\"admin.example\"]\n",
        token_file.display()
    ))
    .await;
    let right = [("Authorization", "Bearer s3cret-0123456789")];
    let wrong = [("Authorization", "Bearer s3cret-0123456780")];

    let r = s.request("GET", "/debug/plugins", &[], "").await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert!(r.body.contains("token"), "{}", r.body);
    let r = s.request("GET", "/debug/plugins", &wrong, "").await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = s.request("GET", "/debug/plugins", &right, "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s
        .request(
            "GET",
            "/debug/plugins",
            &[("Authorization", "Basic czNjcmV0")],
            "",
        )
        .await;
    assert_eq!(r.status, 401, "only a bearer token counts: {}", r.body);
    let before = s.versions(&right).await;

    let reload = "/plugins/mesh/reload";
    let r = s.request("POST", reload, &[JSON], "").await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = s
        .request("POST", "/plugins/mesh/rollback", &[JSON, wrong[0]], "")
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = s.request("POST", reload, &[right[0]], "").await;
    assert_eq!(
        r.status, 415,
        "a token does not make a simple request JSON: {}",
        r.body
    );
    let r = s.request("POST", reload, &[JSON, right[0]], "").await;
    assert_eq!((r.status, r.body.as_str()), (200, "\"unchanged\""));
    assert_eq!(s.versions(&right).await, before);

    // A name from `allowed_hosts`, on any port (a proxy in front); the probes need nothing.
    let r = http_request(
        s.admin,
        "GET",
        "/debug/nodes",
        &[("Host", "admin.example"), right[0]],
        b"",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.request("GET", "/healthz", &[], "").await.status, 200);
    assert_eq!(s.refused("token", &right).await, 5.0);

    // The command line reads the token from --token-file or the environment.
    let addr = format!("127.0.0.1:{}", s.admin);
    let nodes = |args: &[&str], env: Option<&Path>| {
        let mut c = Command::new(BIN);
        c.args(["nodes", "--admin", &addr]).args(args);
        c.env_remove("NEBUCLOUD_XDS_ADMIN_TOKEN_FILE");
        if let Some(f) = env {
            c.env("NEBUCLOUD_XDS_ADMIN_TOKEN_FILE", f);
        }
        c.output()
    };
    let out = nodes(&[], None).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("401"), "{err}");
    let file = token_file.to_str().unwrap();
    let out = nodes(&["--token-file", file], None).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = nodes(&[], Some(&token_file)).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(BIN)
        .args(["dump", "nobody", "--admin", &addr, "--token-file", file])
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("404") && err.contains("nobody"),
        "{err}"
    );
}

/// Before: `/dev/zero` was read until memory ran out (~1.4 GB/s, on past the client leaving),
/// a FIFO hung the reload, and any readable path became the plugin's file.
#[tokio::test]
async fn reload_paths_are_refused_by_the_rule_they_break_quickly_with_memory_flat() {
    let s = Served::start("").await;
    let plugins = s.plugins();
    let before = s.versions(&[]).await;
    let rss_before = s.rss();

    let fifo = plugins.join("fifo.wasm");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    // One byte over the default 64 MiB, sparse: it costs no disk.
    let big = std::fs::File::create(plugins.join("big.wasm")).unwrap();
    big.set_len((64 << 20) + 1).unwrap();
    let elsewhere = s.dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::copy(plugin_wasm("retries"), elsewhere.join("retries.wasm")).unwrap();
    std::os::unix::fs::symlink(elsewhere.join("retries.wasm"), plugins.join("escape.wasm"))
        .unwrap();
    std::os::unix::fs::symlink("/dev/zero", plugins.join("zero.wasm")).unwrap();
    for (path, status, reason) in [
        (
            PathBuf::from("/dev/zero"),
            403,
            "outside the plugin directories",
        ),
        (
            plugins.join("zero.wasm"),
            403,
            "outside the plugin directories",
        ),
        (
            plugins.join("escape.wasm"),
            403,
            "outside the plugin directories",
        ),
        (
            elsewhere.join("retries.wasm"),
            403,
            "outside the plugin directories",
        ),
        (
            plugins.join("../elsewhere/retries.wasm"),
            403,
            "outside the plugin directories",
        ),
        (fifo.clone(), 422, "not a regular file (it is a FIFO)"),
        (
            plugins.clone(),
            422,
            "not a regular file (it is a directory)",
        ),
        (
            plugins.join("big.wasm"),
            422,
            "larger than max_plugin_bytes (67108864 bytes",
        ),
    ] {
        let (r, took) = s.reload_from("mesh", &path).await;
        assert_eq!(r.status, status, "{}: {}", path.display(), r.body);
        assert!(r.body.contains(reason), "{}: {}", path.display(), r.body);
        assert!(
            took < Duration::from_secs(3),
            "{}: {took:?}",
            path.display()
        );
    }
    assert_eq!(
        s.versions(&[]).await,
        before,
        "versions and paths unchanged"
    );
    let grown = s.rss().saturating_sub(rss_before);
    assert!(grown < 100 << 20, "the server grew by {grown} bytes");
    assert_eq!(s.request("GET", "/healthz", &[], "").await.status, 200);

    // A plugin directory that holds devices (never do this) still reads regular files only.
    let s = Served::start("[reload]\nplugin_dirs = [\"plugins\", \"/dev\"]\n").await;
    let before = s.versions(&[]).await;
    let rss_before = s.rss();
    let (r, took) = s.reload_from("mesh", Path::new("/dev/zero")).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body
            .contains("not a regular file (it is a character device)"),
        "{}",
        r.body
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(s.versions(&[]).await, before);
    let grown = s.rss().saturating_sub(rss_before);
    assert!(grown < 100 << 20, "the server grew by {grown} bytes");
}

/// Before: the admin API served on any address without a word, and the new keys did not
/// exist.
#[tokio::test]
async fn start_up_refuses_an_exposed_admin_without_a_token_an_empty_token_and_plugins_outside_plugin_dirs(
) {
    let run = async |dir: &Path, admin: &str| {
        let out = tokio::time::timeout(
            WAIT,
            Command::new(BIN)
                .args(["serve", "--config"])
                .arg(dir.join("config.toml"))
                .args(["--listen", &format!("127.0.0.1:{}", free_port())])
                .args(["--admin-listen", admin])
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("the server refused to start instead of serving")
        .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "");
    let err = run(dir.path(), &format!("0.0.0.0:{}", free_port())).await;
    assert!(
        err.contains("not a loopback address")
            && err.contains("admin.token_file")
            && err.contains("no TLS"),
        "{err}"
    );
    std::fs::write(dir.path().join("empty.token"), "\n").unwrap();
    write_config(dir.path(), "[admin]\ntoken_file = \"empty.token\"\n");
    let err = run(dir.path(), &format!("127.0.0.1:{}", free_port())).await;
    assert!(
        err.contains("admin.token_file") && err.contains("it is empty"),
        "{err}"
    );
    write_config(dir.path(), "[admin]\ntoken_file = \"missing.token\"\n");
    let err = run(dir.path(), &format!("127.0.0.1:{}", free_port())).await;
    assert!(
        err.contains("admin.token_file") && err.contains("missing.token"),
        "{err}"
    );
    std::fs::create_dir(dir.path().join("other")).unwrap();
    write_config(dir.path(), "[reload]\nplugin_dirs = [\"other\"]\n");
    let err = run(dir.path(), &format!("127.0.0.1:{}", free_port())).await;
    assert!(
        err.contains("reload.plugin_dirs") && err.contains("outside the plugin directories"),
        "{err}"
    );
}

/// Before: a reload with `{"path"}` re-pointed the plugin at that file for the life of the
/// process, silently: later deploys to its configured file were ignored. Now such a reload is
/// a one-off (the plugin's own file still rules, and `/debug/plugins` says which file serves)
/// unless it asks to `persist`.
#[tokio::test]
async fn a_reload_from_another_file_is_a_one_off_unless_it_asks_to_persist() {
    let s = Served::start("").await;
    let status = async || {
        let r = s.request("GET", "/debug/plugins", &[], "").await;
        let all: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        let guard = all
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "cluster-guard")
            .unwrap()
            .clone();
        let s = |k: &str| guard[k].as_str().unwrap_or_default().to_owned();
        (s("path"), s("serving_path"), s("version"))
    };
    let (own_file, serving, original) = status().await;
    assert!(
        own_file.ends_with("plugins/cluster_guard.wasm"),
        "{own_file}"
    );
    assert_eq!(serving, own_file);

    // A one-off: another file serves, the plugin's file stays its own.
    let other = s.plugins().join("retries.wasm");
    std::fs::copy(plugin_wasm("retries"), &other).unwrap();
    let (r, _) = s.reload_from("cluster-guard", &other).await;
    assert_eq!(r.status, 200, "{}\n{}", r.body, s.log());
    let (file, serving, version) = status().await;
    assert_eq!(file, own_file, "a one-off reload re-pointed the plugin");
    assert_eq!(serving, other.display().to_string());
    assert_ne!(version, original);

    // A deploy to the plugin's own file replaces the one-off: the watch follows that file.
    let deployed = s.plugins().join(".cluster_guard.wasm.new");
    std::fs::copy(plugin_wasm("cluster_guard"), &deployed).unwrap();
    std::fs::rename(&deployed, s.plugins().join("cluster_guard.wasm")).unwrap();
    let back = wait_until(WAIT, POLL, async || {
        let (_, serving, version) = status().await;
        Ok((serving == own_file && version == original).then_some(()))
    })
    .await;
    assert!(
        back.is_ok(),
        "the deploy was ignored: {:?}\n{}",
        status().await,
        s.log()
    );

    // Asked to persist, the plugin's file becomes the other one.
    let body = serde_json::json!({ "path": other, "persist": true }).to_string();
    let r = s
        .request("POST", "/plugins/cluster-guard/reload", &[JSON], &body)
        .await;
    assert_eq!(r.status, 200, "{}\n{}", r.body, s.log());
    let (file, serving, _) = status().await;
    assert_eq!(file, other.display().to_string(), "not re-pointed");
    assert_eq!(serving, file);

    // `persist` without a path says what it needs.
    let r = s
        .request(
            "POST",
            "/plugins/cluster-guard/reload",
            &[JSON],
            r#"{"persist": true}"#,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("persist needs a path"), "{}", r.body);
}
