// Redis faults at each step of the protocol. Twine nodes reach a real redis-server through
// js-fixtures/faulty-proxy.mjs, which pauses, resets or blackholes the link on command, so each
// test lands a fault at one step: the handshake and session load of reconnecting clients, a
// subscribe, a replay, live delivery, the storing of acknowledgements, a node's drain, a client
// publish and presence. Real stock socket.io-client clients (the Twine flow: a twineid cookie
// from GET /set-cookie, subscribe, acknowledge each message, reconnect by themselves) and the
// published twine-client-library receive while a backend publishes steadily over HTTP.
//
// Each test checks one invariant, the one users rely on: every publish answered 201 reaches
// every client subscribed to its room exactly once and in the room's order (live or after
// recovery), and nothing answered 503 (or otherwise refused) is delivered. A room's order is
// its history (GET /api/rooms/{room}/messages, read once Redis is back), which must itself
// hold every 201 and no refused publish. A failure names the client, the room and the
// messages it missed or got twice, and the state it was left in (its rooms, its error events).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { startTwine } from '../js-fixtures/server.mjs';
import { freePort, startNginx, startRedis } from '../js-fixtures/services.mjs';
import { startFaultyProxy } from '../js-fixtures/faulty-proxy.mjs';
import { connect, fetchCookie, until, sleep } from '../js-fixtures/clients.mjs';

const fixtures = createRequire(new URL('../js-fixtures/package.json', import.meta.url));
const TwineClientLibrary = (await import(fixtures.resolve('twine-client-library'))).default;

// twine-client-library prints these on every connect and join; they would drown the report.
const print = console.log;
console.log = (...args) => {
  const line = args.join(' ');
  if (line === 'Connected to the Twine server' || line.startsWith('You have joined room: ')) return;
  print(...args);
};

/** How long a fault lasts: longer than the node's 2 s Redis response timeout. */
const FAULT_MS = 4000;
/** How long, once Redis is back, every client has to catch up before it counts as a loss. */
const SETTLE_MS = 8000;
/** Publishes a second through HTTP (over three rooms). */
const RATE = 50;

let redis;
let proxy;
before(async () => {
  redis = await startRedis();
  proxy = await startFaultyProxy(redis.port);
});
after(async () => {
  await proxy?.stop();
  await redis?.stop();
});

/**
 * What one test starts, stopped when it ends whatever happens (and the proxy healed): nodes on
 * the proxy, clients, publishers.
 */
function stage(t, step) {
  const cleanups = [];
  const tag = Math.random().toString(36).slice(2, 7);
  t.after(async () => {
    proxy.heal();
    for (const cleanup of cleanups.reverse()) await Promise.resolve().then(cleanup).catch(() => {});
  });
  return {
    step,
    rooms: [0, 1, 2].map((i) => `${step}-${tag}-r${i}`),
    clients: [],
    cleanup: (fn) => cleanups.push(fn),
    /** A node using Redis through the proxy, replaying at once to reconnecting clients. */
    async node(args = []) {
      const node = await startTwine({ args: ['--redis-url', proxy.url, '--replay-grace', '0s', ...args] });
      cleanups.push(() => node.stop('SIGKILL'));
      return node;
    },
  };
}

/** A client as the checks see it, whichever library it uses. */
function tracked(s, name, kind, socket, rooms) {
  const client = {
    name,
    kind,
    socket,
    rooms,
    /** Every message handed to the app: { n, room, timestamp }, in arrival order. */
    received: [],
    /** First roomJoined per room (when the client's subscription took effect). */
    joinedAt: new Map(),
    /** One entry per connection: the rooms it was told it joined and its error events. */
    connections: [{ at: Date.now(), joined: new Set(), errors: [] }],
    took(m) {
      client.received.push({ n: m.n, room: m.room, timestamp: m.timestamp });
    },
  };
  socket.on('connect', () => client.connections.push({ at: Date.now(), joined: new Set(), errors: [] }));
  socket.on('roomJoined', (text) => {
    const room = String(text).replace('You have joined room: ', '');
    client.connections.at(-1).joined.add(room);
    if (!client.joinedAt.has(room)) client.joinedAt.set(room, Date.now());
  });
  socket.on('error', (e) => client.connections.at(-1).errors.push(e));
  s.clients.push(client);
  return client;
}

/**
 * A stock socket.io-client following the Twine flow: a cookie from GET /set-cookie in its
 * handshake, reconnecting by itself, acknowledging each message (after `ackDelay` ms, as an app
 * that takes time to handle it). It does not react to `error` events.
 */
