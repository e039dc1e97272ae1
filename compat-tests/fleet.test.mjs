// An elastic fleet on one real Redis: no sticky sessions (nginx round robin, each request to the
// next node), capacity, the fleet view, and rebalancing when a node is added. Each test's nodes
// use a Redis prefix of their own, so each is a fleet of its own.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import { startTwine } from '../js-fixtures/server.mjs';
import { startNginx, startRedis } from '../js-fixtures/services.mjs';
import { launchBrowser } from '../js-fixtures/browser.mjs';
import { connect, fetchCookie, io, publish, sleep, until } from '../js-fixtures/clients.mjs';

const fixtures = new URL('../js-fixtures', import.meta.url).pathname;
const artifacts = new URL('./artifacts/', import.meta.url).pathname;
const requireFixture = createRequire(new URL('../js-fixtures/package.json', import.meta.url));
const load = async (name) => (await import(requireFixture.resolve(name))).default;

let redis;
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis?.stop();
});

let fleets = 0;
/** `count` nodes of a new fleet (a Redis prefix of its own). */
async function startFleet(count, args = []) {
  const prefix = `fleet${++fleets}`;
  const nodes = [];
  const add = async () => {
    const node = await startTwine({ args: ['--redis-url', redis.url, '--redis-prefix', prefix, ...args] });
    nodes.push(node);
    return node;
  };
  for (let i = 0; i < count; i++) await add();
  return { nodes, add, stop: () => Promise.all(nodes.map((n) => n.stop())) };
}

async function fleetOf(node) {
  const res = await fetch(`${node.url}/api/fleet`, { headers: { Authorization: node.apiKey } });
  assert.equal(res.status, 200);
  return res.json();
}

