// What abandoned Engine.IO handshakes cost a node's memory, and what it keeps after they expire:
// N long-polling handshakes (`GET /socket.io/?EIO=4&transport=polling`) that never join the
// namespace, from source addresses spread over 127.0.1.0/24 so that no address goes over
// `--max-pending-sessions-per-ip` (256), against a node started with default flags (the pending
// sessions expire after `--connect-timeout`, 10 s).
//
//   TWINE_BIN=target/release/twine node scripts/abandoned-handshakes.mjs [N] [seconds after expiry]
//
// (defaults 10000 and 15). Allocator settings in the environment (`_RJEM_MALLOC_CONF`,
// `MIMALLOC_*`, `MALLOC_*`, `GLIBC_TUNABLES`) are passed on to the node. Prints the node's RSS
// before, at its peak, when the last handshake was answered, every 5 s after, and at the end,
// then one JSON line.
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { startTwine } from '../js-fixtures/server.mjs';

const total = Number(process.argv[2] ?? 10_000);
const after = Number(process.argv[3] ?? 15);
const CONNECT_TIMEOUT = 10;
const PER_ADDRESS = 250;
const IN_FLIGHT = 64;

const rssMB = (pid) =>
  Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+) kB/)[1]) / 1024;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const env = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => /^(_RJEM_MALLOC_CONF|MIMALLOC_|MALLOC_|GLIBC_TUNABLES)/.test(k)),
);
const server = await startTwine({ env });
const pid = server.proc.pid;
await sleep(1000);
const before = rssMB(pid);
let peak = before;
const watch = setInterval(() => {
  try {
    peak = Math.max(peak, rssMB(pid));
  } catch {
    // the process ended
  }
}, 20);

// One keep-alive agent per source address.
const addresses = Math.ceil(total / PER_ADDRESS);
const agents = Array.from(
  { length: addresses },
  (_, i) => new http.Agent({ keepAlive: true, localAddress: `127.0.1.${i + 1}` }),
);
function handshake(i) {
  return new Promise((resolve, reject) => {
    const req = http.get(
      `${server.url}/socket.io/?EIO=4&transport=polling`,
      { agent: agents[Math.floor(i / PER_ADDRESS)] },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode));
      },
    );
    req.on('error', reject);
  });
}

const statuses = {};
let next = 0;
const started = Date.now();
await Promise.all(
  Array.from({ length: IN_FLIGHT }, async () => {
    while (next < total) {
      const status = await handshake(next++);
      statuses[status] = (statuses[status] ?? 0) + 1;
    }
  }),
);
const answered = Date.now();
for (const a of agents) a.destroy();
const atEnd = rssMB(pid);
const fmt = (mb) => `${mb.toFixed(1)} MB`;
console.log(`${total} handshakes in ${answered - started} ms: ${JSON.stringify(statuses)}`);
console.log(`RSS before ${fmt(before)}, when the last was answered ${fmt(atEnd)}`);

const curve = [];
const until = answered + (CONNECT_TIMEOUT + after) * 1000;
for (let t = 5; answered + t * 1000 <= until; t += 5) {
  await sleep(answered + t * 1000 - Date.now());
  curve.push([t, rssMB(pid)]);
  console.log(`  +${t} s: ${fmt(rssMB(pid))}`);
}
clearInterval(watch);
const retained = rssMB(pid);
// Their places came back: a handshake from the first address is served again.
const again = await handshake(0);
console.log(`peak ${fmt(peak)}; ${after} s after they expired ${fmt(retained)} (kept ${fmt(retained - before)} over before); a new handshake: ${again}`);
console.log(
  JSON.stringify({
    binary: process.env.TWINE_BIN ?? 'target/release/twine',
    env,
    handshakes: total,
    statuses,
    ms: answered - started,
    rss_mb: { before, peak, at_end: atEnd, retained, curve },
    again,
  }),
);
await server.stop();
