// ioredis, iovalkey and node-redis (createSentinel) against roomguard's Sentinel-compatible endpoint.
//
// Run by tests/clients.rs with node (scripts/ensure-deps installs the packages in
// tests/node/node_modules):
//     node tests/node/sentinel_clients.mjs <sentinel-host> <sentinel-port> <shard> [<shard> ...]
//
// Per shard: an ioredis and an iovalkey master client, an ioredis and an iovalkey replica
// client (role: 'slave') and a node-redis sentinel; every client writes (masters) or reads
// (replicas) every 20 ms ($RG_NODE_INTERVAL_MS; or, with $RG_NODE_RATE=<writes/s>, each
// library writes at that steady rate in all, spread over the shards, without waiting for
// replies: examples/client_errors.rs), and every error is counted by client and
// kind. Prints "ready" once all answered; then, for each line on stdin (the test fails over
// meanwhile), checks within the deadline that every master client writes to the master the
// endpoint names, that the replica connections are on replicas (ROLE) and that node-redis
// reads its own write; then looks up every acknowledged write on the master. A line may end
// with the time (ms since the epoch) a room was killed: a write acknowledged in the second
// before it may have been lost with the room (asynchronous replication) and is counted apart
// ("inFlight"); any other missing write is "lost". Prints
// "check <n> ok <json error counts> writes/s <json rates> lost <json> inFlight <json>".
// Exits when stdin closes.
// $RG_NODE_DEBUG names a file that gets every error, with the connection it was seen on. Any failure exits non-zero with
// the reason on stderr.

import { appendFileSync } from 'node:fs';
import readline from 'node:readline';

import Redis from 'ioredis';
import Valkey from 'iovalkey';
import { createSentinel } from 'redis';

const [host, portText, ...shards] = process.argv.slice(2);
const port = Number(portText);
const DEADLINE_MS = 30000;
// Pause between a shard's load iterations (BENCHMARKS.md uses 0: as fast as the clients go).
const INTERVAL_MS = Number(process.env.RG_NODE_INTERVAL_MS ?? 20);
const errors = {};
const writes = { ioredis: 0, iovalkey: 0, 'node-redis': 0 };
// Per client library, every acknowledged write: [key, when (ms since the epoch)].
const acked = { ioredis: [], iovalkey: [], 'node-redis': [] };
let started = Date.now();

function count(client, error, where) {
  const message = String(error?.message ?? error);
  const kind = message.startsWith('READONLY') ? 'readonly' : message.split(/[ :]/)[0] || 'other';
  errors[client] ??= {};
  errors[client][kind] = (errors[client][kind] ?? 0) + 1;
  if (process.env.RG_NODE_DEBUG) {
    appendFileSync(process.env.RG_NODE_DEBUG, `${new Date().toISOString()} ${client} ${kind} ${where ?? ''} ${message}\n`);
  }
}

const sentinels = [{ host, port }];
const clients = [];
for (const name of shards) {
  const master = new Redis({ sentinels, name, role: 'master', enableReadyCheck: true });
  const replica = new Redis({ sentinels, name, role: 'slave' });
  const valkey = new Valkey({ sentinels, name, role: 'master', enableReadyCheck: true });
  const valkeyReplica = new Valkey({ sentinels, name, role: 'slave' });
  // An error listener: without one node-redis ends the process on a dropped connection.
  const nodeRedis = createSentinel({ name, sentinelRootNodes: sentinels });
  master.on('error', () => {});
  replica.on('error', () => {});
  valkey.on('error', () => {});
  valkeyReplica.on('error', () => {});
  nodeRedis.on('error', () => {});
  await nodeRedis.connect();
  clients.push({ name, master, replica, valkey, valkeyReplica, nodeRedis, n: 0 });
}

