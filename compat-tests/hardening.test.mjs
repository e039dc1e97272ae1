// What one hostile or clumsy client, with no API key, can make the server hold: each attack of
// the hardening issue at a size that runs in seconds, against the release binary, asserting the
// bound (resident memory read from /proc, CPU after the client left, other clients' latency) and
// that a fresh client can still subscribe and receive.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startTwine, runTwine } from '../js-fixtures/server.mjs';
import { connect, fetchCookie, publish, subscribe, until, sleep } from '../js-fixtures/clients.mjs';
import { connectRaw, pollingSession, closed, crowd, rssMB, cpuSeconds } from '../js-fixtures/raw.mjs';

const pad = (bytes) => 'x'.repeat(bytes);

/** Samples `pid`'s resident memory every 20 ms until stopped; `peak()` is the largest seen. */
function watchMemory(pid) {
  let peak = rssMB(pid);
  const timer = setInterval(() => {
    try {
      peak = Math.max(peak, rssMB(pid));
    } catch {
      // the process ended
    }
  }, 20);
  return { peak: () => peak, stop: () => clearInterval(timer) };
}

/**
 * POSTs `chunks` over a plain TCP connection, with a Content-Length of `length` or chunked, and
 * resolves to the response's status, read even if the server answers before the body is sent.
 */
function postRaw(server, path, chunks, { length } = {}) {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port: server.port, host: '127.0.0.1' });
    let head = '';
    socket.on('data', (data) => {
      head += data;
      const status = head.match(/^HTTP\/1\.1 (\d{3})/);
      if (status) {
        resolve(Number(status[1]));
        socket.destroy();
      }
    });
    socket.on('error', () => {}); // writes after an early answer may fail
    socket.on('close', () => reject(new Error(`closed without a response: ${head}`)));
    const framing = length === undefined ? 'Transfer-Encoding: chunked' : `Content-Length: ${length}`;
    socket.write(`POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n${framing}\r\n\r\n`);
    for (const chunk of chunks) {
      socket.write(length === undefined ? `${chunk.length.toString(16)}\r\n${chunk}\r\n` : chunk);
    }
    if (length === undefined) socket.write('0\r\n\r\n');
  });
}

/** A fresh client can still subscribe and receive. */
async function stillServes(server, room = 'fresh') {
  const socket = await connect(server.url);
  try {
    await subscribe(socket, room);
    assert.equal((await publish(server, room, { fresh: true })).status, 201);
    await until(() => socket.messages.length === 1, 5000, 'a fresh client is served');
  } finally {
    socket.close();
  }
}

test('1: a client that stops reading is cut at its send queue, though it answers pings; memory stays bounded', async () => {
  const server = await startTwine({
    args: ['--ping-interval', '1s', '--ping-timeout', '1s', '--history-memory', '32MiB'],
  });
  try {
    const stalled = await connectRaw(server);
    stalled.sendEvent('subscribe', 'big');
    await until(() => stalled.events.length === 1, 3000, 'roomJoined');
    stalled._socket.pause(); // reads nothing more
    const ponger = setInterval(() => stalled.pong(), 300); // but answers pings it never read
    const reader = await connect(server.url);
    await subscribe(reader, 'big');
    const memory = watchMemory(server.proc.pid);
    const count = 300;
    for (let n = 0; n < count; n++) assert.equal((await publish(server, 'big', { n, pad: pad(900_000) })).status, 201);
    await until(() => reader.messages.length === count, 30000, 'the reading client gets all');
    memory.stop();
    clearInterval(ponger);
    // 300 × 900 KB were published; the stalled client may hold its 4 MiB send queue.
    assert.ok(memory.peak() < 160, `peak RSS ${memory.peak().toFixed(0)} MB`);
    assert.match(server.logs(), /cutting a client: over its send queue/);
    stalled._socket.resume();
    await Promise.race([closed(stalled), sleep(5000).then(() => assert.fail('the stalled client was not closed'))]);
    reader.close();
    await stillServes(server);
  } finally {
    await server.stop();
  }
});