async function metric(node, name) {
  const text = await (await fetch(`${node.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : undefined;
}

/** Waits until every node lists `count` nodes. */
async function untilSeen(nodes, count) {
  const deadline = Date.now() + 10000;
  for (;;) {
    const views = await Promise.all(nodes.map(fleetOf));
    if (views.every((v) => v.nodes.length === count)) return views;
    if (Date.now() > deadline) throw new Error(`fleet views: ${JSON.stringify(views.map((v) => v.nodes.length))}`);
    await sleep(200);
  }
}

test('behind nginx round robin with no stickiness, polling-first clients connect, upgrade and get every message', async () => {
  const fleet = await startFleet(2, ['--rebalance', 'off']);
  const proxy = await startNginx(fleet.nodes.map((n) => n.port), { config: 'twine-round-robin.conf', serverOptions: 'max_fails=0' });
  const sockets = [];
  let library;
  try {
    await untilSeen(fleet.nodes, 2);
    for (let i = 0; i < 10; i++) {
      const socket = io(proxy.url, { forceNew: true, reconnection: false });
      socket.got = [];
      socket.on('message', (m) => socket.got.push(m.n));
      let upgraded = false;
      socket.io.on('open', () => {
        assert.equal(socket.io.engine.transport.name, 'polling');
        socket.io.engine.on('upgrade', () => (upgraded = true));
      });
      await until(() => socket.connected && upgraded, 5000, `session ${i} connected and upgraded`);
      socket.emit('subscribe', 'round-robin');
      await new Promise((r) => socket.once('roomJoined', r));
      sockets.push(socket);
    }
    const TwineClientLibrary = await load('twine-client-library');
    const received = [];
    library = new TwineClientLibrary(proxy.url);
    library.listenOn('round-robin', (payload) => received.push(payload.n));
    await until(() => library.socket?.connected, 5000, 'the library connects');
    const joined = new Promise((r) => library.socket.once('roomJoined', r));
    // listenOn attaches its handler on a 100 ms timer once the socket exists.
    await until(() => library.socket.listeners('message').length > 0, 3000, 'listenOn attached');
    library.subscribe('round-robin');
    await joined;

    const via = { url: proxy.url, apiKey: fleet.nodes[0].apiKey };
    for (let n = 0; n < 20; n++) assert.equal((await publish(via, 'round-robin', { n })).status, 201);
    const all = [...Array(20).keys()];
    await until(() => sockets.every((s) => s.got.length >= 20) && received.length >= 20, 5000, 'every message everywhere').catch((e) => {
      throw new Error(`${e.message}: sockets ${sockets.map((s) => s.got.length)}, library ${received.length}`);
    });
    await sleep(200);
    for (const s of sockets) assert.deepEqual(s.got, all, 'once each, in order');
    assert.deepEqual(received, all, 'the library got them once each, in order');
    // Round robin sent requests of one session to both nodes: some were forwarded.
    const forwarded = await Promise.all(fleet.nodes.map((n) => metric(n, 'twine_forwarded_requests_total')));
    assert.ok(forwarded.reduce((a, b) => a + b, 0) > 0, `forwarded: ${forwarded}`);
  } finally {
    for (const s of sockets) s.close();
    library?.disconnect();
    await proxy.stop();
    await fleet.stop();
  }
});

test('in Chromium, the library on a page behind round robin connects over polling, upgrades and shows every message', async () => {
  const fleet = await startFleet(2, ['--rebalance', 'off', '--demo', '--demo-dir', fixtures]);
  const proxy = await startNginx(fleet.nodes.map((n) => n.port), { config: 'twine-round-robin.conf', serverOptions: 'max_fails=0' });
  const browser = await launchBrowser();
  try {
    await untilSeen(fleet.nodes, 2);
    const context = await browser.newContext();
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${proxy.url}/demo/?room=browser-rr`);
    await page.waitForSelector('#status[data-state="live"]', { timeout: 10000 });
    const transports = await page.evaluate(async () => {
      const { io } = await import('./vendor/socket.io-client/socket.io.esm.min.js');
      const seen = [];
      for (let i = 0; i < 5; i++) {
        const socket = io(location.origin, { withCredentials: true, forceNew: true, reconnection: false });
        const names = [];
        socket.io.on('open', () => {
          names.push(socket.io.engine.transport.name);
          socket.io.engine.on('upgrade', (t) => names.push(t.name));
        });
        for (let t = 0; t < 100 && names.length < 2; t++) await new Promise((r) => setTimeout(r, 50));
        socket.close();
        seen.push(names.join('>'));
      }
      return seen;
    });
    assert.deepEqual(transports, Array(5).fill('polling>websocket'));
    const via = { url: proxy.url, apiKey: fleet.nodes[0].apiKey };
    for (let n = 0; n < 10; n++) assert.equal((await publish(via, 'browser-rr', { n })).status, 201);
    await page.waitForFunction(() => document.querySelectorAll('li.message').length >= 10, null, { timeout: 5000 });
    const shown = await page.$$eval('li.message', (items) => items.map((li) => Number(li.dataset.n)));
    assert.deepEqual(shown, [...Array(10).keys()]);
    assert.deepEqual(errors, []);
    mkdirSync(artifacts, { recursive: true });
    await page.screenshot({ path: `${artifacts}/fleet-round-robin.png` });
    await context.close();
  } finally {
    await browser.close();
    await proxy.stop();
    await fleet.stop();
  }
});

test('a node at --max-sockets answers /ready 503 and refuses handshakes until it is 5 % under', async () => {
  const node = await startTwine({ args: ['--max-sockets', '40'] });
  const sockets = [];
  try {
    for (let i = 0; i < 40; i++) sockets.push(await connect(node.url));
    const ready = async () => (await fetch(`${node.url}/ready`)).status;
    assert.equal(await ready(), 503);
    const handshake = await fetch(`${node.url}/socket.io/?EIO=4&transport=polling`);
    assert.equal(handshake.status, 503);
    assert.equal(handshake.headers.get('retry-after'), '1');
    await assert.rejects(connect(node.url), 'a client is refused');
    assert.equal(sockets.filter((s) => s.connected).length, 40, 'the sockets held stay');
    sockets.pop().close();
    await sleep(300);
    assert.equal(await ready(), 503, '39 of 40: still closed, no flapping at the edge');
    sockets.pop().close();
    await sleep(300);
    assert.equal(await ready(), 200, '38 of 40: open again');
    sockets.push(await connect(node.url));
    const limits = await (await fetch(`${node.url}/metrics`)).text();
    assert.match(limits, /twine_limits_reached_total\{limit="max_sockets"\} [1-9]/);
  } finally {
    for (const s of sockets) s.close();
    await node.stop();
  }
});

