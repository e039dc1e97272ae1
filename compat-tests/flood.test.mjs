// Every input an anonymous client can reach, flooded in turn from one client with no API key at
// the highest rate it can send, against a room of 2,000 members: the node's memory stays bounded
// during and after, its CPU is back near idle within seconds of the client leaving, and a client
// in another room keeps getting its messages in time.
//
// The inputs come from the server itself: `GET /metrics` names every Socket.IO event it handles
// (`twine_client_events_total{event}`, from its one table of events) and every HTTP route it
// serves (`twine_http_requests_total{route}`). There is a flood test for each name the server
// lists, so an event or route added without an entry below has a test that fails, and a new
// feature cannot open a flood nobody tried. Each flood must also have run as planned: the client
// sent at least MIN_EVENTS frames (or MIN_REQUESTS answered requests), and the server's own
// counter of the flooded event or route grew by at least as many.
//
// compat-tests/stalled.test.mjs floods the same events, with the largest arguments they take,
// from a connection whose replay holds its queue (a client that stopped reading);
// compat-tests/hook-floods.test.mjs floods each backend hook.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTwine } from '../js-fixtures/server.mjs';
import { hashPassword } from '../js-fixtures/admin.mjs';
import { connect, publish, subscribe, sleep } from '../js-fixtures/clients.mjs';
import { connectRaw, closed, crowd, rssMB, cpuSeconds } from '../js-fixtures/raw.mjs';

/** How long each input is flooded. */
const FLOOD_MS = 3000;
/** The bounds every flood is held to. */
const MAX_GROWTH_MB = 150;
const MAX_LEFT_OVER_MB = 60;
const MAX_CPU_AFTER = 0.15;
const MAX_OTHER_ROOM_P99_MS = 250;
/**
 * What a flood must have done to count as run: frames of its event the server counted (more than
 * a connection's burst of 1,000, so its rate limit was reached), and requests answered.
 */
const MIN_EVENTS = 1100;
const MIN_REQUESTS = 200;

const pad = 'x'.repeat(900);

/** Socket.IO events: what one flooding client sends, as fast as it can (`i` counts up). */
const EVENT_FLOODS = {
  subscribe: (ws, i) => ws.sendEvent('subscribe', `flood-${i}`),
  unsubscribe: (ws, i) => ws.sendEvent('unsubscribe', i % 2 ? 'crowd' : `flood-${i}`),
  updateSessionTS: (ws, i) => ws.sendEvent('updateSessionTS', Date.now() + i),
  stateRecovery: (ws) => ws.sendEvent('stateRecovery'),
  publish: (ws, i) => ws.sendEvent('publish', { room_id: 'crowd', payload: { i, pad }, id: `m-${i}` }),
  'presence:enter': (ws, i) => ws.sendEvent('presence:enter', { room: 'crowd', data: { i, pad } }),
  'presence:update': (ws, i) =>
    ws.sendEvent(i === 0 ? 'presence:enter' : 'presence:update', { room: 'crowd', data: { i, pad } }),
  'presence:leave': (ws, i) =>
    ws.sendEvent(i % 2 ? 'presence:leave' : 'presence:enter', { room: 'crowd', data: { i, pad } }),
  'presence:members': (ws) => ws.sendEvent('presence:members', { room: 'crowd' }),
  other: (ws, i) => ws.sendEvent(`made-up-${i % 1000}`, { pad }),
};