test('2: sessions reconnecting to a large backlog are replayed page by page; memory stays bounded', async () => {
  const server = await startTwine({ args: ['--history-memory', '512MiB'] });
  try {
    const room = 'backlog';
    const cookies = [];
    for (let i = 0; i < 4; i++) {
      const cookie = await fetchCookie(server.url);
      const s = await connect(server.url, { cookie });
      await subscribe(s, room);
      s.close();
      cookies.push(cookie);
    }
    const count = 150;
    for (let n = 0; n < count; n++) await publish(server, room, { n, pad: pad(900_000) });
    const before = rssMB(server.proc.pid);
    const memory = watchMemory(server.proc.pid);
    const sockets = await Promise.all(cookies.map((cookie) => connect(server.url, { cookie })));
    await until(() => sockets.every((s) => s.messages.length === count), 60000, 'every replay');
    memory.stop();
    for (const s of sockets) {
      assert.deepEqual(s.messages.map((m) => m.n), [...Array(count).keys()]);
      s.close();
    }
    // Four replays of 135 MB each; each may hold one replay page and its send queue.
    const grew = memory.peak() - before;
    assert.ok(grew < 100, `RSS grew ${grew.toFixed(0)} MB during the replays (from ${before.toFixed(0)})`);
  } finally {
    await server.stop();
  }
});

test('3: a flood of 100,000 subscribes per socket is cut to the event rate and stops when the client leaves', async (t) => {
  const server = await startTwine();
  try {
    const healthy = await connect(server.url);
    await subscribe(healthy, 'pulse');
    let seq = 0;
    const pulse = setInterval(() => publish(server, 'pulse', { seq: seq++, sent: Date.now() }), 50);
    const flooders = await Promise.all([0, 1].map(() => connectRaw(server)));
    for (const f of flooders) for (let i = 0; i < 100_000; i++) f.sendEvent('subscribe', `flood-${i}`);
    await sleep(500);
    for (const f of flooders) f.close();
    await Promise.all(flooders.map(closed));
    await sleep(1000);
    const cpuStart = cpuSeconds(server.proc.pid);
    await sleep(1000);
    const cpu = cpuSeconds(server.proc.pid) - cpuStart;
    clearInterval(pulse);
    await sleep(200);
    const latencies = healthy.messages.map((m, i) => healthy.arrivals[i] - m.sent).sort((a, b) => a - b);
    const p99 = latencies[Math.floor(latencies.length * 0.99)];
    t.diagnostic(`CPU in the 2nd second after the flooders left: ${(cpu * 100).toFixed(0)}%; healthy p99 ${p99} ms`);
    assert.ok(cpu < 0.1, `the server still works for them: ${cpu} CPU-seconds`);
    assert.ok(p99 < 250, `healthy client p99 ${p99} ms`);
    assert.ok(
      flooders.every((f) => f.events.some(([event, data]) => event === 'error' && /faster than this server accepts/.test(data.message))),
      'the flooders were told',
    );
    const joined = flooders.map((f) => f.events.filter(([event]) => event === 'roomJoined').length);
    assert.ok(joined.every((n) => n <= 1000), `at most --max-rooms joined: ${joined}`);
    healthy.close();
    await stillServes(server);
  } finally {
    await server.stop();
  }
});