test('/api/fleet lists exactly the live nodes, needs the API key, and drops a SIGKILLed node within 5 s', async () => {
  const fleet = await startFleet(3, ['--rebalance', 'on', '--max-sockets', '1000']);
  try {
    const views = await untilSeen(fleet.nodes, 3);
    const ids = views.map((v) => v.this).sort();
    for (const view of views) {
      assert.deepEqual(view.nodes.map((n) => n.id).sort(), ids);
      assert.equal(view.totals.nodes, 3);
      assert.equal(view.totals.capacity, 3000);
      for (const n of view.nodes) {
        assert.match(n.address, /^127\.0\.0\.1:\d+$/);
        assert.equal(n.capacity, 1000);
        assert.equal(n.draining, false);
        assert.ok(n.startedAt > Date.now() - 120000 && n.version);
      }
    }
    const ports = views[0].nodes.map((n) => Number(n.address.split(':')[1])).sort();
    assert.deepEqual(ports, fleet.nodes.map((n) => n.port).sort(), 'each announces where it listens');
    assert.equal((await fetch(`${fleet.nodes[0].url}/api/fleet`)).status, 401);
    assert.equal(await metric(fleet.nodes[0], 'twine_fleet_nodes'), 3);

    const killed = fleet.nodes[2];
    const killedId = views[2].this;
    await killed.stop('SIGKILL');
    const started = Date.now();
    let gone = false;
    while (!gone && Date.now() - started < 5000) {
      const seen = await Promise.all(fleet.nodes.slice(0, 2).map(fleetOf));
      gone = seen.every((v) => v.nodes.length === 2 && !v.nodes.some((n) => n.id === killedId));
      if (!gone) await sleep(100);
    }
    assert.ok(gone, 'dropped within 5 s');
  } finally {
    await fleet.stop();
  }
});