async function stockClient(s, url, name, rooms, { transports, ackDelay = 0 } = {}) {
  const cookie = await fetchCookie(url);
  const socket = await connect(url, {
    cookie,
    transports,
    ack: ackDelay === 0,
    reconnection: true,
    options: { reconnectionDelay: 100, reconnectionDelayMax: 1000 },
  });
  s.cleanup(() => socket.close());
  const client = tracked(s, name, 'socket.io-client', socket, rooms);
  socket.on('message', (m) => client.took(m));
  if (ackDelay > 0) {
    socket.on('message', (m) => setTimeout(() => socket.emit('updateSessionTS', m.timestamp), ackDelay));
  }
  client.subscribe = () => {
    for (const room of rooms) socket.emit('subscribe', room);
  };
  client.reconnect = () => socket.io.engine?.close();
  client.leave = () => socket.disconnect();
  client.back = () => socket.connect();
  return client;
}

/**
 * The published twine-client-library, unchanged, listening on `rooms`. In a browser the page's
 * twineid cookie (set by the library's own GET /set-cookie) goes with every handshake; Node's
 * fetch keeps no cookies, so the test gives the library's socket the cookie a browser would send
 * and connects it again with it.
 */
async function libraryClient(s, url, name, rooms) {
  const cookie = await fetchCookie(url);
  const library = new TwineClientLibrary(url);
  s.cleanup(() => library.disconnect());
  await until(() => library.socket?.connected, 5000, `${name} connected`);
  // Lower-case: with `withCredentials` (as the library sets it) socket.io-client in Node keeps a
  // cookie jar whose `cookie` header, empty here, would replace a `Cookie` one on WebSocket.
  library.socket.io.opts.extraHeaders = { cookie };
  library.socket.disconnect();
  library.socket.connect();
  await until(() => library.socket.connected, 5000, `${name} connected with its cookie`);
  const client = tracked(s, name, 'twine-client-library', library.socket, rooms);
  for (const room of rooms) library.listenOn(room, (payload) => client.took(payload));
  await until(() => library.socket.listeners('message').length === rooms.length, 3000, `${name} listening`);
  client.subscribe = () => {
    for (const room of rooms) library.subscribe(room);
  };
  client.reconnect = () => library.socket.io.engine?.close();
  client.leave = () => library.disconnect();
  client.back = () => library.connect();
  return client;
}

/**
 * `stock` socket.io-client clients and `library` twine-client-library clients spread over
 * `urls`. Stock client i listens to rooms i and i+1 (of three), half of them on WebSocket only
 * and half starting on long-polling; library clients listen to all three. With `subscribe`,
 * resolves once every client has joined its rooms.
 */
async function crowd(s, urls, { stock = 12, library = 2, subscribe = true, ackDelay = 0 } = {}) {
  const made = [];
  for (let i = 0; i < stock; i++) {
    const url = urls[i % urls.length];
    const rooms = [s.rooms[i % 3], s.rooms[(i + 1) % 3]];
    const transports = i % 4 < 2 ? ['websocket'] : undefined;
    made.push(await stockClient(s, url, `stock-${i}@${nodeName(s, url)}`, rooms, { transports, ackDelay }));
  }
  for (let i = 0; i < library; i++) {
    const url = urls[i % urls.length];
    made.push(await libraryClient(s, url, `library-${i}@${nodeName(s, url)}`, s.rooms));
  }
  if (subscribe) {
    for (const c of made) c.subscribe();
    await until(() => made.every((c) => c.rooms.every((r) => c.joinedAt.has(r))), 5000, 'every client joined its rooms');
  }
  return made;
}

/** How a client's name says where it connects: node A or B, or nginx. */
function nodeName(s, url) {
  return s.labels?.get(url) ?? 'AB'[(s.urls ?? []).indexOf(url)] ?? new URL(url).port;
}

/**
 * Publishes `{n}` to the rooms in turn, `rate` a second, through `nodes` in turn, without waiting
 * for answers (an open-loop backend). Every publish is kept with its outcome: `stored` (201),
 * `refused` (503, which means not stored, or a 4xx) or `unknown` (no answer within 10 s, or
 * another 5xx: a backend cannot tell either way, so it may be delivered, but then to every
 * subscriber once, as its room's history says).
 */
function httpPublisher(s, nodes, { rate = RATE } = {}) {
  const outcomes = new Map();
  const inFlight = new Set();
  let n = 0;
  let timer = null;
  const one = (room = s.rooms[n % 3], node = nodes[n % nodes.length]) => {
    const k = n++;
    const o = { n: k, room, sentAt: Date.now(), outcome: null, status: null };
    outcomes.set(k, o);
    const p = fetch(`${node.url}/api/twine`, {
      method: 'POST',
      headers: { Authorization: node.apiKey, 'Content-Type': 'application/json' },
      body: JSON.stringify({ room_id: room, payload: { n: k } }),
      signal: AbortSignal.timeout(10000),
    })
      .then(async (res) => {
        await res.arrayBuffer();
        o.status = res.status;
        o.outcome = res.status === 201 ? 'stored' : res.status === 503 || res.status < 500 ? 'refused' : 'unknown';
      })
      .catch((e) => {
        o.status = e.name;
        o.outcome = 'unknown';
      })
      .finally(() => inFlight.delete(p));
    inFlight.add(p);
    return p;
  };
  const publisher = {
    outcomes,
    one,
    start() {
      timer ??= setInterval(() => one(), 1000 / rate);
      return publisher;
    },
    /** Stops sending for now (what is in flight goes on). */
    hold() {
      clearInterval(timer);
      timer = null;
    },
    async stop() {
      clearInterval(timer);
      timer = null;
      while (inFlight.size > 0) await Promise.all([...inFlight]);
    },
  };
  s.cleanup(() => clearInterval(timer));
  return publisher;
}