test('4: published history stays within --history-memory, oldest first, and a reconnecting client is told', async () => {
  const server = await startTwine({ args: ['--history-memory', '64MiB'] });
  try {
    const cookie = await fetchCookie(server.url);
    const away = await connect(server.url, { cookie });
    await subscribe(away, 'flood');
    away.close();
    await sleep(100);
    const memory = watchMemory(server.proc.pid);
    const count = 200;
    for (let n = 0; n < count; n++) {
      assert.equal((await publish(server, n % 4 === 0 ? `other-${n}` : 'flood', { n, pad: pad(900_000) })).status, 201);
    }
    memory.stop();
    assert.ok(memory.peak() < 150, `peak RSS ${memory.peak().toFixed(0)} MB after 180 MB published`);
    const back = await connect(server.url, { cookie });
    await until(() => back.events.some((e) => e.event === 'recoveryTruncated'), 5000, 'recoveryTruncated');
    await until(() => back.messages.length > 0 && back.messages.at(-1).n === count - 1, 10000, 'the newest replayed');
    const truncated = back.events.find((e) => e.event === 'recoveryTruncated').data;
    assert.equal(truncated.room, 'flood');
    assert.equal(truncated.until, back.messages[0].timestamp);
    const ns = back.messages.map((m) => m.n);
    assert.deepEqual(ns, [...ns].sort((a, b) => a - b), 'in order');
    assert.ok(ns.length < 80, `only what fits in 64 MiB was kept (${ns.length})`);
    back.close();
    await stillServes(server);
  } finally {
    await server.stop();
  }
});

test('5: WebSocket frames and long-polling POSTs over --max-payload end their session and are never buffered whole', async () => {
  const server = await startTwine();
  try {
    const polling = await pollingSession(server).open();
    assert.equal(polling.handshake.maxPayload, 1_000_000);
    const path = (sid) => `/socket.io/?EIO=4&transport=polling&sid=${sid}`;
    const body = `42${JSON.stringify(['subscribe', pad(1_100_000)])}`;
    assert.equal(await postRaw(server, path(polling.sid), [body], { length: body.length }), 413);
    assert.equal((await fetch(`${server.url}${path(polling.sid)}`)).status, 400, 'the session ended');
    const unsized = await pollingSession(server).open();
    // Without a length the body is cut at the bound; its answer may be lost to the reset.
    await postRaw(server, path(unsized.sid), [pad(600_000), pad(600_000)]).catch(() => {});
    assert.equal((await fetch(`${server.url}${path(unsized.sid)}`)).status, 400, 'the session ended');
    const one = await connectRaw(server);
    one.send(`42${JSON.stringify(['subscribe', pad(1_100_000)])}`);
    await Promise.race([closed(one), sleep(3000).then(() => assert.fail('a 1.1 MB frame was accepted'))]);
    const memory = watchMemory(server.proc.pid);
    const big = pad(15_000_000);
    const many = await Promise.all(Array.from({ length: 40 }, () => connectRaw(server)));
    for (const ws of many) {
      ws.on('error', () => {});
      ws.send(big);
    }
    await Promise.race([Promise.all(many.map(closed)), sleep(10000).then(() => assert.fail('not all closed'))]);
    memory.stop();
    assert.ok(memory.peak() < 100, `peak RSS ${memory.peak().toFixed(0)} MB while 40 clients sent 15 MB frames`);
    await stillServes(server);
  } finally {
    await server.stop();
  }
});

test('6: invented cookies with many rooms each: rooms are bounded per session, sessions in total', async () => {
  const server = await startTwine({
    args: ['--max-rooms', '200', '--session-memory', '4MiB', '--event-burst', '5000'],
  });
  try {
    const cookieOf = (i) => `twineid=invented-${String(i).padStart(6, '0')}`;
    for (let i = 0; i < 100; i++) {
      const ws = await connectRaw(server, { cookie: cookieOf(i) });
      for (let r = 0; r <= 200; r++) ws.sendEvent('subscribe', `${String(r).padStart(4, '0')}-${pad(245)}`);
      await until(() => ws.events.length === 201, 10000, 'every reply');
      assert.equal(ws.events.filter(([event]) => event === 'error').length, 1, 'the 201st room is refused');
      ws.close();
    }
    const rss = rssMB(server.proc.pid);
    assert.ok(rss < 80, `RSS ${rss.toFixed(0)} MB after 100 sessions of 200 long rooms`);
    const oldest = await connectRaw(server, { cookie: cookieOf(0) });
    const newest = await connectRaw(server, { cookie: cookieOf(99) });
    await until(() => newest.events.length === 200, 5000, 'the newest session is kept');
    await sleep(300);
    assert.equal(oldest.events.length, 0, 'the least recently active session went first');
    oldest.close();
    newest.close();
    await stillServes(server);
  } finally {
    await server.stop();
  }
});

