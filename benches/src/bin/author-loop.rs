//! The plugin author's loop on real parts: a policy plugin's file is replaced (as the end of a
//! build does) while our server binary serves a real Envoy, and the time is taken until Envoy's
//! own config dump shows the new build's output, applied: route tables carrying its version,
//! and, when the plugin stamps clusters too, every cluster active (none warming) with its
//! version. Run with `dev`'s settings (`nebucloud-xds dev`) and with the serving defaults
//! (`nebucloud-xds serve`), over ADS State of the World and Delta.
//!
//! `make bench-dev` runs it; `--help` lists the knobs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use nx_bench::stats::Summary;

#[derive(Parser, Debug)]
#[command(about = "Plugin file replaced → a real Envoy has the result, timed")]
struct Args {
    /// The `nebucloud-xds` binary (release build).
    #[arg(long)]
    server: PathBuf,
    /// The `envoy` binary.
    #[arg(long)]
    envoy: PathBuf,
    /// Where `mesh.wasm` and the tagger versions are.
    #[arg(long)]
    plugin_dir: PathBuf,
    /// Tagger builds to replace the file with, in turn (at least two): `tagger_v2` is
    /// `<plugin-dir>/tagger_v2.wasm`, stamping `v2`.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "tagger_v1,tagger_v2,tagger_v3"
    )]
    versions: Vec<String>,
    /// How many replacements to time per run.
    #[arg(long, default_value_t = 8)]
    rounds: usize,
    /// The runs: `dev` or `serve`, each over `sotw` and `delta`, for `route` and `cluster`
    /// changes (all of them by default).
    #[arg(long, value_delimiter = ',', default_value = "dev,serve")]
    settings: Vec<String>,
    #[arg(long, value_delimiter = ',', default_value = "sotw,delta")]
    protocols: Vec<String>,
    #[arg(long, value_delimiter = ',', default_value = "route,cluster")]
    changes: Vec<String>,
    /// Where to write `<name>.md` and `<name>.json`.
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value = "author-loop")]
    name: String,
}

/// One run's setting.
#[derive(Debug, Clone)]
struct Run {
    settings: String,
    protocol: String,
    change: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    // The config file lives in a scratch directory: paths in it must be absolute.
    args.plugin_dir = std::fs::canonicalize(&args.plugin_dir)
        .with_context(|| format!("no plugin directory {}", args.plugin_dir.display()))?;
    if args.versions.len() < 2 {
        bail!("--versions needs two tagger builds or more");
    }
    let mut rows = Vec::new();
    for settings in &args.settings {
        for protocol in &args.protocols {
            for change in &args.changes {
                let run = Run {
                    settings: settings.clone(),
                    protocol: protocol.clone(),
                    change: change.clone(),
                };
                let times = time_run(&args, &run)
                    .await
                    .with_context(|| format!("run {run:?}"))?;
                let s = Summary::of(&times);
                eprintln!(
                    "{settings} {protocol} {change}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                    s.p50_ms, s.p99_ms, s.max_ms
                );
                rows.push((run, s));
            }
        }
    }
    let mut md = String::from(
        "| server | protocol | the plugin changes | file replaced → Envoy has it applied, p50 / p99 / max (ms) |\n|---|---|---|---:|\n",
    );
    for (run, s) in &rows {
        let server = if run.settings == "dev" {
            "`dev` (no settle, 1 ms debounce)"
        } else {
            "`serve` (serving defaults)"
        };
        let change = if run.change == "cluster" {
            "routes and clusters"
        } else {
            "routes"
        };
        md.push_str(&format!(
            "| {server} | {} | {change} | {:.1} / {:.1} / {:.1} |\n",
            if run.protocol == "delta" {
                "ADS Delta"
            } else {
                "ADS SotW"
            },
            s.p50_ms,
            s.p99_ms,
            s.max_ms
        ));
    }
    println!("{md}");
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out)?;
        std::fs::write(out.join(format!("{}.md", args.name)), &md)?;
        let json: Vec<Value> = rows
            .iter()
            .map(|(r, s)| {
                json!({"settings": r.settings, "protocol": r.protocol, "change": r.change,
                       "p50_ms": s.p50_ms, "p99_ms": s.p99_ms, "max_ms": s.max_ms, "n": s.count})
            })
            .collect();
        std::fs::write(
            out.join(format!("{}.json", args.name)),
            serde_json::to_string_pretty(&json)?,
        )?;
    }
    Ok(())
}