/** HTTP routes: one request of a flood, with no API key. */
const ROUTE_FLOODS = {
  '/': (url) => fetch(`${url}/`),
  '/ready': (url) => fetch(`${url}/ready`),
  '/metrics': (url) => fetch(`${url}/metrics`),
  '/set-cookie': (url) => fetch(`${url}/set-cookie`),
  '/api/twine': (url) =>
    fetch(`${url}/api/twine`, { method: 'POST', body: JSON.stringify({ room_id: 'crowd', payload: { pad } }) }),
  '/api/token': (url) => fetch(`${url}/api/token`, { method: 'POST', body: JSON.stringify({ rooms: ['crowd'] }) }),
  '/api/rooms/{room}/messages': (url) => fetch(`${url}/api/rooms/crowd/messages?limit=1000`),
  '/api/rooms/{room}/presence': (url) => fetch(`${url}/api/rooms/crowd/presence`),
  '/api/fleet': (url) => fetch(`${url}/api/fleet`),
  // The nodes' own Admin UI requests, signed as no attacker can: refused before any work.
  '/api/fleet/admin': (url, i) =>
    fetch(`${url}/api/fleet/admin`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'Twine-Relay': `node:${Date.now()}:${'0'.repeat(64)}` },
      body: JSON.stringify(i % 2 ? { ask: 'sockets' } : { ask: 'operate', text: `["_disconnect","/",false]` }),
    }),
  '/demo/publish': (url, i) =>
    fetch(`${url}/demo/publish`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ room: `demo-${i % 100}`, name: 'flood', text: pad.slice(0, 400) }),
    }),
  '/demo/': (url) => fetch(`${url}/demo/`),
};

/**
 * One long-polling session for a flood's loops to share: its handshake is tried until the node
 * takes it (a flood of handshakes before may have filled the pending sessions for a while).
 */
async function pollingSid(url) {
  const deadline = Date.now() + 15000;
  for (;;) {
    const res = await fetch(`${url}/socket.io/?EIO=4&transport=polling`).catch(() => null);
    const text = res ? await res.text() : '';
    if (res?.ok && text.startsWith('0')) return JSON.parse(text.slice(1)).sid;
    if (Date.now() > deadline) throw new Error(`no long-polling session: ${res?.status} ${text.slice(0, 80)}`);
    await sleep(200);
  }
}

/** Engine.IO itself, which is not a route of the router: long-polling posts and handshakes. */
const ENGINE_FLOODS = {
  // Engine.IO takes one POST at a time on a session (an overlapping one ends it), so the loops
  // take turns: one post after the other, as fast as the node answers.
  'long-polling posts to one session': (url, i, state) => {
    const post = async () => {
      const sid = await (state.sid ??= pollingSid(url));
      const res = await fetch(`${url}/socket.io/?EIO=4&transport=polling&sid=${sid}`, {
        method: 'POST',
        headers: { 'Content-Type': 'text/plain;charset=UTF-8' },
        body: (state.posted = (state.posted ?? 0) + 1) === 1 ? '40' : `42${JSON.stringify(['subscribe', `p-${i}`])}`,
      });
      return new Response(await res.arrayBuffer(), { status: res.status });
    };
    state.turn = (state.turn ?? Promise.resolve()).then(post, post);
    return state.turn;
  },
  // The Admin UI's namespace (`--admin on`): logins with wrong passwords, each a bcrypt check
  // until the address's allowance is spent.
  'admin logins with wrong passwords': async (url, i) => {
    const sid = JSON.parse((await (await fetch(`${url}/socket.io/?EIO=4&transport=polling`)).text()).slice(1)).sid;
    return fetch(`${url}/socket.io/?EIO=4&transport=polling&sid=${sid}`, {
      method: 'POST',
      headers: { 'Content-Type': 'text/plain;charset=UTF-8' },
      body: `40/admin,${JSON.stringify({ username: 'operator', password: `guess-${i}` })}`,
    });
  },
  // Last: each makes a session that stays pending a while, as each login above does.
  'long-polling handshakes': (url) => fetch(`${url}/socket.io/?EIO=4&transport=polling`),
};

let server;
let members = [];
let probe;
let baseline;