/** Every message of `room` kept in its history, oldest first, read through `node`. */
async function roomHistory(node, room) {
  const deadline = Date.now() + 8000;
  for (;;) {
    try {
      const messages = [];
      let after = null;
      for (let page = 0; page < 100; page++) {
        const query = after === null ? '' : `&after=${after}`;
        const res = await fetch(`${node.url}/api/rooms/${encodeURIComponent(room)}/messages?limit=1000${query}`, {
          headers: { Authorization: node.apiKey },
          signal: AbortSignal.timeout(3000),
        });
        if (res.status !== 200) throw new Error(`history of ${room} answered ${res.status}: ${await res.text()}`);
        const body = await res.json();
        messages.push(...body.messages);
        if (body.next === null || body.next === undefined) return messages;
        after = body.next;
      }
      throw new Error(`history of ${room} has more than 100 pages`);
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await sleep(250);
    }
  }
}

const few = (list, max = 12) => (list.length > max ? `${list.slice(0, max).join(', ')}, … (${list.length})` : list.join(', '));

/**
 * THE INVARIANT. Stops the publishers, reads each room's history through `reader` and waits (at
 * most SETTLE_MS) until every client has everything it must have; then fails, with one line per
 * fault found, if any 201 is missing or repeated for a subscribed client, arrives out of order, or
 * if a refused publish was stored or delivered. A client must have what was published after its
 * subscription took effect (its first roomJoined for the room): the room's history from there, or
 * from earlier. Returns the figures.
 */
