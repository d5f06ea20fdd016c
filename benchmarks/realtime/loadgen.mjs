// Load generator for benchmarks/realtime: stock socket.io-client connections on `/realtime`.
//
//   node loadgen.mjs '<json config>'        (prints one JSON result line on stdout)
//
// Two modes, the same for the hub and for the plain python-socketio baseline:
//
// * fanout: `clients` sockets (spread round-robin over `urls`) subscribe to record.created
//   of `object`; then `writes` records are created over HTTP (POST `writeUrl`, paced at
//   `rate` per second, at most `inflight` requests open). Every socket times each event
//   from the moment this process sent the write that caused it (one clock: no skew), so
//   the latency is write -> commit -> fan-out -> delivery, end to end.
// * hold: `clients` sockets connect and subscribe, then stay connected for `holdS`
//   seconds while the driver measures the server's memory; reports how many held.
//
// Config keys: mode, urls[], clients, token, object, writeUrl, writeToken, writes, rate,
// inflight, holdS, connectBatch, connectTimeoutS, subscribe (false: connect only),
// extra (more fields of every written record; the marker goes in `subject`),
// subscriptionIds ("shared": default, one id for all; "perClient": one each).

import { io } from "socket.io-client";
import { performance } from "node:perf_hooks";

const cfg = {
  mode: "fanout",
  clients: 100,
  writes: 100,
  rate: 20,
  inflight: 8,
  holdS: 10,
  connectBatch: 100,
  connectTimeoutS: 120,
  ...JSON.parse(process.argv[2] ?? "{}"),
};
const log = (...args) => console.error("[loadgen]", ...args);

function percentile(sorted, q) {
  if (sorted.length === 0) return null;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[index];
}

function connectOne(index, sentAt, latencies) {
  const url = cfg.urls[index % cfg.urls.length];
  return new Promise((resolve, reject) => {
    const socket = io(`${url}/realtime`, {
      transports: ["websocket"],
      auth: { token: cfg.token },
      reconnection: false,
      timeout: cfg.connectTimeoutS * 1000,
    });
    socket.on("connect_error", (err) => reject(new Error(`client ${index}: ${err.message}`)));
    socket.on("event", (event) => {
      const marker = event?.record?.subject;
      const t0 = sentAt.get(marker);
      if (t0 !== undefined) latencies.push(performance.now() - t0);
    });
    socket.on("connect", () => {
      if (cfg.subscribe === false) {
        resolve(socket);
        return;
      }
      const spec = {
        // One id for every client, as an app's code would choose it ("perClient": one each).
        subscriptionId: cfg.subscriptionIds === "perClient" ? `bench-${index}` : "bench",
        objects: [cfg.object],
        events: ["record.created"],
        filter: {},
      };
      socket.timeout(cfg.connectTimeoutS * 1000).emit("subscribe", spec, (err, ack) => {
        if (err) reject(new Error(`client ${index}: subscribe timed out`));
        else if (!ack?.ok) reject(new Error(`client ${index}: subscribe refused ${JSON.stringify(ack)}`));
        else resolve(socket);
      });
    });
  });
}

async function connectAll(sentAt, latencies) {
  const sockets = [];
  const started = performance.now();
  for (let first = 0; first < cfg.clients; first += cfg.connectBatch) {
    const batch = [];
    for (let i = first; i < Math.min(cfg.clients, first + cfg.connectBatch); i++) {
      batch.push(connectOne(i, sentAt, latencies));
    }
    sockets.push(...(await Promise.all(batch)));
  }
  return { sockets, connectS: (performance.now() - started) / 1000 };
}

async function write(i, runId, sentAt) {
  const marker = `${runId}-${i}`;
  sentAt.set(marker, performance.now());
  const response = await fetch(cfg.writeUrl, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      ...(cfg.writeToken ? { authorization: `Bearer ${cfg.writeToken}` } : {}),
    },
    body: JSON.stringify({ subject: marker, ...(cfg.extra ?? {}) }),
  });
  if (!response.ok) throw new Error(`write ${i}: HTTP ${response.status} ${await response.text()}`);
  await response.arrayBuffer();
}

async function fanout() {
  const sentAt = new Map();
  const latencies = [];
  const { sockets, connectS } = await connectAll(sentAt, latencies);
  log(`${sockets.length} subscribed in ${connectS.toFixed(1)} s`);
  const runId = `r${Date.now().toString(36)}`;
  const expected = cfg.writes * sockets.length;
  const started = performance.now();
  const open = new Set();
  const writeErrors = [];
  for (let i = 0; i < cfg.writes; i++) {
    const due = started + (i * 1000) / cfg.rate;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    while (open.size >= cfg.inflight) await Promise.race(open);
    const pending = write(i, runId, sentAt)
      .catch((err) => writeErrors.push(String(err)))
      .finally(() => open.delete(pending));
    open.add(pending);
  }
  await Promise.all(open);
  const writesS = (performance.now() - started) / 1000;
  const deadline = performance.now() + 30_000;
  while (latencies.length < expected && performance.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
  }
  const totalS = (performance.now() - started) / 1000;
  for (const socket of sockets) socket.disconnect();
  const sorted = Float64Array.from(latencies).sort();
  return {
    mode: "fanout",
    clients: sockets.length,
    writes: cfg.writes,
    rate: cfg.rate,
    expected,
    delivered: latencies.length,
    writeErrors: writeErrors.slice(0, 5),
    writeErrorCount: writeErrors.length,
    connectS,
    writesS,
    eventsPerS: latencies.length / totalS,
    p50Ms: percentile(sorted, 0.5),
    p99Ms: percentile(sorted, 0.99),
    maxMs: sorted.length ? sorted[sorted.length - 1] : null,
  };
}

async function hold() {
  const { sockets, connectS } = await connectAll(new Map(), []);
  log(`${sockets.length} held after ${connectS.toFixed(1)} s`);
  console.log(JSON.stringify({ phase: "connected", clients: sockets.length, connectS }));
  await new Promise((r) => setTimeout(r, cfg.holdS * 1000));
  const still = sockets.filter((s) => s.connected).length;
  for (const socket of sockets) socket.disconnect();
  return { mode: "hold", clients: cfg.clients, connectS, held: still };
}

try {
  const result = cfg.mode === "hold" ? await hold() : await fanout();
  console.log(JSON.stringify(result));
  process.exit(0);
} catch (err) {
  console.log(JSON.stringify({ error: String(err?.message ?? err) }));
  process.exit(1);
}