/** Another room's client, sent a message every 50 ms; `since(t)` is its p99 from `t` on. */
async function latencyProbe() {
  const socket = await connect(server.url);
  await subscribe(socket, 'pulse');
  let seq = 0;
  const timer = setInterval(() => publish(server, 'pulse', { seq: seq++, sent: Date.now() }), 50);
  return {
    since(from) {
      const latencies = socket.messages
        .map((m, i) => [m.sent, socket.arrivals[i] - m.sent])
        .filter(([sent]) => sent >= from)
        .map(([, latency]) => latency)
        .sort((a, b) => a - b);
      return latencies[Math.floor(latencies.length * 0.99)] ?? Infinity;
    },
    stop() {
      clearInterval(timer);
      socket.close();
    },
  };
}

/** `twine_<metric>_total` by its `label` on `GET /metrics`: a map of name → count. */
async function counted(metric, label) {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const pattern = new RegExp(`^twine_${metric}_total\\{${label}="([^"]+)"\\} (\\S+)$`, 'gm');
  return new Map([...text.matchAll(pattern)].map((m) => [m[1], Number(m[2])]));
}

/** The names `GET /metrics` lists under `metric`'s `label`. */
async function surface(metric, label) {
  return [...(await counted(metric, label)).keys()];
}

// The node starts as the file loads: the flood tests are made from what it lists. The Admin
// UI's namespace is on, with a realistic bcrypt cost, its login flooded below.
const admin = ['--admin', 'on', '--admin-username', 'operator', '--admin-password-hash', hashPassword('not guessed', 10)];
server = await startTwine({ args: ['--demo', '--history-memory', '64MiB', ...admin] });
const EVENTS = await surface('client_events', 'event');
const ROUTES = await surface('http_requests', 'route');

before(async () => {
  members = await crowd(server, 'crowd', 2000);
  probe = await latencyProbe();
  await sleep(1500);
  baseline = rssMB(server.proc.pid);
});

after(async () => {
  probe?.stop();
  for (const m of members) m.close();
  await server?.stop();
});

/**
 * Runs `flood` for FLOOD_MS, then checks that it ran as planned (`ran(sent, grew)`, given what
 * the flood reports it sent and how much the server's counter `counter()` grew) and the bounds:
 * memory during and after, CPU in the third second after it stopped, and the other room's p99
 * during it.
 */
async function holds(t, what, flood, { counter, ran }) {
  const pid = server.proc.pid;
  let peak = rssMB(pid);
  const sampler = setInterval(() => (peak = Math.max(peak, rssMB(pid))), 20);
  const countedBefore = await counter();
  const started = Date.now();
  const sent = await flood(started + FLOOD_MS);
  const p99 = probe.since(started);
  await sleep(2000);
  const cpuStart = cpuSeconds(pid);
  await sleep(1000);
  const cpu = cpuSeconds(pid) - cpuStart;
  clearInterval(sampler);
  const now = rssMB(pid);
  const grew = (await counter()) - countedBefore;
  t.diagnostic(
    `${what}: ${JSON.stringify(sent)} in ${FLOOD_MS} ms, the server counted ${grew}; RSS ${baseline.toFixed(0)} → peak ${peak.toFixed(0)} → ${now.toFixed(0)} MB; ` +
      `CPU ${(cpu * 100).toFixed(0)}% in the 3rd second after; other room p99 ${p99} ms`,
  );
  ran(sent, grew);
  assert.ok(peak - baseline < MAX_GROWTH_MB, `${what}: RSS grew ${(peak - baseline).toFixed(0)} MB`);
  assert.ok(now - baseline < MAX_LEFT_OVER_MB, `${what}: RSS still ${(now - baseline).toFixed(0)} MB up after`);
  assert.ok(cpu < MAX_CPU_AFTER, `${what}: ${cpu} CPU-s in a second, 3 s after the flood`);
  assert.ok(p99 < MAX_OTHER_ROOM_P99_MS, `${what}: another room's p99 ${p99} ms`);
}

/**
 * Floods from one raw socket subscribed to the crowd's room, sending in bursts until `until`.
 * Resolves to the frames sent by event name, and whether the server closed the socket.
 */