async function verify(t, s, { publishers, reader }) {
  const clients = s.clients;
  for (const p of publishers) await p.stop();
  const outcomes = new Map();
  for (const p of publishers) for (const [n, o] of p.outcomes) outcomes.set(n, o);
  const problems = [];

  // The rooms' history: their order, and what was stored.
  const history = new Map();
  const where = new Map();
  for (const room of s.rooms) {
    const list = (await roomHistory(reader, room)).map((m) => ({ n: m.n, timestamp: m.timestamp }));
    history.set(room, list);
    list.forEach((m, i) => where.set(m.n, { room, i, timestamp: m.timestamp }));
  }
  const count = (outcome) => [...outcomes.values()].filter((o) => o.outcome === outcome);
  const stored = count('stored');
  const refused = count('refused');
  const unknown = count('unknown');
  const statuses = [...new Set(refused.map((o) => o.status))].join('/') || '-';
  const lost = stored.filter((o) => !where.has(o.n)).map((o) => `${o.n}`);
  if (lost.length) problems.push(`answered 201 but not in its room's history: n=${few(lost)}`);
  const sneaked = refused.filter((o) => where.has(o.n));
  if (sneaked.length) {
    const answers = [...new Set(sneaked.map((o) => o.status))].join(' / ');
    problems.push(`answered ${answers} but stored (in history, delivered): n=${few(sneaked.map((o) => o.n))}`);
  }
  for (const [n, w] of where) {
    if (!outcomes.has(n)) problems.push(`history of ${w.room} holds n=${n}, which was never published`);
  }

  // What each client must have: its rooms' history from where its subscription took effect.
  const sentAt = (n) => outcomes.get(n)?.sentAt ?? 0;
  /** Which messages, and when they were published relative to the fault. */
  const span = (ns) => {
    const sorted = [...ns].sort((x, y) => x - y);
    const times = sorted.map((n) => sentAt(n)).sort((x, y) => x - y);
    const rel = (at) => {
      const d = (at - s.fault.from) / 1000;
      return d < 0 ? `${(-d).toFixed(1)} s before` : `${d.toFixed(1)} s after`;
    };
    const lasted = s.fault ? ((s.fault.to - s.fault.from) / 1000).toFixed(1) : 0;
    const when = s.fault
      ? `, published from ${rel(times[0])} to ${rel(times.at(-1))} the start of the ${lasted} s ${s.fault.kind}`
      : '';
    return `n=${few(sorted, 6)}${when}`;
  };
  const due = (c, room) => {
    const from = c.joinedAt.get(room);
    const list = history.get(room);
    if (from === undefined) return { list, first: list.length, never: true };
    const first = list.findIndex((m) => sentAt(m.n) >= from);
    return { list, first: first === -1 ? list.length : first, never: false };
  };
  const has = (c) => {
    const got = new Set(c.received.map((m) => m.n));
    return c.rooms.every((room) => {
      const { list, first } = due(c, room);
      return list.slice(first).every((m) => got.has(m.n));
    });
  };
  await until(() => clients.every(has), SETTLE_MS, 'every client to have every message').catch(() => {});
  await sleep(500); // anything delivered twice arrives meanwhile

  let missed = 0;
  let repeated = 0;
  const incomplete = [];
  const roomless = [];
  for (const c of clients) {
    const lines = [];
    for (const room of c.rooms) {
      const { list, first, never } = due(c, room);
      const got = c.received.filter((m) => m.room === room);
      if (never) lines.push(`${room}: its subscription never took effect (no roomJoined)`);
      const index = new Map(list.map((m, i) => [m.n, i]));
      const start = got.length > 0 && index.has(got[0].n) ? Math.min(index.get(got[0].n), first) : first;
      const seen = new Map();
      for (const m of got) seen.set(m.n, (seen.get(m.n) ?? 0) + 1);
      const missing = list.slice(start).filter((m) => !seen.has(m.n)).map((m) => m.n);
      // A black-hole swallows the acknowledgement flush in flight when it starts: as when a node
      // dies, what was acknowledged in the last --ack-flush (100 ms) before it may be replayed
      // once more (README, Recovery). Only those may come twice, and only with s.ackFlushRepeats.
      const flushed = (n) =>
        s.ackFlushRepeats && s.fault && outcomes.get(n) &&
        outcomes.get(n).sentAt >= s.fault.from - 250 && outcomes.get(n).sentAt <= s.fault.from;
      const twice = [...seen]
        .filter(([n, k]) => k > 2 || (k > 1 && !flushed(n)))
        .map(([n, k]) => (k > 2 ? `${n}×${k}` : `${n}`));
      const foreign = [...seen.keys()].filter((n) => !index.has(n));
      const refusedHere = foreign.filter((n) => outcomes.get(n)?.outcome === 'refused');
      let disorder = 0;
      let last = -1;
      const firsts = new Set();
      for (const m of got) {
        if (firsts.has(m.n)) continue;
        firsts.add(m.n);
        const i = index.get(m.n);
        if (i === undefined) continue;
        if (i < last) disorder++;
        last = Math.max(last, i);
        if (list[i].timestamp !== m.timestamp) lines.push(`${room}: n=${m.n} arrived with timestamp ${m.timestamp}, stored with ${list[i].timestamp}`);
      }
      missed += missing.length;
      repeated += twice.length;
      if (missing.length) lines.push(`${room}: missed ${missing.length} of ${list.length - start} (${span(missing)})`);
      if (twice.length) lines.push(`${room}: got ${twice.length} twice (${span(twice.map((x) => Number.parseInt(x, 10)))})`);
      if (disorder) lines.push(`${room}: ${disorder} out of the room's order`);
      if (refusedHere.length) lines.push(`${room}: delivered refused publishes: n=${few(refusedHere)}`);
      else if (foreign.length) lines.push(`${room}: delivered messages not in the room's history: n=${few(foreign)}`);
    }
    const strays = c.received.filter((m) => !c.rooms.includes(m.room));
    if (strays.length) lines.push(`got ${strays.length} messages of rooms it is not in`);
    const now = c.connections.at(-1);
    const inNoRoom = c.socket.connected && now.joined.size === 0;
    if (inNoRoom) roomless.push(c.name);
    if (lines.length) {
      const state = c.socket.connected ? `connected (connection ${c.connections.length}) in rooms [${[...now.joined].join(', ')}]` : 'not connected';
      const errors = c.connections.flatMap((k) => k.errors).map((e) => JSON.stringify(e));
      incomplete.push(c.name);
      problems.push(`${c.name} (${c.kind}): ${lines.join('; ')} — now ${state}${errors.length ? `; error events: ${few(errors, 3)}` : ''}`);
    }
  }
  const figures = {
    published: outcomes.size,
    stored: stored.length,
    refused: refused.length,
    unknown: unknown.length,
    clients: clients.length,
    incomplete: incomplete.length,
    missed,
    repeated,
    roomless: roomless.length,
  };
  t.diagnostic(
    `${s.step}: ${outcomes.size} published: ${stored.length} stored (201/ok), ${refused.length} refused (${statuses}), ` +
      `${unknown.length} of unknown outcome (${[...new Set(unknown.map((o) => o.status))].join('/') || '-'}); ${clients.length - incomplete.length} of ${clients.length} clients complete; ` +
      `${missed} missed, ${repeated} duplicated; ${roomless.length} connected in no rooms; proxy ${JSON.stringify(proxy.stats())}`,
  );
  if (problems.length) {
    assert.fail(
      `${s.step}: ${incomplete.length} of ${clients.length} clients broke the invariant ` +
        `(${missed} missed, ${repeated} duplicated, ${roomless.length} left connected in no rooms):\n  ` +
        problems.join('\n  '),
    );
  }
  return figures;
}