// Endless load: each master client writes, the replica reads.
let stopping = false;
async function load(c) {
  while (!stopping) {
    c.n += 1;
    const key = `node:${c.name}:${c.n}`;
    const ack = (lib, k) => () => {
      writes[lib]++;
      acked[lib].push([k, Date.now()]);
    };
    await c.master.set(`io:${key}`, String(c.n)).then(ack('ioredis', `io:${key}`), (e) => count('ioredis', e, `${c.master.stream?.remoteAddress}:${c.master.stream?.remotePort}`));
    await c.valkey.set(`iv:${key}`, String(c.n)).then(ack('iovalkey', `iv:${key}`), (e) => count('iovalkey', e));
    await c.nodeRedis.set(`nr:${key}`, String(c.n)).then(ack('node-redis', `nr:${key}`), (e) => count('node-redis', e));
    await c.replica.get(`io:${key}`).catch((e) => count('ioredis-replica', e));
    await c.valkeyReplica.get(`iv:${key}`).catch((e) => count('iovalkey-replica', e));
    await new Promise((r) => (INTERVAL_MS > 0 ? setTimeout(r, INTERVAL_MS) : setImmediate(r)));
  }
}
// Open loop: every 5 ms, the writes due by now at RATE per library, not waiting for replies
// (a client that stalls accumulates them, as an application's requests would); replica
// reads at most one per client per tick.
const RATE = Number(process.env.RG_NODE_RATE ?? 0);
let pending = 0;
async function paced() {
  const t0 = Date.now();
  let issued = 0;
  let n = 0;
  while (!stopping) {
    const due = Math.floor(((Date.now() - t0) * RATE) / 1000);
    for (; issued < due; issued += 1) {
      const c = clients[issued % clients.length];
      n += 1;
      const key = `node:${c.name}:${n}`;
      const ack = (lib, k) => () => {
        writes[lib]++;
        acked[lib].push([k, Date.now()]);
      };
      const track = (p) => {
        pending += 1;
        p.finally(() => (pending -= 1));
      };
      track(c.master.set(`io:${key}`, String(n)).then(ack('ioredis', `io:${key}`), (e) => count('ioredis', e)));
      track(c.valkey.set(`iv:${key}`, String(n)).then(ack('iovalkey', `iv:${key}`), (e) => count('iovalkey', e)));
      track(c.nodeRedis.set(`nr:${key}`, String(n)).then(ack('node-redis', `nr:${key}`), (e) => count('node-redis', e)));
    }
    for (const c of clients) {
      c.replica.get('k').catch((e) => count('ioredis-replica', e));
      c.valkeyReplica.get('k').catch((e) => count('iovalkey-replica', e));
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  while (pending > 0) await new Promise((r) => setTimeout(r, 10));
}
// Rates count from here.
started = Date.now();
const loads = RATE > 0 ? [paced()] : clients.map(load);

async function endpointMaster(name) {
  const s = new Redis({ host, port, lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await s.connect();
    const [ip, p] = await s.call('SENTINEL', 'get-master-addr-by-name', name);
    return `${ip}:${p}`;
  } finally {
    s.disconnect();
  }
}

async function checkOnce(c) {
  const master = await endpointMaster(c.name);
  const key = `check:${c.name}:${Date.now()}`;
  await c.master.set(key, 'io');
  const [role] = await c.master.role();
  const at = `${c.master.stream?.remoteAddress}:${c.master.stream?.remotePort}`;
  if (role !== 'master' || at !== master) return `ioredis master client on ${at} (${role}), endpoint names ${master}`;
  await c.valkey.set(`${key}:iv`, 'iv');
  const [valkeyRole] = await c.valkey.role();
  const valkeyAt = `${c.valkey.stream?.remoteAddress}:${c.valkey.stream?.remotePort}`;
  if (valkeyRole !== 'master' || valkeyAt !== master) return `iovalkey master client on ${valkeyAt} (${valkeyRole}), endpoint names ${master}`;
  const [replicaRole] = await c.replica.role();
  if (replicaRole !== 'slave') return `ioredis replica client is on a ${replicaRole}`;
  const [valkeyReplicaRole] = await c.valkeyReplica.role();
  if (valkeyReplicaRole !== 'slave') return `iovalkey replica client is on a ${valkeyReplicaRole}`;
  await c.nodeRedis.set(`${key}:nr`, 'nr');
  if ((await c.nodeRedis.get(`${key}:nr`)) !== 'nr') return 'node-redis did not read its write';
  const nrMaster = c.nodeRedis.getMasterNode();
  if (`${nrMaster?.host}:${nrMaster?.port}` !== master) return `node-redis master ${nrMaster?.host}:${nrMaster?.port}`;
  return null;
}

async function check() {
  const deadline = Date.now() + DEADLINE_MS;
  for (const c of clients) {
    let last = 'not checked';
    while (Date.now() < deadline) {
      last = await checkOnce(c).catch((e) => String(e?.message ?? e));
      if (last === null) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    if (last !== null) throw new Error(`${c.name}: ${last}`);
  }
}

// Every acknowledged write looked up on the master (through the ioredis master client, which
// check() found there): missing ones acknowledged before `killedAt - 1000` are lost, the
// others were in flight when a room died. Every check looks up every write so far.
async function lookUp(killedAt) {
  const lost = {};
  const inFlight = {};
  for (const [lib, list] of Object.entries(acked)) {
    const upTo = list.length;
    for (let i = 0; i < upTo; i += 500) {
      const chunk = list.slice(i, Math.min(i + 500, upTo));
      for (const c of clients) {
        const mine = chunk.filter(([k]) => k.includes(`:${c.name}:`));
        if (mine.length === 0) continue;
        const values = await c.master.mget(...mine.map(([k]) => k));
        mine.forEach(([, at], j) => {
          if (values[j] !== null) return;
          const bucket = killedAt && at >= killedAt - 1000 ? inFlight : lost;
          bucket[lib] = (bucket[lib] ?? 0) + 1;
        });
      }
    }
  }
  return { lost, inFlight };
}

try {
  await check();
  console.log('ready');
  let n = 0;
  for await (const line of readline.createInterface({ input: process.stdin })) {
    n += 1;
    await check();
    const killedAt = Number(line.trim().split(' ').pop()) || null;
    const { lost, inFlight } = await lookUp(killedAt);
    const seconds = (Date.now() - started) / 1000;
    const rates = Object.fromEntries(Object.entries(writes).map(([k, v]) => [k, Math.round(v / seconds)]));
    console.log(`check ${n} ok ${JSON.stringify(errors)} writes/s ${JSON.stringify(rates)} lost ${JSON.stringify(lost)} inFlight ${JSON.stringify(inFlight)}`);
  }
  stopping = true;
  await Promise.all(loads);
  for (const c of clients) {
    c.master.disconnect();
    c.replica.disconnect();
    c.valkey.disconnect();
    c.valkeyReplica.disconnect();
    await c.nodeRedis.close().catch(() => {});
  }
  process.exit(0);
} catch (e) {
  console.error(`FAILED: ${e?.stack ?? e}\nerrors: ${JSON.stringify(errors)}`);
  process.exit(1);
}
