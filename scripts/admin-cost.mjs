// What an open Admin UI session costs a node: 2,000 clients in a room, publishes to it and a
// churn of connecting and leaving clients, measured (the node's CPU and resident memory) with no
// admin and with one logged in. `node scripts/admin-cost.mjs [clients] [seconds]`, against
// $TWINE_BIN or target/release/twine.
import { startTwine } from '../js-fixtures/server.mjs';
import { publish, sleep } from '../js-fixtures/clients.mjs';
import { connectRaw, crowd, rssMB, cpuSeconds } from '../js-fixtures/raw.mjs';
import { connectAdmin, hashPassword } from '../js-fixtures/admin.mjs';

const clients = Number(process.argv[2] ?? 2000);
const seconds = Number(process.argv[3] ?? 10);
const auth = { username: 'operator', password: 'measure' };
const server = await startTwine({
  args: ['--admin', 'on', '--admin-username', auth.username, '--admin-password-hash', hashPassword(auth.password, 10)],
});
const pid = server.proc.pid;
const members = await crowd(server, 'crowd', clients);

/** `seconds` of 50 publishes a second to the crowd and 20 clients a second joining and leaving. */
async function load() {
  const until = Date.now() + seconds * 1000;
  const cpu = cpuSeconds(pid);
  let n = 0;
  while (Date.now() < until) {
    publish(server, 'crowd', { n: n++ });
    if (n % 3 === 0) {
      connectRaw(server, { localAddress: `127.1.${Math.floor(n / 250) % 250}.${1 + (n % 250)}` })
        .then(async (ws) => {
          ws.sendEvent('subscribe', 'churn');
          await sleep(200);
          ws.close();
        })
        .catch(() => {});
    }
    await sleep(20);
  }
  await sleep(500);
  return { cpu: ((cpuSeconds(pid) - cpu) / seconds) * 100, rss: rssMB(pid) };
}

await sleep(2000);
const idle = rssMB(pid);
// Twice without an admin: the second run is the control (history and buffers grow by
// themselves between runs).
await load();
const without = await load();
const admin = await connectAdmin(server, auth);
let bytes = 0;
admin.onAny((...args) => (bytes += JSON.stringify(args).length));
await sleep(2000);
const listed = admin.received.find((e) => e.event === 'all_sockets')?.args[0].length;
const withAdmin = await load();
admin.close();
console.log(
  `${clients} clients: RSS ${idle.toFixed(0)} MB idle; under load (second run) without an admin ${without.cpu.toFixed(1)}% CPU, RSS ${without.rss.toFixed(0)} MB; ` +
    `with one admin ${withAdmin.cpu.toFixed(1)}% CPU, RSS ${withAdmin.rss.toFixed(0)} MB; ` +
    `all_sockets listed ${listed}, the admin received ${(bytes / 1024).toFixed(0)} KiB over ${seconds + 2} s`,
);
for (const m of members) m.close();
await server.stop('SIGKILL');
process.exit(0);