/**
 * Starts a `kind` fault (pause or blackhole) at once, runs `midway`, and heals it `ms` after it
 * began. The fault's span is kept in `s.fault` for the report.
 */
async function during(s, kind, ms, midway = async () => {}) {
  s.fault = { kind, from: Date.now(), to: null };
  if (kind === 'pause') proxy.pause();
  else if (kind === 'blackhole') proxy.blackhole();
  await midway();
  await sleep(Math.max(0, ms - (Date.now() - s.fault.from)));
  proxy.heal();
  s.fault.to = Date.now();
}

/** Asserts that every client made a new connection between `from` and `to` (the fault landed). */
function assertReconnectedWithin(clients, from, to) {
  const late = clients.filter((c) => !c.connections.some((k) => k.at > from && k.at < to));
  assert.deepEqual(
    late.map((c) => c.name),
    [],
    `the fault did not land: these clients did not reconnect while it lasted`,
  );
}

/** Two nodes on the proxy, and clients spread over both and joined to their rooms. */
async function twoNodes(t, step, { args = [], ...crowdOptions } = {}) {
  const s = stage(t, step);
  s.nodes = [await s.node(args), await s.node(args)];
  s.urls = s.nodes.map((n) => n.url);
  await crowd(s, s.urls, crowdOptions);
  return s;
}

// (a) Handshake and session load: clients reconnect while Redis does not answer. Their session
// cannot be loaded in time; they must still end up in their rooms with everything they missed.

for (const kind of ['pause', 'blackhole']) {
  test(`(a) handshake and session load: clients reconnect during a Redis ${kind}`, async (t) => {
    const s = await twoNodes(t, `a-${kind}`);
    s.ackFlushRepeats = kind === 'blackhole';
    const publisher = httpPublisher(s, s.nodes).start();
    await sleep(1500);
    const from = Date.now();
    await during(s, kind, FAULT_MS, async () => {
      await sleep(300);
      for (const c of s.clients) c.reconnect();
    });
    assertReconnectedWithin(s.clients, from, Date.now());
    await sleep(2500);
    await verify(t, s, { publishers: [publisher], reader: s.nodes[0] });
  });
}

test('(a) handshake and session load: clients reconnect while the Redis link is reset again and again', async (t) => {
  const s = await twoNodes(t, 'a-reset');
  const publisher = httpPublisher(s, s.nodes).start();
  await sleep(1500);
  const from = Date.now();
  for (const c of s.clients) c.reconnect();
  // A reset every 100 ms for two seconds: reconnecting clients' session loads meet it.
  s.fault = { kind: 'resets', from: Date.now(), to: null };
  for (let i = 0; i < 20; i++) {
    proxy.reset();
    await sleep(100);
  }
  s.fault.to = Date.now();
  assertReconnectedWithin(s.clients, from, Date.now());
  await sleep(2500);
  await verify(t, s, { publishers: [publisher], reader: s.nodes[0] });
});

// (b) Subscribe while Redis is paused: the subscription must take effect and be remembered (a
// reconnect afterwards must rejoin the room).

for (const kind of ['pause', 'blackhole']) {
  test(`(b) subscribe during a Redis ${kind}: the subscription takes effect, is kept across a reconnect, and nothing after it is missed`, async (t) => {
    const s = stage(t, `b-${kind}`);
    s.nodes = [await s.node(), await s.node()];
    s.urls = s.nodes.map((n) => n.url);
    await crowd(s, s.urls, { subscribe: false });
    const publisher = httpPublisher(s, s.nodes).start();
    await sleep(1000);
    let asked;
    await during(s, kind, FAULT_MS, async () => {
      await sleep(300);
      asked = Date.now();
      for (const c of s.clients) c.subscribe();
    });
    await sleep(2000);
    const joined = s.clients.flatMap((c) => [...c.joinedAt.values()].map((at) => at - asked)).sort((x, y) => x - y);
    const refusals = s.clients.flatMap((c) => c.connections[0].errors).map((e) => JSON.stringify(e));
    t.diagnostic(
      `${joined.length} of ${s.clients.reduce((k, c) => k + c.rooms.length, 0)} subscriptions took effect, ` +
        `${joined[0]} to ${joined.at(-1)} ms after they were asked (the ${kind} lasted ${FAULT_MS} ms); ` +
        `error events: ${refusals.length} ${few([...new Set(refusals)], 2)}`,
    );
    const from = Date.now();
    for (const c of s.clients) c.reconnect();
    await sleep(2500);
    assertReconnectedWithin(s.clients, from, Date.now());
    await verify(t, s, { publishers: [publisher], reader: s.nodes[0] });
  });
}

// (c) A replay interrupted: clients with a big backlog reconnect and Redis stops answering in the
// middle of their replays.

