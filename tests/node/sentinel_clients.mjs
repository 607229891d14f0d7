// ioredis and node-redis (createSentinel) against roomguard's Sentinel-compatible endpoint.
//
// Run by tests/clients.rs with node (scripts/ensure-deps installs the packages in
// tests/node/node_modules):
//     node tests/node/sentinel_clients.mjs <sentinel-host> <sentinel-port> <shard> [<shard> ...]
//
// Per shard: an ioredis master client, an ioredis replica client (role: 'slave') and a
// node-redis sentinel; every client writes (masters) or reads (replica) every 20 ms
// ($RG_NODE_INTERVAL_MS), and
// every error is counted by client and kind. Prints "ready" once all answered; then, for each
// line on stdin (the test fails over meanwhile), checks within the deadline that every master
// client writes to the master the endpoint names, that the ioredis replica connection is on a
// replica (ROLE) and that node-redis reads its own write, and prints
// "check <n> ok <json error counts> writes/s <json rates>". Exits when stdin closes.
// $RG_NODE_DEBUG names a file that gets every error, with the connection it was seen on. Any failure exits non-zero with
// the reason on stderr.

import { appendFileSync } from 'node:fs';
import readline from 'node:readline';

import Redis from 'ioredis';
import { createSentinel } from 'redis';

const [host, portText, ...shards] = process.argv.slice(2);
const port = Number(portText);
const DEADLINE_MS = 30000;
// Pause between a shard's load iterations (BENCHMARKS.md uses 0: as fast as the clients go).
const INTERVAL_MS = Number(process.env.RG_NODE_INTERVAL_MS ?? 20);
const errors = {};
const writes = { ioredis: 0, 'node-redis': 0 };
const started = Date.now();

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
  // An error listener: without one node-redis ends the process on a dropped connection.
  const nodeRedis = createSentinel({ name, sentinelRootNodes: sentinels });
  master.on('error', () => {});
  replica.on('error', () => {});
  nodeRedis.on('error', () => {});
  await nodeRedis.connect();
  clients.push({ name, master, replica, nodeRedis, n: 0 });
}

// Endless load: each master client writes, the replica reads.
let stopping = false;
async function load(c) {
  while (!stopping) {
    c.n += 1;
    const key = `node:${c.name}:${c.n}`;
    await c.master.set(`io:${key}`, String(c.n)).then(() => writes.ioredis++, (e) => count('ioredis', e, `${c.master.stream?.remoteAddress}:${c.master.stream?.remotePort}`));
    await c.nodeRedis.set(`nr:${key}`, String(c.n)).then(() => writes['node-redis']++, (e) => count('node-redis', e));
    await c.replica.get(`io:${key}`).catch((e) => count('ioredis-replica', e));
    await new Promise((r) => (INTERVAL_MS > 0 ? setTimeout(r, INTERVAL_MS) : setImmediate(r)));
  }
}
const loads = clients.map(load);

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
  const [replicaRole] = await c.replica.role();
  if (replicaRole !== 'slave') return `ioredis replica client is on a ${replicaRole}`;
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

try {
  await check();
  console.log('ready');
  let n = 0;
  for await (const _ of readline.createInterface({ input: process.stdin })) {
    n += 1;
    await check();
    const seconds = (Date.now() - started) / 1000;
    const rates = Object.fromEntries(Object.entries(writes).map(([k, v]) => [k, Math.round(v / seconds)]));
    console.log(`check ${n} ok ${JSON.stringify(errors)} writes/s ${JSON.stringify(rates)}`);
  }
  stopping = true;
  await Promise.all(loads);
  for (const c of clients) {
    c.master.disconnect();
    c.replica.disconnect();
    await c.nodeRedis.close().catch(() => {});
  }
  process.exit(0);
} catch (e) {
  console.error(`FAILED: ${e?.stack ?? e}\nerrors: ${JSON.stringify(errors)}`);
  process.exit(1);
}