test('forwarding follows only the fleet: a forged signature is refused and an unknown node is no address', async () => {
  const fleet = await startFleet(2, ['--rebalance', 'off']);
  try {
    const [a, b] = fleet.nodes;
    await untilSeen(fleet.nodes, 2);
    const open = await (await fetch(`${a.url}/socket.io/?EIO=4&transport=polling`)).text();
    const sid = JSON.parse(open.slice(1)).sid;
    const [, node] = sid.split('.');
    assert.equal(node, (await fleetOf(a)).this, 'the session id names the node holding it');
    // From the other node, the session's requests reach it.
    const poll = await fetch(`${b.url}/socket.io/?EIO=4&transport=polling&sid=${sid}`, {
      method: 'POST',
      body: '40',
      headers: { 'Content-Type': 'text/plain;charset=UTF-8' },
    });
    assert.equal(poll.status, 200);
    assert.equal(await poll.text(), 'ok');
    const reply = await fetch(`${b.url}/socket.io/?EIO=4&transport=polling&sid=${sid}`);
    assert.match(await reply.text(), /40\{"sid":/);
    // A client naming a node the fleet does not have gets "session unknown", not a forward.
    const unknown = await fetch(`${b.url}/socket.io/?EIO=4&transport=polling&sid=${sid.split('.')[0]}.127.0.0.1:6379`);
    assert.equal(unknown.status, 400);
    // A client claiming to be a forwarding node is refused.
    const forged = await fetch(`${a.url}/socket.io/?EIO=4&transport=polling&sid=${sid}`, {
      headers: { 'twine-forwarded': `${node}:${'0'.repeat(64)}` },
    });
    assert.equal(forged.status, 403);
  } finally {
    await fleet.stop();
  }
});

test('600 clients on two nodes, a third added: within 30 s each holds 200 ± 15 %, every message once and in order, no client moved twice', async () => {
  const fleet = await startFleet(2, ['--rebalance', 'on', '--rebalance-rate', '50']);
  const proxy = await startNginx(fleet.nodes.map((n) => n.port), { config: 'twine-round-robin.conf', serverOptions: 'max_fails=0' });
  const clients = [];
  const rooms = Array.from({ length: 10 }, (_, i) => `scale-${i}`);
  const published = new Map(rooms.map((r) => [r, []]));
  let publishing = true;
  let publisher;
  try {
    await untilSeen(fleet.nodes, 2);
    // Connected concurrently, so round robin spreads the handshakes.
    const connectOne = async (i) => {
      const cookie = await fetchCookie(proxy.url);
      const socket = await connect(proxy.url, {
        cookie,
        reconnection: true,
        options: { reconnectionDelay: 300, reconnectionDelayMax: 2000 },
      });
      socket.room = rooms[i % rooms.length];
      socket.moves = 0;
      socket.on('disconnect', () => socket.moves++);
      socket.emit('subscribe', socket.room);
      await until(() => socket.events.some((e) => e.event === 'roomJoined'), 10000, `client ${i} joined`);
      return socket;
    };
    for (let i = 0; i < 600; i += 50) {
      clients.push(...(await Promise.all(Array.from({ length: 50 }, (_, j) => connectOne(i + j)))));
    }
    // The two nodes settle first (rebalancing on: an uneven start evens out).
    const settled = Date.now() + 20000;
    for (;;) {
      const view = await fleetOf(fleet.nodes[0]);
      if (view.totals.sockets === 600 && view.nodes.every((n) => Math.abs(n.sockets - 300) <= 45)) break;
      if (Date.now() > settled) throw new Error(`two nodes did not settle: ${JSON.stringify(view.nodes.map((n) => n.sockets))}`);
      await sleep(250);
    }
    await sleep(1500);
    for (const c of clients) c.moves = 0;

    const via = { url: proxy.url, apiKey: fleet.nodes[0].apiKey };
    publisher = (async () => {
      let n = 0;
      while (publishing) {
        const room = rooms[n % rooms.length];
        const res = await publish(via, room, { n });
        if (res.status === 201) published.get(room).push(n);
        n++;
        await sleep(50);
      }
    })();
    await sleep(1000);

    const added = Date.now();
    const third = await fleet.add();
    await proxy.reload([...fleet.nodes.map((n) => n.port)]);
    let spread;
    for (;;) {
      const view = await fleetOf(third);
      spread = view.nodes.map((n) => n.sockets);
      if (view.nodes.length === 3 && view.totals.sockets === 600 && spread.every((s) => s >= 170 && s <= 230)) break;
      if (Date.now() - added > 30000) throw new Error(`not even within 30 s: ${JSON.stringify(spread)}`);
      await sleep(250);
    }
    const seconds = (Date.now() - added) / 1000;
    await sleep(3000);
    publishing = false;
    await publisher;
    await until(
      () => clients.every((c) => c.messages.length >= published.get(c.room).length),
      20000,
      'every client has every message of its room',
    );
    await sleep(300);
    for (const c of clients) {
      const got = c.messages.map((m) => m.n);
      assert.deepEqual(got, published.get(c.room), 'once each, in order');
    }
    const movedTwice = clients.filter((c) => c.moves > 1).length;
    const moved = clients.filter((c) => c.moves === 1).length;
    assert.equal(movedTwice, 0, 'no client moved twice');
    assert.ok(moved >= 170, `about a third moved: ${moved}`);
    const counted = (await Promise.all(fleet.nodes.map((n) => metric(n, 'twine_rebalance_moved_total')))).reduce((a, b) => a + b, 0);
    assert.ok(counted >= moved, `moves counted: ${counted}`);
    console.log(`# even after ${seconds.toFixed(1)} s: ${JSON.stringify(spread)}, ${moved} clients moved once`);
  } finally {
    publishing = false;
    await publisher;
    for (const c of clients) c.close();
    await proxy.stop();
    await fleet.stop();
  }
});