for (const kind of ['pause', 'blackhole']) {
  test(`(c) replay: a Redis ${kind} lands in the middle of big replays`, async (t) => {
    const s = stage(t, `c-${kind}`);
    s.nodes = [await s.node(), await s.node()];
    s.urls = s.nodes.map((n) => n.url);
    await crowd(s, s.urls, { stock: 8, library: 2 });
    const publisher = httpPublisher(s, s.nodes);
    for (let i = 0; i < 5; i++) await publisher.one();
    await until(() => s.clients.every((c) => c.received.length >= 3), 5000, 'the first messages live');
    for (const c of s.clients) c.leave();
    await sleep(300);
    // 1,500 messages per room while they are away, then live publishing again.
    const backlog = 4500;
    for (let i = 0; i < backlog; i += 50) await Promise.all(Array.from({ length: 50 }, () => publisher.one()));
    publisher.start();
    const before = new Map(s.clients.map((c) => [c, c.received.length]));
    const replayed = (c) => c.received.length - before.get(c);
    // Each page of history now takes a 120 ms round trip, so replays take seconds.
    proxy.delay(60);
    for (const c of s.clients) c.back();
    const backlogOf = (c) => (backlog / 3) * c.rooms.length;
    const midway = () => s.clients.filter((c) => replayed(c) > 0 && replayed(c) < backlogOf(c));
    await until(() => midway().length >= s.clients.length * 0.75, 10000, 'replays under way').catch(() => {});
    const progress = s.clients.map((c) => `${replayed(c)}/${backlogOf(c)}`).join(' ');
    const landed = midway().length;
    await during(s, kind, FAULT_MS);
    t.diagnostic(`${landed} of ${s.clients.length} clients were mid-replay when the ${kind} began (replayed/backlog: ${progress})`);
    assert.ok(landed >= s.clients.length / 2, `the fault did not land mid-replay (replayed/backlog: ${progress})`);
    await sleep(2500);
    await verify(t, s, { publishers: [publisher], reader: s.nodes[0] });
  });
}

// (d) Live delivery: clients stay connected while the nodes' Redis connections (pub/sub and
// commands) stall, are reset, or fall into a blackhole.

for (const kind of ['pause', 'blackhole']) {
  test(`(d) live delivery through a Redis ${kind}`, async (t) => {
    const s = await twoNodes(t, `d-${kind}`);
    const publisher = httpPublisher(s, s.nodes).start();
    await sleep(1500);
    await during(s, kind, FAULT_MS);
    await sleep(2500);
    await verify(t, s, { publishers: [publisher], reader: s.nodes[0] });
  });
}

test('(d) live delivery while the Redis connections are reset', async (t) => {
  const s = await twoNodes(t, 'd-reset');
  const publisher = httpPublisher(s, s.nodes).start();
  await sleep(1500);
  const resets = proxy.stats().resets;
  s.fault = { kind: 'resets', from: Date.now(), to: null };
  for (let i = 0; i < 3; i++) {
    proxy.reset();
    await sleep(1000);
  }
  s.fault.to = Date.now();
  assert.ok(proxy.stats().resets - resets >= 4, 'both nodes\' connections were reset');
  await sleep(2500);
  await verify(t, s, { publishers: [publisher], reader: s.nodes[0] });
});

// A publish whose answer is on its way back when the link stalls or is reset: it is stored, so it
// must not be answered 503. Redis is 50 ms away (each way) and the fault lands 75 ms after a burst
// of publishes left the nodes: their requests reached Redis, and their answers are in flight.

for (const kind of ['pause', 'reset']) {
  test(`(d) publishes whose answers are in flight when the Redis link ${kind === 'pause' ? 'stalls' : 'is reset'}: 503 means not stored`, async (t) => {
    const s = await twoNodes(t, `d-answers-${kind}`, { stock: 6, library: 2 });
    const publisher = httpPublisher(s, s.nodes).start();
    await sleep(1000);
    publisher.hold();
    proxy.delay(50);
    await sleep(500); // what was in flight is answered
    const before = proxy.stats().toService;
    const burst = Array.from({ length: 12 }, () => publisher.one());
    await sleep(75);
    const sent = proxy.stats().toService - before;
    s.fault = { kind, from: Date.now(), to: null };
    if (kind === 'pause') {
      proxy.pause();
      publisher.start();
      await sleep(FAULT_MS);
    } else {
      proxy.reset();
      publisher.start();
      await sleep(1000);
    }
    proxy.heal();
    s.fault.to = Date.now();
    await Promise.all(burst);
    assert.ok(sent > 0, 'the burst reached Redis before the fault');
    await sleep(2000);
    await verify(t, s, { publishers: [publisher], reader: s.nodes[0] });
  });
}

// (e) Acknowledgements stored while Redis does not answer: clients acknowledge (a second after
// each message, as an app that takes time) during the fault, then reconnect once Redis is back
// and they have acknowledged everything they were sent. They must get nothing twice.