/** A raw TCP connection to `server` from `localAddress`; resolves once connected. */
function tcp(server, localAddress = '127.0.0.1') {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port: server.port, host: '127.0.0.1', localAddress });
    socket.on('connect', () => resolve(socket));
    socket.on('error', reject);
    socket.received = '';
    socket.on('data', (d) => (socket.received += d));
  });
}

const ended = (socket) => new Promise((resolve) => (socket.destroyed ? resolve() : socket.once('close', resolve)));

test('7: slow headers, endless bodies and idle connections are closed; connections are capped per address and in total', async () => {
  const server = await startTwine({
    args: ['--header-timeout', '1s', '--body-timeout', '1s', '--max-connections-per-ip', '40', '--max-connections', '70'],
  });
  try {
    const started = Date.now();
    const slow = [];
    for (let i = 0; i < 10; i++) {
      const headers = await tcp(server, '127.0.0.2');
      headers.write('GET / HTTP/1.1\r\nHost: x\r\n');
      const drip = setInterval(() => headers.writable && headers.write('X-Slow: y\r\n'), 200);
      headers.once('close', () => clearInterval(drip));
      const body = await tcp(server, '127.0.0.3');
      body.write('POST /api/twine HTTP/1.1\r\nHost: x\r\nAuthorization: test-key\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n');
      const trickle = setInterval(() => body.writable && body.write('1\r\n \r\n'), 200);
      body.once('close', () => clearInterval(trickle));
      slow.push(headers, body, await tcp(server, '127.0.0.4'));
    }
    await Promise.race([Promise.all(slow.map(ended)), sleep(5000).then(() => assert.fail('slow connections still open'))]);
    assert.ok(Date.now() - started < 4000, 'closed by the 1 s timeouts');
    assert.ok(slow.filter((s, i) => i % 3 === 1).every((s) => s.received.startsWith('HTTP/1.1 408')), 'endless bodies get 408');

    // WebSockets are not subject to the header timeout: they hold their places.
    const fromOne = await Promise.all(Array.from({ length: 40 }, () => connectRaw(server, { localAddress: '127.0.0.5' })));
    const refused = await tcp(server, '127.0.0.5');
    await ended(refused);
    assert.match(refused.received, /^HTTP\/1.1 429 /, 'the 41st from one address');
    const fromTwo = await Promise.all(Array.from({ length: 30 }, () => connectRaw(server, { localAddress: '127.0.0.6' })));
    const full = await tcp(server, '127.0.0.7');
    await ended(full);
    assert.match(full.received, /^HTTP\/1.1 503 /, 'the 71st in total');
    for (const ws of [...fromOne.slice(0, 5), ...fromTwo]) ws.close();
    await Promise.all(fromTwo.map(closed));
    await sleep(100);
    await stillServes(server);
    for (const ws of fromOne) ws.close();
  } finally {
    await server.stop();
  }
});