async function socketFlood(send, until) {
  const ws = await connectRaw(server);
  ws.on('error', () => {});
  ws.keep = false;
  ws.sendEvent('subscribe', 'crowd');
  const sent = {};
  const sendEvent = ws.sendEvent;
  ws.sendEvent = (event, ...args) => {
    const name = event.startsWith('made-up-') ? 'other' : event;
    sent[name] = (sent[name] ?? 0) + 1;
    sendEvent(event, ...args);
  };
  let i = 0;
  let closedByServer = false;
  ws.once('close', () => (closedByServer = true));
  while (Date.now() < until && ws.readyState === ws.OPEN) {
    for (let n = 0; n < 100; n++) send(ws, i++);
    await sleep(5);
  }
  const cut = closedByServer;
  ws.close();
  await closed(ws);
  return { sent, cut };
}

/**
 * Floods with `request` from 32 concurrent loops until `until`; resolves to the requests made,
 * answered, and answered with a 2xx.
 */
async function httpFlood(request, until) {
  let i = 0;
  let answered = 0;
  let ok = 0;
  const state = {};
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      while (Date.now() < until) {
        const res = await request(server.url, i++, state).catch(() => null);
        if (res) answered += 1;
        if (res?.ok) ok += 1;
        await res?.arrayBuffer().catch(() => {});
      }
    }),
  );
  return { requests: i, answered, ok };
}

test('the server lists its events and routes, and every flood entry here names one of them (or Engine.IO)', () => {
  assert.ok(EVENTS.includes('subscribe') && ROUTES.includes('/api/twine'), 'the surface is listed');
  for (const event of Object.keys(EVENT_FLOODS)) assert.ok(EVENTS.includes(event), `the flood entry ${event} is no event the server counts`);
  for (const route of Object.keys(ROUTE_FLOODS)) assert.ok(ROUTES.includes(route), `the flood entry ${route} is no route the server serves`);
});

// A test for each event the server lists: one without an entry above fails.
for (const event of EVENTS) {
  test(`event flood: ${event}`, (t) => {
    const send = EVENT_FLOODS[event];
    assert.ok(send, `the event ${event} has no flood entry here`);
    return holds(t, event, (until) => socketFlood(send, until), {
      counter: async () => (await counted('client_events', 'event')).get(event),
      ran: ({ sent, cut }, grew) => {
        const own = sent[event] ?? 0;
        assert.ok(own >= MIN_EVENTS || (cut && own > 0), `${event}: the flood sent ${own} of its event`);
        assert.ok(grew >= Math.min(own, MIN_EVENTS), `${event}: the server counted ${grew} of the ${own} sent`);
      },
    });
  });
}

// A test for each route the server lists, and Engine.IO's own requests.
const httpRan = (what, { requests, answered }, grew) => {
  assert.ok(answered >= MIN_REQUESTS, `${what}: ${answered} of ${requests} requests answered`);
  if (grew !== undefined) assert.ok(grew >= MIN_REQUESTS, `${what}: the server counted ${grew} requests`);
};
for (const route of ROUTES) {
  test(`HTTP flood: ${route}`, (t) => {
    const request = ROUTE_FLOODS[route];
    assert.ok(request, `the route ${route} has no flood entry here`);
    return holds(t, route, (until) => httpFlood(request, until), {
      counter: async () => (await counted('http_requests', 'route')).get(route),
      ran: (sent, grew) => httpRan(route, sent, grew),
    });
  });
}
for (const [what, request] of Object.entries(ENGINE_FLOODS)) {
  test(`HTTP flood: ${what}`, (t) =>
    holds(t, what, (until) => httpFlood(request, until), {
      counter: async () => 0,
      ran: (sent) => {
        httpRan(what, sent);
        // The posts go to one session that stays open: the node takes them.
        if (what.includes('posts')) assert.ok(sent.ok >= MIN_REQUESTS, `${what}: ${sent.ok} posts taken (2xx)`);
      },
    }));
}