for (const kind of ['pause', 'blackhole']) {
  test(`(e) acknowledgements flushed during a Redis ${kind}, then reconnects: nothing repeated`, async (t) => {
    const s = await twoNodes(t, `e-${kind}`, { ackDelay: 1000 });
    const publisher = httpPublisher(s, s.nodes).start();
    await sleep(2000);
    await during(s, kind, FAULT_MS);
    // Quiet until every client has acknowledged all it got (a message not acknowledged when its
    // client drops is rightly sent again) and the node's next flush could store it.
    publisher.hold();
    await sleep(2000);
    const from = Date.now();
    for (const c of s.clients) c.reconnect();
    publisher.start();
    await sleep(2500);
    assertReconnectedWithin(s.clients, from, Date.now());
    await verify(t, s, { publishers: [publisher], reader: s.nodes[1] });
  });
}

// (f) Drain: a node stopped with SIGTERM while Redis is paused; its clients move to the other
// node (behind nginx) and must miss nothing.

test('(f) drain: SIGTERM during a Redis pause; clients move to the other node and miss nothing', async (t) => {
  const s = stage(t, 'f-pause');
  const bPort = await freePort();
  const a = await s.node(['--drain-delay', '0s', '--drain-period', '2s']);
  // The other node is in nginx but not listening yet: every client starts on A.
  const nginx = await startNginx([a.port, bPort], { serverOptions: 'max_fails=0' });
  s.cleanup(() => nginx.stop());
  s.urls = [nginx.url];
  s.labels = new Map([[nginx.url, 'nginx']]);
  await crowd(s, [nginx.url], { stock: 10, library: 2 });
  const b = await s.node(['--port', String(bPort)]);
  s.nodes = [a, b];
  const publisher = httpPublisher(s, [b]).start();
  await sleep(1500);
  const from = Date.now();
  await during(s, 'pause', FAULT_MS, async () => {
    await sleep(300);
    a.proc.kill('SIGTERM');
  });
  const exit = await Promise.race([a.exited, sleep(15000).then(() => null)]);
  t.diagnostic(`the drained node exited ${exit ? `with ${exit.code ?? exit.signal}` : 'not within 15 s'} after ${Date.now() - from} ms`);
  await sleep(2500);
  assertReconnectedWithin(s.clients, from, Date.now());
  await verify(t, s, { publishers: [publisher], reader: b });
  assert.equal(exit?.code, 0, 'the drained node exits 0 in time');
});

// (g) Client publishing while Redis is paused: an acknowledgement {ok: true} means stored and
// delivered, {ok: false} means not. A publish left without an answer is retried with its id.

// With `latency`, Redis is that far away (each way) until the pause begins, and the ten writers'
// last publishes left `latency / 2` apart before it, so whatever round trip of a client publish
// stores it, one of them has been stored and has its answer on the way back when the pause lands:
// a publish stored then must not be answered as not stored.
for (const latency of [0, 50]) {
  const over = latency ? ` over a ${latency} ms link` : '';
  test(`(g) client publish during a Redis pause${over}: ok means delivered once, not ok means never delivered`, async (t) => {
    const s = stage(t, latency ? `g-pause-${latency}ms` : 'g-pause');
    const args = ['--client-publish', 'token', '--auth', 'optional'];
    s.nodes = [await s.node(args), await s.node(args)];
    s.urls = s.nodes.map((n) => n.url);
    await crowd(s, s.urls, { stock: 10, library: 2 });
    const mint = await fetch(`${s.nodes[0].url}/api/token`, {
      method: 'POST',
      headers: { Authorization: s.nodes[0].apiKey, 'Content-Type': 'application/json' },
      body: JSON.stringify({ sub: 'writer', publish: s.rooms, ttl: '10m' }),
    });
    assert.equal(mint.status, 201);
    const { token } = await mint.json();
    const writers = [];
    for (let i = 0; i < 10; i++) {
      const url = s.urls[i % 2];
      const cookie = await fetchCookie(url);
      const socket = await connect(url, {
        cookie,
        reconnection: true,
        options: { reconnectionDelay: 100, reconnectionDelayMax: 1000, auth: { token } },
      });
      s.cleanup(() => socket.close());
      writers.push(socket);
    }
    // Ten writers over the three rooms, about 50 publishes a second in all.
    const outcomes = new Map();
    const inFlight = new Set();
    let n = 0;
    const send = (socket, room, k) => {
      const o = outcomes.get(k) ?? { n: k, room, sentAt: Date.now(), outcome: null, status: null };
      outcomes.set(k, o);
      const p = socket
        .timeout(8000)
        .emitWithAck('publish', { room_id: room, payload: { n: k }, id: `n-${k}` })
        .then((answer) => {
          // A refusal that says the outcome is unknown (the store's answer was lost) is the
          // socket's 504: it may have been stored.
          const unsettled = answer?.ok !== true && /may or may not/.test(answer?.reason ?? '');
          o.outcome = answer?.ok === true ? 'stored' : unsettled ? 'unknown' : 'refused';
          o.status = answer?.ok === true ? 'ok' : `not ok: ${answer?.reason}`;
        })
        .catch(() => {
          o.outcome = 'unknown';
          o.status = 'no answer';
        })
        .finally(() => inFlight.delete(p));
      inFlight.add(p);
      return p;
    };
    const next = () => {
      const k = n++;
      return send(writers[k % writers.length], s.rooms[k % 3], k);
    };
    let timer = setInterval(next, 1000 / RATE);
    s.cleanup(() => clearInterval(timer));
    const publisher = {
      outcomes,
      async stop() {
        clearInterval(timer);
        while (inFlight.size > 0) await Promise.all([...inFlight]);
        // What got no answer is sent again with its id, as an app would: stored once either way.
        for (const o of [...outcomes.values()].filter((x) => x.outcome === 'unknown')) {
          const writer = writers[o.n % writers.length];
          await until(() => writer.connected, 5000, 'writer connected').catch(() => {});
          await send(writer, o.room, o.n);
        }
      },
    };
    proxy.delay(latency);
    await sleep(1500);
    if (latency) {
      clearInterval(timer);
      await sleep(500); // every writer's queue answered
      for (const _ of writers) {
        next();
        await sleep(latency / 2);
      }
    }
    await during(s, 'pause', FAULT_MS, async () => {
      if (latency) timer = setInterval(next, 1000 / RATE);
    }); // heals the latency too
    await sleep(2500);
    const figures = await verify(t, s, { publishers: [publisher], reader: s.nodes[0] });
    assert.ok(figures.refused > 0 || figures.unknown > 0 || figures.stored < figures.published, 'the pause was felt by the writers');
  });
}