test('9: with an allow-list, WebSocket and polling handshakes from other origins are refused', async () => {
  const server = await startTwine({ args: ['--cors-origins', 'https://app.example'] });
  try {
    await assert.rejects(connectRaw(server, { headers: { Origin: 'https://evil.example' } }), /answered 403/);
    const polling = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling`, { headers: { Origin: 'https://evil.example' } });
    assert.equal(polling.status, 403);
    const allowed = await connectRaw(server, { headers: { Origin: 'https://app.example' } });
    allowed.close();
  } finally {
    await server.stop();
  }
});

test('10: a blank or malformed origin list stops the server at start; no list warns', async () => {
  for (const value of [' ', ',', 'app.example', '*']) {
    const { code, output } = await runTwine(['--port', '0'], { TWINE_CORS_ORIGINS: value });
    assert.notEqual(code, 0, `TWINE_CORS_ORIGINS=${JSON.stringify(value)} was accepted`);
    assert.match(output, /cors-origins/i);
  }
  const open = await startTwine();
  try {
    assert.match(open.logs(), /no --cors-origins set: a page on any origin may connect/);
  } finally {
    await open.stop();
  }
});

test('11: payloads nested as deep as Node accepts are published and delivered intact', async () => {
  const server = await startTwine();
  try {
    const socket = await connect(server.url);
    await subscribe(socket, 'deep');
    for (const depth of [127, 128, 5000]) {
      // Written out by hand: JSON.stringify itself recurses.
      const nested = `${'{"d":'.repeat(depth)}{"leaf":${depth}}${'}'.repeat(depth)}`;
      const body = `{"room_id":"deep","payload":{"depth":${depth},"nested":${nested}}}`;
      const res = await publish(server, null, null, { body });
      assert.equal(res.status, 201, `${depth} levels: ${await res.text()}`);
    }
    await until(() => socket.messages.length === 3, 5000, 'all three');
    assert.deepEqual(socket.messages.map((m) => m.depth), [127, 128, 5000]);
    let inner = socket.messages[2].nested;
    while (inner.d) inner = inner.d;
    assert.equal(inner.leaf, 5000);
    socket.close();
  } finally {
    await server.stop();
  }
});

test('12: the variables Kubernetes injects for a Service named twine do not stop the server', async () => {
  const server = await startTwine({
    env: {
      TWINE_PORT: 'tcp://10.96.0.7:3005',
      TWINE_PORT_3005_TCP: 'tcp://10.96.0.7:3005',
      TWINE_PORT_3005_TCP_PROTO: 'tcp',
      TWINE_PORT_3005_TCP_PORT: '3005',
      TWINE_PORT_3005_TCP_ADDR: '10.96.0.7',
      TWINE_SERVICE_HOST: '10.96.0.7',
      TWINE_SERVICE_PORT: '3005',
    },
  });
  try {
    await stillServes(server);
  } finally {
    await server.stop();
  }
  const { code, output } = await runTwine(['--port', '0'], { TWINE_API_KEYS: 'typo' });
  assert.notEqual(code, 0);
  assert.match(output, /TWINE_API_KEYS/, 'a misspelt setting still stops it');
});

/**
 * A client in a room of its own, sent a message every 50 ms: `p99()` is its publish → delivery
 * latency while something else goes on; `stop()` ends it.
 */
async function latencyProbe(server) {
  const socket = await connect(server.url);
  await subscribe(socket, 'pulse');
  let seq = 0;
  const timer = setInterval(() => publish(server, 'pulse', { seq: seq++, sent: Date.now() }), 50);
  return {
    p99() {
      const latencies = socket.messages.map((m, i) => socket.arrivals[i] - m.sent).sort((a, b) => a - b);
      return latencies[Math.floor(latencies.length * 0.99)] ?? 0;
    },
    stop() {
      clearInterval(timer);
      socket.close();
    },
  };
}

/** CPU seconds `pid` used over the next `ms`. */
async function cpuOver(pid, ms) {
  const start = cpuSeconds(pid);
  await sleep(ms);
  return cpuSeconds(pid) - start;
}

test('13: one member flooding presence updates into a room of 2,000 costs the room one batch a second; memory and CPU settle', async (t) => {
  const server = await startTwine();
  let members = [];
  try {
    members = await crowd(server, 'crowd', 2000);
    const probe = await latencyProbe(server);
    await sleep(1000);
    const before = rssMB(server.proc.pid);
    const memory = watchMemory(server.proc.pid);
    const attacker = await connectRaw(server);
    attacker.sendEvent('subscribe', 'crowd');
    await until(() => attacker.events.some(([event]) => event === 'roomJoined'), 3000, 'joined');
    attacker.sendEvent('presence:enter', { room: 'crowd', data: { pad: pad(900) } });
    const started = Date.now();
    let sent = 0;
    while (Date.now() - started < 10000) {
      for (let i = 0; i < 50; i++) attacker.sendEvent('presence:update', { room: 'crowd', data: { n: sent++, pad: pad(900) } });
      await sleep(5);
    }
    attacker.close();
    await closed(attacker);
    await sleep(2000);
    const cpu = await cpuOver(server.proc.pid, 1000);
    memory.stop();
    const after = rssMB(server.proc.pid);
    const p99 = probe.p99();
    probe.stop();
    const perMember = Math.max(...members.map((m) => m.presence));
    t.diagnostic(
      `${sent} updates offered in 10 s; RSS ${before.toFixed(0)} → peak ${memory.peak().toFixed(0)} → ${after.toFixed(0)} MB; ` +
        `CPU in the 3rd second after ${(cpu * 100).toFixed(0)}%; most presence events to one member ${perMember}; other room p99 ${p99} ms`,
    );
    assert.ok(perMember <= 14, `a member got ${perMember} presence events in about 11 s`);
    assert.ok(memory.peak() - before < 100, `RSS grew ${(memory.peak() - before).toFixed(0)} MB`);
    assert.ok(after - before < 50, `RSS stayed ${(after - before).toFixed(0)} MB up after the attacker left`);
    assert.ok(cpu < 0.1, `CPU ${cpu} s in a second, 3 s after the attacker left`);
    assert.ok(p99 < 250, `another room's p99 ${p99} ms`);
  } finally {
    for (const m of members) m.close();
    await server.stop();
  }
});