/// A port free now on 127.0.0.1.
fn free_port() -> anyhow::Result<u16> {
    Ok(nx_bench::servers::free_port()?.port())
}

/// Replaces `path` whole, as a build's final copy does: written beside it, then renamed.
fn replace(path: &Path, from: &Path) -> anyhow::Result<()> {
    let hidden = path.with_extension("wasm.tmp");
    std::fs::copy(from, &hidden)?;
    std::fs::rename(&hidden, path)?;
    Ok(())
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts our server and an Envoy for `run`, replaces the plugin file `args.rounds` times and
/// returns each replacement's time until Envoy showed it, in ms.
async fn time_run(args: &Args, run: &Run) -> anyhow::Result<Vec<f64>> {
    let dir = std::env::temp_dir().join(format!(
        "nx-author-loop-{}-{}-{}-{}",
        std::process::id(),
        run.settings,
        run.protocol,
        run.change
    ));
    std::fs::create_dir_all(dir.join("inputs"))?;
    let scratch = Scratch(dir.clone());
    let wasm = |v: &str| args.plugin_dir.join(format!("{v}.wasm"));
    let tagger = dir.join("tagger.wasm");
    std::fs::copy(wasm(&args.versions[0]), &tagger)?;
    std::fs::write(
        dir.join("inputs/services.yaml"),
        "kind: Service\nname: web\nprotocol: http\nendpoints:\n  - { address: 127.0.0.1, port: 8080, zone: a }\n---\nkind: Service\nname: api\nprotocol: http\nendpoints:\n  - { address: 127.0.0.1, port: 8081, zone: a }\n",
    )?;
    let stamp_clusters = run.change == "cluster";
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "[inputs]\ndir = \"inputs\"\n\n[[plugins]]\nname = \"mesh\"\npath = {:?}\nconfig = {{ listener_port = {} }}\n\n[[plugins]]\nname = \"tagger\"\npath = {:?}\nconfig = {{ clusters = {stamp_clusters} }}\n",
            wasm("mesh").display().to_string(),
            free_port()?,
            tagger.display().to_string(),
        ),
    )?;
    let (xds, admin) = (free_port()?, free_port()?);
    let server_log = std::fs::File::create(dir.join("server.log"))?;
    let _server = Command::new(&args.server)
        .arg(&run.settings)
        .arg("--config")
        .arg(dir.join("config.toml"))
        .args(["--listen", &format!("127.0.0.1:{xds}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .stdout(Stdio::null())
        .stderr(server_log)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the server")?;
    wait_for(Duration::from_secs(60), || async {
        Ok(TcpStream::connect(("127.0.0.1", xds)).await.is_ok())
    })
    .await
    .with_context(|| {
        format!(
            "the server never listened; {}",
            tail(&dir.join("server.log"))
        )
    })?;
    let envoy = EnvoyProcess::start(&args.envoy, &dir, xds, run.protocol == "delta").await?;

    let first = &args.versions[0];
    wait_for(Duration::from_secs(60), || {
        envoy.shows(first, stamp_clusters)
    })
    .await
    .with_context(|| format!("Envoy never got {first}; {}", tail(&envoy.log)))?;
    let mut times = Vec::new();
    for k in 0..args.rounds {
        let version = &args.versions[(k + 1) % args.versions.len()];
        let t0 = Instant::now();
        replace(&tagger, &wasm(version))?;
        wait_for(Duration::from_secs(60), || {
            envoy.shows(version, stamp_clusters)
        })
        .await
        .with_context(|| {
            format!(
                "Envoy never got {version}; server: {}\nenvoy: {}",
                tail(&dir.join("server.log")),
                tail(&envoy.log)
            )
        })?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    drop(envoy);
    drop(scratch);
    Ok(times)
}

/// The last lines of a log file, for errors.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Polls `check` every 25 ms until it holds or `limit` passes: often enough for the
/// resolution these times need, and seldom enough that building config dumps does not keep
/// Envoy's main thread (where it also applies xDS) busy.
async fn wait_for<F, Fut>(limit: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await.unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A real Envoy on ADS, killed on drop.
struct EnvoyProcess {
    _child: Child,
    admin: SocketAddr,
    log: PathBuf,
}

impl EnvoyProcess {
    async fn start(bin: &Path, dir: &Path, xds: u16, delta: bool) -> anyhow::Result<Self> {
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let api_type = if delta { "DELTA_GRPC" } else { "GRPC" };
        let bootstrap = json!({
            "node": {"id": "author-loop", "cluster": "bench"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin.port()}}},
            "dynamic_resources": {
                "lds_config": {"ads": {}, "resource_api_version": "V3"},
                "cds_config": {"ads": {}, "resource_api_version": "V3"},
                "ads_config": {
                    "api_type": api_type,
                    "transport_api_version": "V3",
                    "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}],
                },
            },
            "static_resources": {"clusters": [{
                "name": "xds_cluster",
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "xds_cluster", "endpoints": [{"lb_endpoints": [{
                    "endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": xds}}}
                }]}]},
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}}
                    }
                }
            }]}
        });
        let path = dir.join("envoy.json");
        std::fs::write(&path, serde_json::to_vec(&bootstrap)?)?;
        let log = dir.join("envoy.log");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&path)
            .args(["--base-id", &admin.port().to_string()])
            .args(["-l", "warning", "--log-path"])
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        Ok(EnvoyProcess {
            _child: child,
            admin,
            log,
        })
    }

    /// Envoy's `/config_dump`.
    async fn config_dump(&self) -> anyhow::Result<Value> {
        let mut stream = TcpStream::connect(self.admin).await?;
        stream
            .write_all(b"GET /config_dump HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        let text = String::from_utf8(response)?;
        let (head, body) = text.split_once("\r\n\r\n").context("no HTTP body")?;
        if !head.starts_with("HTTP/1.1 200") {
            bail!("unexpected admin answer: {head}");
        }
        if !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            return Ok(serde_json::from_str(body)?);
        }
        // Envoy's admin streams the dump in chunks: `<hex size>\r\n<data>\r\n`, then `0`.
        let mut rest = body;
        let mut json = String::new();
        loop {
            let (size, after) = rest.split_once("\r\n").context("a cut chunk")?;
            let size = usize::from_str_radix(size.trim(), 16)?;
            if size == 0 {
                break;
            }
            json.push_str(after.get(..size).context("a cut chunk")?);
            rest = after.get(size + 2..).context("a cut chunk")?;
        }
        Ok(serde_json::from_str(&json)?)
    }

    /// Whether Envoy applied `version`: every route table carries it, and with `clusters`
    /// every cluster too, none of them still warming.
    async fn shows(&self, build: &str, clusters: bool) -> anyhow::Result<bool> {
        let version = build.rsplit('_').next().unwrap_or(build);
        let dump = self.config_dump().await?;
        let configs = dump["configs"].as_array().context("no configs")?;
        let stamped = |headers: &Value| {
            headers.as_array().is_some_and(|h| {
                h.iter().any(|o| {
                    o["header"]["key"] == "x-plugin-version" && o["header"]["value"] == version
                })
            })
        };
        let routes: Vec<&Value> = configs
            .iter()
            .filter_map(|c| c["dynamic_route_configs"].as_array())
            .flatten()
            .collect();
        let routes_ok = !routes.is_empty()
            && routes.iter().all(|r| {
                r["route_config"]["virtual_hosts"]
                    .as_array()
                    .is_some_and(|vhs| vhs.iter().all(|vh| stamped(&vh["response_headers_to_add"])))
            });
        if !routes_ok || !clusters {
            return Ok(routes_ok);
        }
        let Some(cds) = configs
            .iter()
            .find(|c| c.get("dynamic_active_clusters").is_some())
        else {
            return Ok(false);
        };
        let warming = cds["dynamic_warming_clusters"]
            .as_array()
            .is_some_and(|w| !w.is_empty());
        let active = cds["dynamic_active_clusters"]
            .as_array()
            .context("no clusters")?;
        Ok(!warming
            && !active.is_empty()
            && active.iter().all(|c| {
                c["cluster"]["metadata"]["filter_metadata"]["tagger"]["version"] == version
            }))
    }
}
