// Every input an anonymous client can reach, flooded in turn from one client with no API key at
// the highest rate it can send, against a room of 2,000 members: the node's memory stays bounded
// during and after, its CPU is back near idle within seconds of the client leaving, and a client
// in another room keeps getting its messages in time.
//
// The inputs come from the server itself: `GET /metrics` names every Socket.IO event it handles
// (`twine_client_events_total{event}`) and every HTTP route it serves
// (`twine_http_requests_total{route}`). An event or route added without an entry below fails
// this test, so a new feature cannot open a flood nobody tried.
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
  '/demo/publish': (url, i) =>
    fetch(`${url}/demo/publish`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ room: `demo-${i % 100}`, name: 'flood', text: pad.slice(0, 400) }),
    }),
  '/demo/': (url) => fetch(`${url}/demo/`),
};

/** Engine.IO itself, which is not a route of the router: handshakes and long-polling posts. */
const ENGINE_FLOODS = {
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
  'long-polling handshakes': (url) => fetch(`${url}/socket.io/?EIO=4&transport=polling`),
  'long-polling posts to one session': async (url, i, state) => {
    state.sid ??= JSON.parse((await (await fetch(`${url}/socket.io/?EIO=4&transport=polling`)).text()).slice(1)).sid;
    return fetch(`${url}/socket.io/?EIO=4&transport=polling&sid=${state.sid}`, {
      method: 'POST',
      headers: { 'Content-Type': 'text/plain;charset=UTF-8' },
      body: i === 0 ? '40' : `42${JSON.stringify(['subscribe', `p-${i}`])}`,
    });
  },
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

/** The names `GET /metrics` lists under `metric`'s `label`. */
async function surface(metric, label) {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const pattern = new RegExp(`^twine_${metric}_total\\{${label}="([^"]+)"\\}`, 'gm');
  return [...text.matchAll(pattern)].map((m) => m[1]);
}

before(async () => {
  // The Admin UI's namespace is on, with a realistic bcrypt cost, its login flooded below.
  const admin = ['--admin', 'on', '--admin-username', 'operator', '--admin-password-hash', hashPassword('not guessed', 10)];
  server = await startTwine({ args: ['--demo', '--history-memory', '64MiB', ...admin] });
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
 * Runs `flood` for FLOOD_MS, then checks the bounds: memory during and after, CPU in the third
 * second after it stopped, and the other room's p99 during it.
 */
async function holds(t, what, flood) {
  const pid = server.proc.pid;
  let peak = rssMB(pid);
  const sampler = setInterval(() => (peak = Math.max(peak, rssMB(pid))), 20);
  const started = Date.now();
  const sent = await flood(started + FLOOD_MS);
  const p99 = probe.since(started);
  await sleep(2000);
  const cpuStart = cpuSeconds(pid);
  await sleep(1000);
  const cpu = cpuSeconds(pid) - cpuStart;
  clearInterval(sampler);
  const now = rssMB(pid);
  t.diagnostic(
    `${what}: ${sent} sent in ${FLOOD_MS} ms; RSS ${baseline.toFixed(0)} → peak ${peak.toFixed(0)} → ${now.toFixed(0)} MB; ` +
      `CPU ${(cpu * 100).toFixed(0)}% in the 3rd second after; other room p99 ${p99} ms`,
  );
  assert.ok(peak - baseline < MAX_GROWTH_MB, `${what}: RSS grew ${(peak - baseline).toFixed(0)} MB`);
  assert.ok(now - baseline < MAX_LEFT_OVER_MB, `${what}: RSS still ${(now - baseline).toFixed(0)} MB up after`);
  assert.ok(cpu < MAX_CPU_AFTER, `${what}: ${cpu} CPU-s in a second, 3 s after the flood`);
  assert.ok(p99 < MAX_OTHER_ROOM_P99_MS, `${what}: another room's p99 ${p99} ms`);
}

/** Floods from one raw socket subscribed to the crowd's room, sending in bursts until `until`. */
async function socketFlood(send, until) {
  const ws = await connectRaw(server);
  ws.on('error', () => {});
  ws.keep = false;
  ws.sendEvent('subscribe', 'crowd');
  let i = 0;
  while (Date.now() < until && ws.readyState === ws.OPEN) {
    for (let n = 0; n < 100; n++) send(ws, i++);
    await sleep(5);
  }
  ws.close();
  await closed(ws);
  return i;
}

/** Floods with `request` from 32 concurrent loops until `until`. */
async function httpFlood(request, until) {
  let i = 0;
  const state = {};
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      while (Date.now() < until) {
        const res = await request(server.url, i++, state).catch(() => null);
        await res?.arrayBuffer().catch(() => {});
      }
    }),
  );
  return i;
}

test('every event the server handles and every route it serves has a flood entry', async () => {
  const events = await surface('client_events', 'event');
  const routes = await surface('http_requests', 'route');
  assert.ok(events.includes('subscribe') && routes.includes('/api/twine'), 'the surface is listed');
  for (const event of events) assert.ok(EVENT_FLOODS[event], `the event ${event} has no flood entry here`);
  for (const route of routes) assert.ok(ROUTE_FLOODS[route], `the route ${route} has no flood entry here`);
});

for (const [event, send] of Object.entries(EVENT_FLOODS)) {
  test(`event flood: ${event}`, (t) => holds(t, event, (until) => socketFlood(send, until)));
}

for (const [route, request] of Object.entries({ ...ROUTE_FLOODS, ...ENGINE_FLOODS })) {
  test(`HTTP flood: ${route}`, (t) => holds(t, route, (until) => httpFlood(request, until)));
}