test('14: 500 members entering at once with 990 bytes each: a few batched events per member, not one per entrance', async (t) => {
  const server = await startTwine({ args: ['--presence-interval', '250ms'] });
  let members = [];
  try {
    members = await crowd(server, 'lobby', 500);
    const watcher = members[0];
    watcher.keep = true;
    for (const [i, m] of members.entries()) m.sendEvent('presence:enter', { room: 'lobby', data: { i, pad: pad(990) } });
    const seen = new Set();
    await until(
      () => {
        for (const [event, data] of watcher.events.splice(0)) {
          if (event === 'presence') for (const c of data.changes) if (c.action === 'enter') seen.add(c.member.data.i);
        }
        return seen.size === 500;
      },
      20000,
      'every entrance announced',
    );
    await sleep(500);
    const events = members.map((m) => m.presence);
    const most = Math.max(...events);
    const total = events.reduce((a, b) => a + b, 0);
    t.diagnostic(`presence events: at most ${most} per member, ${total} in all (one per entrance per member would be ${500 * 500})`);
    assert.ok(most <= 20, `a member got ${most} presence events`);
  } finally {
    for (const m of members) m.close();
    await server.stop();
  }
});

test('15: member listings are paged, served from a snapshot and limited per connection', async (t) => {
  const server = await startTwine({ args: ['--presence-interval', '250ms'] });
  let members = [];
  try {
    members = await crowd(server, 'big-room', 999);
    for (const [i, m] of members.entries()) m.sendEvent('presence:enter', { room: 'big-room', data: { i, pad: pad(990) } });
    const attacker = await connectRaw(server);
    attacker.sendEvent('subscribe', 'big-room');
    await sleep(6000); // every entrance written
    let bytes = 0;
    attacker.on('message', (data) => (bytes += data.length));
    const cpuStart = cpuSeconds(server.proc.pid);
    for (let i = 0; i < 1000; i++) attacker.sendEvent('presence:members', { room: 'big-room' });
    await sleep(4000);
    const cpu = cpuSeconds(server.proc.pid) - cpuStart;
    const pages = attacker.events.filter(([event]) => event === 'presence:members');
    t.diagnostic(`1,000 listings asked: ${pages.length} pages, ${(bytes / 1e6).toFixed(1)} MB written, ${cpu.toFixed(2)} CPU-s`);
    assert.ok(pages.length > 0 && pages.length <= 30, `${pages.length} pages`);
    assert.ok(pages.every(([, page]) => page.members.length <= 100), 'pages of at most 100');
    assert.equal(pages[0][1].next, pages[0][1].members.at(-1).id, 'the next page follows the last id');
    assert.ok(bytes < 3e6, `${bytes} bytes written to the asker`);
    assert.ok(
      attacker.events.some(([event, data]) => event === 'error' && /listings are limited/.test(data.message)),
      'told why',
    );
    const second = await new Promise((resolve) => {
      attacker.on('message', (data) => {
        const text = data.toString();
        if (text.startsWith('42["presence:members"')) resolve(JSON.parse(text.slice(2))[1]);
      });
      setTimeout(() => attacker.sendEvent('presence:members', { room: 'big-room', after: pages[0][1].next }), 1000);
    });
    assert.equal(second.members[0].id > pages[0][1].next, true, 'the second page starts after the first');
    attacker.close();
  } finally {
    for (const m of members) m.close();
    await server.stop();
  }
});

