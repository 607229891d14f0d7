// What ioredis does with `SENTINEL SENTINELS` (run by tests/clients.rs):
//     node tests/node/sentinel_peers.mjs <sentinel-host> <sentinel-port> <shard> <reconnects>
//
// An ioredis master client given one endpoint writes, then its connection to the master is
// closed <reconnects> times (CLIENT KILL from another connection) and it writes again each
// time. ioredis adds the endpoints `SENTINEL SENTINELS` names to its list and asks the next
// one at the next connect; with a single endpoint it runs off the end of its list and emits
// "All sentinels are unreachable. Retrying from scratch" as an `error` event at every
// reconnect. Prints one JSON line: {"unreachable": <such errors>, "sentinels": [<its list>]}.

import Redis from 'ioredis';

const [host, portText, name, reconnectsText] = process.argv.slice(2);
const sentinels = [{ host, port: Number(portText) }];
const client = new Redis({ sentinels, name, role: 'master' });
let unreachable = 0;
client.on('error', (e) => {
  if (/All sentinels are unreachable/.test(e.message)) unreachable += 1;
});
await client.set('peers:0', '0');
for (let i = 1; i <= Number(reconnectsText); i += 1) {
  const killer = new Redis({ host: client.stream.remoteAddress, port: client.stream.remotePort });
  await killer.client('KILL', 'TYPE', 'normal');
  killer.disconnect();
  await client.set(`peers:${i}`, String(i));
}
const list = client.connector.sentinelIterator.sentinels.map((s) => `${s.host}:${s.port}`);
console.log(JSON.stringify({ unreachable, sentinels: list }));
client.disconnect();
