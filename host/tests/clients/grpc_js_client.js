// A grpc-js (@grpc/grpc-js-xds) xDS client for integration tests: RPCs over `xds:///TARGET`.
//
// Usage (modules come from `make deps`; the caller sets NODE_PATH):
//   NODE_PATH=.deps/node/node_modules node grpc_js_client.js --xds 127.0.0.1:PORT --node-id ID
//       --target NAME [--cluster C] [--zone Z] [--metadata K=V ...] [--rpcs N] [--timeout S]
//       [--watch S] [--health] [--trace]
//
// Same CLI and output as grpc_xds_client.py: the bootstrap is built here (env
// GRPC_XDS_BOOTSTRAP_CONFIG), one JSON line per RPC result on stdout:
//   {"ok":true,"who":"50051","t":0.41}          default: raw-bytes /test.Echo/Who
//   {"ok":true,"status":"SERVING","t":0.41}     --health: grpc.health.v1.Health/Check, service ""
//   {"ok":false,"code":"UNAVAILABLE","error":"...","t":...}
// One-shot: retry until one RPC succeeds or --timeout (exit 1 with the last error), then the
// remaining --rpcs - 1 RPCs; exit 0 only if all succeeded. --watch S: one RPC per 200 ms for S
// seconds, every result printed, exit 0.
'use strict';

const START = process.hrtime.bigint();
const elapsed = () => Number(process.hrtime.bigint() - START) / 1e9;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function parseArgs(argv) {
  const args = { cluster: 'test', zone: 'a', metadata: {}, rpcs: 1, timeout: 30, watch: null,
    health: false, trace: false };
  const usage = (msg) => { console.error(`grpc_js_client.js: ${msg}`); process.exit(64); };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => (i + 1 < argv.length ? argv[++i] : usage(`${flag} needs a value`));
    switch (flag) {
      case '--xds': args.xds = value(); break;
      case '--node-id': args.nodeId = value(); break;
      case '--target': args.target = value(); break;
      case '--cluster': args.cluster = value(); break;
      case '--zone': args.zone = value(); break;
      case '--metadata': {
        const kv = value(); const eq = kv.indexOf('=');
        if (eq < 0) usage(`--metadata wants K=V, got ${kv}`);
        args.metadata[kv.slice(0, eq)] = kv.slice(eq + 1);
        break;
      }
      case '--rpcs': args.rpcs = Number(value()); break;
      case '--timeout': args.timeout = Number(value()); break;
      case '--watch': args.watch = Number(value()); break;
      case '--health': args.health = true; break;
      case '--trace': args.trace = true; break;
      default: usage(`unknown argument ${flag}`);
    }
  }
  for (const k of ['xds', 'nodeId', 'target']) if (!args[k]) usage(`missing --${k === 'nodeId' ? 'node-id' : k}`);
  return args;
}

function emit(result) {
  result.t = Math.round(elapsed() * 1000) / 1000;
  process.stdout.write(JSON.stringify(result) + '\n');
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  // grpc-js reads these when it loads and when it first builds the xDS client: set them first.
  process.env.GRPC_XDS_BOOTSTRAP_CONFIG = JSON.stringify({
    xds_servers: [{ server_uri: args.xds, channel_creds: [{ type: 'insecure' }],
      server_features: ['xds_v3'] }],
    node: { id: args.nodeId, cluster: args.cluster,
      locality: { region: 'local', zone: args.zone }, metadata: args.metadata },
  });
  if (args.trace) {
    process.env.GRPC_VERBOSITY = 'DEBUG';
    process.env.GRPC_TRACE = 'xds_client,xds_resolver,cds_balancer,xds_cluster_impl';
  }
  const grpc = require('@grpc/grpc-js');
  require('@grpc/grpc-js-xds').register();
  const { service: health } = require('grpc-health-check');

  const client = new grpc.Client(`xds:///${args.target}`, grpc.credentials.createInsecure());
  const unary = (path, ser, de, req, seconds) => new Promise((resolve) => {
    const deadline = new Date(Date.now() + seconds * 1000);
    client.makeUnaryRequest(path, ser, de, req, { deadline }, (err, reply) => resolve({ err, reply }));
  });
  const attempt = async (seconds) => {
    const { err, reply } = args.health
      ? await unary(health.Check.path, health.Check.requestSerialize,
        health.Check.responseDeserialize, { service: '' }, seconds)
      : await unary('/test.Echo/Who', (x) => x, (x) => x, Buffer.alloc(0), seconds);
    if (err) return { ok: false, code: grpc.status[err.code] || String(err.code), error: err.details };
    if (args.health) {
      const s = reply.status;
      return { ok: true, status: typeof s === 'number' ? ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'][s] : s };
    }
    return { ok: true, who: reply.toString() };
  };

  const finish = (code) => { client.close(); process.exit(code); };

  if (args.watch !== null) {
    const end = args.watch; // measured from process start, as in the Python client
    while (elapsed() < end) {
      const began = elapsed();
      emit(await attempt(1));
      await sleep(Math.max(0, 200 - (elapsed() - began) * 1000));
    }
    return finish(0);
  }

  let attempts = 0;
  for (;;) {
    attempts++;
    const remaining = args.timeout - elapsed();
    const result = await attempt(Math.max(0.1, Math.min(2, remaining)));
    if (result.ok) { emit(result); break; }
    if (elapsed() + 0.2 >= args.timeout) { result.attempts = attempts; emit(result); return finish(1); }
    await sleep(200);
  }
  let failed = 0;
  for (let i = 1; i < args.rpcs; i++) {
    const result = await attempt(2);
    if (!result.ok) failed++;
    emit(result);
  }
  return finish(failed === 0 ? 0 : 2);
}

main().catch((e) => {
  emit({ ok: false, code: 'CLIENT_ERROR', error: String(e && e.stack || e) });
  process.exit(3);
});
