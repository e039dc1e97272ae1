// A soak of well-behaved and hostile clients against the release binary, for minutes rather than
// the seconds CI allows: acknowledging clients that come and go must lose and repeat nothing,
// whatever the hostile ones do, and the server's memory must stay bounded.
//
//   node scripts/soak.mjs [minutes]        (default 3; needs `scripts/install-test-deps.sh` and
//                                           `cargo build --release -p twine` first)
//
// Prints the server's RSS and CPU every 10 s and a summary; exits 1 if a well-behaved client lost
// or repeated a message.
import net from 'node:net';
import { startTwine } from '../js-fixtures/server.mjs';
import { connect, fetchCookie, publish, subscribe, until, sleep } from '../js-fixtures/clients.mjs';
import { connectRaw, rssMB, cpuSeconds } from '../js-fixtures/raw.mjs';

const minutes = Number(process.argv[2] ?? 3);
const ROOMS = Array.from({ length: 10 }, (_, i) => `soak-${i}`);
const GOOD = 100;
const PUBLISH_PER_SECOND = 50;

const server = await startTwine();
const pid = server.proc.pid;
const stop = Date.now() + minutes * 60_000;
const running = () => Date.now() < stop;
const counts = { published: 0, refused: 0, cuts: 0, floods: 0, frames: 0, slow: 0, invented: 0 };

// The truth: an observer per room, connected throughout.
const truth = new Map();
for (const room of ROOMS) {
  const socket = await connect(server.url);
  await subscribe(socket, room);
  truth.set(room, socket);
}

// Well-behaved clients: each acknowledges everything, and every so often drops and comes back
// with its cookie; across its connections it must see its room's messages exactly once each.
const good = [];
for (let i = 0; i < GOOD; i++) {
  const room = ROOMS[i % ROOMS.length];
  const cookie = await fetchCookie(server.url);
  const socket = await connect(server.url, { cookie });
  await subscribe(socket, room);
  good.push({ room, cookie, sockets: [socket] });
}
const cycling = good.map(async (client, i) => {
  await sleep(2000 + (i % 20) * 500);
  while (running()) {
    await sleep(5000 + Math.random() * 15000);
    if (!running()) break;
    client.sockets.at(-1).close();
    await sleep(200 + Math.random() * 3000);
    client.sockets.push(await connect(server.url, { cookie: client.cookie }));
  }
});

// The backend: messages to the rooms at a steady rate.
let n = 0;
const publisher = (async () => {
  while (running()) {
    const room = ROOMS[n % ROOMS.length];
    const res = await publish(server, room, { n: n++, text: 'x'.repeat(100) });
    if (res.status === 201) counts.published++;
    else counts.refused++;
    await sleep(1000 / PUBLISH_PER_SECOND);
  }
})();

// Hostile clients, each kind on a loop of its own.
const hostile = [
  // Readers that stop reading in the busy rooms, and keep answering pings.
  (async () => {
    while (running()) {
      const ws = await connectRaw(server);
      ws.sendEvent('subscribe', ROOMS[counts.cuts % ROOMS.length]);
      await sleep(200);
      ws._socket.pause();
      const ponger = setInterval(() => ws.pong(), 1000);
      await Promise.race([new Promise((r) => ws.once('close', r)), sleep(30000)]);
      clearInterval(ponger);
      ws.terminate();
      counts.cuts++;
    }
  })(),
  // Floods of subscribes, then gone.
  (async () => {
    while (running()) {
      const ws = await connectRaw(server);
      for (let i = 0; i < 20000; i++) ws.sendEvent('subscribe', `flood-${i}`);
      await sleep(1000);
      ws.terminate();
      counts.floods++;
      await sleep(2000);
    }
  })(),
  // Oversized frames.
  (async () => {
    while (running()) {
      const ws = await connectRaw(server);
      ws.on('error', () => {});
      ws.send('x'.repeat(2_000_000));
      await sleep(500);
      ws.terminate();
      counts.frames++;
    }
  })(),
  // Invented cookies, each joining as many long rooms as allowed.
  (async () => {
    while (running()) {
      const ws = await connectRaw(server, { cookie: `twineid=invented-${counts.invented}` });
      for (let r = 0; r < 1001; r++) ws.sendEvent('subscribe', `${r}-${'y'.repeat(240)}`);
      await sleep(3000);
      ws.terminate();
      counts.invented++;
    }
  })(),
  // Slow headers.
  (async () => {
    while (running()) {
      const sockets = Array.from({ length: 50 }, () => {
        const s = net.connect(server.port, '127.0.0.1');
        s.on('error', () => {});
        s.write('GET / HTTP/1.1\r\nHost: x\r\n');
        return s;
      });
      await sleep(5000);
      for (const s of sockets) s.destroy();
      counts.slow += sockets.length;
    }
  })(),
];

// The server's memory and CPU.
let peak = 0;
const samples = [];
let lastCpu = cpuSeconds(pid);
const sampler = setInterval(() => {
  const rss = rssMB(pid);
  const cpu = cpuSeconds(pid);
  peak = Math.max(peak, rss);
  samples.push(rss);
  console.log(
    `t+${Math.round((Date.now() - stop + minutes * 60_000) / 1000)}s RSS ${rss.toFixed(0)} MB, CPU ${((cpu - lastCpu) * 10).toFixed(0)}%, published ${counts.published}, refused ${counts.refused}, stalled readers cut ${counts.cuts}, floods ${counts.floods}`,
  );
  lastCpu = cpu;
}, 10000);

await Promise.all([publisher, ...cycling, ...hostile]);
clearInterval(sampler);

// Everything published reaches every observer; then every well-behaved client is checked.
const expected = new Map(ROOMS.map((room) => [room, []]));
await sleep(3000);
for (const room of ROOMS) expected.set(room, truth.get(room).messages.map((m) => m.n));
let lost = 0;
let repeated = 0;
for (const client of good) {
  const want = expected.get(client.room);
  const socket = client.sockets.at(-1);
  await until(() => new Set(client.sockets.flatMap((s) => s.messages.map((m) => m.n))).size >= want.length, 15000, 'catch up').catch(() => {});
  const got = client.sockets.flatMap((s) => s.messages.map((m) => m.n));
  const seen = new Set(got);
  lost += want.filter((m) => !seen.has(m)).length;
  repeated += got.length - seen.size;
  socket.close();
}
console.log(
  `\n${minutes} min: ${counts.published} published (${counts.refused} refused), ${GOOD} acknowledging clients reconnecting every 5-20 s: ` +
    `${lost} lost, ${repeated} repeated. Hostile: ${counts.cuts} stalled readers cut, ${counts.floods} floods, ${counts.frames} oversized frames, ` +
    `${counts.invented} invented sessions, ${counts.slow} slow-header connections. RSS peak ${peak.toFixed(0)} MB, last ${samples.at(-1)?.toFixed(0)} MB.`,
);
for (const socket of truth.values()) socket.close();
await server.stop();
process.exit(lost === 0 && repeated === 0 ? 0 : 1);