test('16: 100,000 abandoned long-polling handshakes from one client are bounded while they wait and expire', async (t) => {
  const server = await startTwine({ args: ['--connect-timeout', '2s'] });
  try {
    await sleep(500);
    const before = rssMB(server.proc.pid);
    const memory = watchMemory(server.proc.pid);
    const statuses = new Map();
    const url = `${server.url}/socket.io/?EIO=4&transport=polling`;
    let next = 0;
    const started = Date.now();
    await Promise.all(
      Array.from({ length: 64 }, async () => {
        while (next < 100_000) {
          next += 1;
          const res = await fetch(url);
          await res.arrayBuffer();
          statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        }
      }),
    );
    const took = Date.now() - started;
    memory.stop();
    const grew = memory.peak() - before;
    t.diagnostic(`100,000 handshakes in ${took} ms: ${JSON.stringify(Object.fromEntries(statuses))}; RSS grew ${grew.toFixed(0)} MB`);
    assert.ok(grew < 100, `RSS grew ${grew.toFixed(0)} MB`);
    assert.ok((statuses.get(429) ?? 0) > 0, 'handshakes over the address bound were refused with 429');
    assert.ok((statuses.get(200) ?? 0) >= 256, 'up to the bound were served');
    await sleep(2500); // the pending sessions expired
    assert.equal((await fetch(url)).status, 200, 'their places came back');
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(metrics, /twine_limits_reached_total\{limit="pending_sessions_per_address"\} [1-9]/);
    await stillServes(server);
  } finally {
    await server.stop();
  }
});

test('17: room names with control characters are refused everywhere', async () => {
  const server = await startTwine();
  try {
    const ws = await connectRaw(server);
    for (const room of ['\u0000', 'a\nb', 'tab\there', '\u007f', '\u0085']) {
      ws.sendEvent('subscribe', room);
      const res = await publish(server, room, { a: 1 });
      assert.equal(res.status, 400, JSON.stringify(room));
      assert.match(await res.text(), /control characters/);
      const path = await fetch(`${server.url}/api/rooms/${encodeURIComponent(room)}/messages`, {
        headers: { Authorization: server.apiKey },
      });
      assert.equal(path.status, 400, `history of ${JSON.stringify(room)}`);
    }
    await until(() => ws.events.length === 5, 3000, 'five refusals');
    for (const [event, data] of ws.events) {
      assert.equal(event, 'error');
      assert.equal(data.event, 'subscribe');
      assert.match(data.message, /control characters/);
    }
    ws.sendEvent('subscribe', 'ünïcode ✓ and spaces');
    await until(() => ws.events.some(([event]) => event === 'roomJoined'), 3000, 'a printable room joins');
    ws.close();
  } finally {
    await server.stop();
  }
});