// (h) Presence while Redis is paused: members entering during the pause are listed once Redis is
// back; the nodes keep running and delivering.

for (const kind of ['pause', 'blackhole']) {
  test(`(h) presence:enter during a Redis ${kind}: no crash, and every member is listed once Redis is back`, async (t) => {
    const s = await twoNodes(t, `h-${kind}`);
    const room = s.rooms[0];
    const members = s.clients.filter((c) => c.kind === 'socket.io-client' && c.rooms.includes(room));
    const announced = new Map();
    for (const c of s.clients) {
      c.socket.on('presence', (batch) => {
        for (const change of batch.changes ?? []) {
          if (change.action === 'enter') announced.set(c.name, (announced.get(c.name) ?? 0) + 1);
        }
      });
    }
    const publisher = httpPublisher(s, s.nodes).start();
    const listed = async () => {
      const res = await fetch(`${s.nodes[1].url}/api/rooms/${encodeURIComponent(room)}/presence`, {
        headers: { Authorization: s.nodes[1].apiKey },
        signal: AbortSignal.timeout(3000),
      }).catch(() => null);
      if (res?.status !== 200) return null;
      return (await res.json()).members.map((m) => m.data?.name).sort();
    };
    const early = members.slice(0, 3);
    const late = members.slice(3);
    for (const c of early) c.socket.emit('presence:enter', { room, data: { name: c.name } });
    const names = (list) => list.map((c) => c.name).sort();
    let seen = null;
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && JSON.stringify(seen) !== JSON.stringify(names(early))) {
      seen = await listed();
      await sleep(100);
    }
    assert.deepEqual(seen, names(early), 'the first members are listed before the pause');
    await during(s, kind, FAULT_MS, async () => {
      await sleep(300);
      for (const c of late) c.socket.emit('presence:enter', { room, data: { name: c.name } });
    });
    const healed = Date.now();
    const everyone = names(members);
    while (Date.now() < healed + SETTLE_MS && JSON.stringify(seen) !== JSON.stringify(everyone)) {
      seen = await listed();
      await sleep(200);
    }
    for (const node of s.nodes) {
      assert.equal(node.proc.exitCode, null, 'the node is still running');
      assert.equal((await fetch(`${node.url}/`)).status, 201, 'the node still answers');
    }
    const presenceErrors = members.flatMap((c) => c.connections.flatMap((k) => k.errors).filter((e) => String(e?.event).startsWith('presence')).map((e) => `${c.name}: ${JSON.stringify(e)}`));
    t.diagnostic(`members listed ${Date.now() - healed} ms after the ${kind}: [${seen}]; enter announcements seen per client: ${JSON.stringify(Object.fromEntries(announced))}; presence errors: ${presenceErrors.length} ${few(presenceErrors, 3)}`);
    assert.deepEqual(seen, everyone, `every member is listed once Redis is back (errors: ${few(presenceErrors, 4)})`);
    await verify(t, s, { publishers: [publisher], reader: s.nodes[0] });
  });
}
