// Stopping a node without a storm: on SIGTERM it turns unready at once and refuses new sessions,
// then closes its sockets a few at a time over --drain-period, so clients behind a load
// balancer (nginx, as deploy/nginx.conf) reconnect to the other node and miss nothing; a second
// signal closes everything at once; the process exits 0 in time. Stock socket.io-client,
// twine-client-library and python-socketio all reconnect by themselves.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { startTwine } from '../js-fixtures/server.mjs';
import { freePort, startNginx, startRedis } from '../js-fixtures/services.mjs';
import { io, fetchCookie, publish, until, sleep } from '../js-fixtures/clients.mjs';

const fixtures = createRequire(new URL('../js-fixtures/package.json', import.meta.url));

test('SIGTERM turns /ready to 503 within 100 ms and refuses new sessions; a second signal closes at once and the process exits 0', async () => {
  const server = await startTwine({ args: ['--drain-delay', '5s', '--drain-period', '10s'] });
  const reasons = [];
  const sockets = ['websocket', 'polling'].map((transport) => {
    const s = io(server.url, { forceNew: true, transports: [transport], reconnectionDelay: 60000 });
    s.on('disconnect', (reason) => reasons.push(reason));
    return s;
  });
  try {
    await until(() => sockets.every((s) => s.connected), 5000, 'both connected');
    assert.equal((await fetch(`${server.url}/ready`)).status, 200);
    server.proc.kill('SIGTERM');
    const signalled = Date.now();
    while ((await fetch(`${server.url}/ready`)).status !== 503) {
      assert.ok(Date.now() - signalled < 1000, 'unready within a second');
    }
    const unready = Date.now() - signalled;
    assert.ok(unready <= 100, `/ready answered 503 after ${unready} ms`);
    const handshake = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling`);
    assert.equal(handshake.status, 503, 'a new session is refused while draining');
    assert.equal(handshake.headers.get('retry-after'), '1');
    assert.ok(sockets.every((s) => s.connected), 'existing clients stay during the delay');
    server.proc.kill('SIGTERM');
    const hurried = Date.now();
    const { code } = await server.exited;
    assert.equal(code, 0);
    assert.ok(Date.now() - hurried < 3000, 'a second signal closes at once');
    await until(() => reasons.length === 2, 5000, 'both disconnected');
    for (const reason of reasons) {
      assert.ok(['transport close', 'transport error'].includes(reason), `reason ${reason}`);
    }
    assert.ok(sockets.every((s) => s.active), 'clients will reconnect by themselves');
  } finally {
    for (const s of sockets) s.close();
  }
});

test('a node draining 500 clients over 5 s closes them evenly; behind nginx they reconnect to the other node and miss nothing', async (t) => {
  const redis = await startRedis();
  const bPort = await freePort();
  const a = await startTwine({ args: ['--redis-url', redis.url, '--drain-delay', '1s', '--drain-period', '5s'] });
  // The other node's port is in nginx but nothing listens yet: every client starts on A. (nginx
  // would otherwise take the other node out of rotation for having refused at first.)
  const proxy = await startNginx([a.port, bPort], { serverOptions: 'max_fails=0' });
  const room = 'deploy';
  const clients = [];
  let b;
  let python;
  let library;
  const TwineClientLibrary = (await import(fixtures.resolve('twine-client-library'))).default;
  try {
    for (let i = 0; i < 500; i++) {
      const cookie = await fetchCookie(proxy.url);
      const s = io(proxy.url, {
        forceNew: true,
        transports: ['websocket'],
        extraHeaders: { Cookie: cookie },
        reconnectionDelay: 200,
        reconnectionDelayMax: 1000,
      });
      s.got = [];
      s.stamps = [];
      s.closedAt = null;
      s.on('message', (m) => {
        s.got.push(m.n);
        s.stamps.push(m.timestamp);
        s.emit('updateSessionTS', m.timestamp);
      });
      s.on('disconnect', () => (s.closedAt ??= Date.now()));
      s.on('connect', () => s.emit('subscribe', room));
      clients.push(s);
    }
    await until(() => clients.every((s) => s.connected), 30000, '500 connected');
    // twine-client-library, unchanged. In Node its /set-cookie answer is dropped (no cookie
    // jar), so it has no session to recover: it must reconnect by itself and go on receiving
    // (in a browser it also recovers what it missed: library-recovery.test.mjs).
    library = new TwineClientLibrary(proxy.url);
    const fromLibrary = [];
    await until(() => library.socket?.connected, 5000, 'the library connected');
    library.subscribe(room);
    library.listenOn(room, (payload) => fromLibrary.push(payload.n));
    // python-socketio, reconnecting by itself.
    const script = new URL('../js-fixtures/python/reconnecting.py', import.meta.url).pathname;
    python = spawn(process.env.PYTHON ?? 'python3', [script, proxy.url, room], { stdio: ['ignore', 'pipe', 'pipe'] });
    const fromPython = [];
    let partial = '';
    python.stdout.on('data', (chunk) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop();
      for (const line of lines.filter(Boolean)) fromPython.push(JSON.parse(line));
    });
    await until(() => fromPython.some((l) => l.roomJoined), 15000, 'python joined');
    await sleep(500);

    b = await startTwine({ args: ['--redis-url', redis.url, '--port', String(bPort)] });
    let n = 0;
    const publishing = setInterval(() => publish(b, room, { n: n++ }), 50);
    await sleep(500);
    a.proc.kill('SIGTERM');
    const signalled = Date.now();
    const { code } = await a.exited;
    const took = Date.now() - signalled;
    await sleep(2000);
    clearInterval(publishing);
    const count = n;
    await until(() => clients.every((s) => s.connected && s.got.length === count), 20000, 'everyone back with everything').catch((e) => {
      const connected = clients.filter((s) => s.connected).length;
      const lengths = new Map();
      for (const s of clients) lengths.set(s.got.length, (lengths.get(s.got.length) ?? 0) + 1);
      const odd = clients.find((s) => s.got.length !== count);
      throw new Error(`${e.message}: ${connected} connected; got lengths ${JSON.stringify([...lengths])} of ${count}; one: ${JSON.stringify(odd?.got)}`);
    });
    for (const s of clients) {
      // Publishes overlap, so their order is the timestamps', not the numbers'.
      assert.deepEqual([...s.got].sort((x, y) => x - y), [...Array(count).keys()], 'each once');
      assert.ok(s.stamps.every((ts, i) => i === 0 || ts > s.stamps[i - 1]), 'in publish order');
    }

    assert.equal(code, 0);
    assert.ok(took < 1000 + 5000 + 5000, `exited ${took} ms after SIGTERM`);
    const closes = clients.map((s) => s.closedAt - signalled).sort((x, y) => x - y);
    const spread = closes.at(-1) - closes[0];
    const perSecond = new Map();
    for (const at of closes) perSecond.set(Math.floor(at / 1000), (perSecond.get(Math.floor(at / 1000)) ?? 0) + 1);
    const busiest = Math.max(...perSecond.values());
    t.diagnostic(`closed from ${closes[0]} to ${closes.at(-1)} ms after SIGTERM (spread ${spread} ms), at most ${busiest} in one second; exit after ${took} ms`);
    assert.ok(closes[0] >= 900, 'nothing closed before the delay');
    assert.ok(spread >= 4000 && spread <= 6000, `closes spread over ${spread} ms`);
    assert.ok(busiest <= 500 / 3, `${busiest} closed in one second`);

    await until(() => library.socket.connected, 5000, 'the library reconnected by itself');
    library.subscribe(room); // a session of its own, without a cookie: its rooms are its own to ask for again
    await sleep(300);
    await publish(b, room, { n: 'after' });
    await until(() => fromLibrary.includes('after'), 5000, 'the library receives on the other node');
    const numbered = () => fromPython.filter((l) => Number.isInteger(l.message?.n)).map((l) => l.message.n);
    await until(() => numbered().length >= count, 10000, 'python got everything');
    const pythonNs = [...new Set(numbered())].sort((x, y) => x - y);
    assert.deepEqual(pythonNs, [...Array(count).keys()]);
    assert.ok(fromPython.filter((l) => l.connected).length >= 2, 'python reconnected by itself');
  } finally {
    for (const s of clients) s.close();
    library?.disconnect();
    python?.kill();
    await a.stop('SIGKILL');
    await b?.stop('SIGKILL');
    await proxy.stop();
    await redis.stop();
  }
});
