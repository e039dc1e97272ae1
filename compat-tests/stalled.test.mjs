// A client whose connection is held floods every event the server handles. Its cookie session is
// in a room with a large backlog it never acknowledged, so when it reconnects (over a raw
// WebSocket) its replay is its first work; it then stops reading, the replay fills its send queue
// and waits, and everything it sends afterwards would wait behind it. It sends each event with
// the largest argument the event takes, as fast as its socket accepts, for a few seconds. The
// node's memory stays bounded during and after, its CPU is back near idle once the client has
// gone, and a client in another room keeps getting its messages in time. The same, for publishes,
// from two such clients that read for 20 ms every 2 s (so their replays never stall for good).
//
// The events come from the server itself (`twine_client_events_total{event}` on `GET /metrics`,
// from its one table of events): there is a test for each, so an event without an entry below
// has a test that fails. Each flood must have run: frames were sent, and the server counted some
// of them as its event.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { startTwine } from '../js-fixtures/server.mjs';
import { connect, fetchCookie, publish, subscribe, until, sleep } from '../js-fixtures/clients.mjs';
import { connectRaw, rssMB, cpuSeconds } from '../js-fixtures/raw.mjs';
import { floodFrames } from '../js-fixtures/hook-flood.mjs';
import { startLatencyProbe } from '../js-fixtures/latency-probe.mjs';

/** The backlog every held session has missed: 10,000 messages (the replay limit) of ~3 KB. */
const BACKLOG_ROOM = 'backlog';
const BACKLOG = 10_000;
const BACKLOG_BYTES = 3000;
/** How long each event is flooded; the variant that reads now and then runs longer. */
const FLOOD_MS = 4000;
const READING_FLOOD_MS = 8000;
const READ_EVERY_MS = 2000;
const READ_FOR_MS = 20;
/** The bounds every flood is held to (those of compat-tests/flood.test.mjs). */
const MAX_GROWTH_MB = 150;
const MAX_LEFT_OVER_MB = 60;
const MAX_CPU_AFTER = 0.15;
const MAX_OTHER_ROOM_P99_MS = 250;
/**
 * What each flooding socket must have written, unless the server closed it or stopped reading it
 * for half the flood: more events than the connection's burst (1,000) when its frames are small,
 * and many times what the socket buffers between the two processes hold, so the node itself read
 * them.
 */
const MIN_SMALL_FRAMES = 1100;
const MIN_LARGE_FRAMES = 60;
const MIN_MB = 64;

/**
 * An argument as large as a frame may carry under `--max-payload` (1,000,000 bytes): plain
 * letters, so it is its own JSON text inside quotes.
 */
const BIG = 'x'.repeat(990_000);
/** A Socket.IO EVENT packet of `event` with `arg` (JSON text) as its argument. */
const frame = (event, arg) => `42["${event}"${arg === undefined ? '' : `,${arg}`}]`;
/** A room name of the longest allowed length (256 bytes), distinct for each `i`. */
const longRoom = (i) => JSON.stringify(`${String(i).padStart(8, '0')}-${'r'.repeat(247)}`);
/** Presence data of exactly `--presence-max-data` (1 KiB) once encoded. */
const maxData = (i) => {
  const data = { i, pad: '' };
  data.pad = 'd'.repeat(1024 - JSON.stringify(data).length);
  return JSON.stringify(data);
};
const room = JSON.stringify(BACKLOG_ROOM);

/**
 * Per event, its flood: `valid(i)` is the event with the largest argument it takes as valid;
 * where that is small, every BIG_EVERY-th frame is instead `big(i)`, the event with an argument
 * as large as a frame may be, which must be refused as it is read without being kept.
 */
const BIG_EVERY = 16;
const STALLED_FLOODS = {
  subscribe: { valid: (i) => frame('subscribe', longRoom(i)), big: () => frame('subscribe', `"${BIG}"`) },
  unsubscribe: { valid: (i) => frame('unsubscribe', longRoom(i)), big: () => frame('unsubscribe', `"${BIG}"`) },
  updateSessionTS: { valid: (i) => frame('updateSessionTS', String(Date.now() + i)), big: () => frame('updateSessionTS', `"${BIG}"`) },
  stateRecovery: { valid: () => frame('stateRecovery'), big: () => frame('stateRecovery', `"${BIG}"`) },
  publish: { valid: (i) => frame('publish', `{"room_id":${room},"payload":{"i":${i},"pad":"${BIG}"},"id":"m-${i}"}`) },
  'presence:enter': {
    valid: (i) => frame('presence:enter', `{"room":${room},"data":${maxData(i)}}`),
    big: () => frame('presence:enter', `{"room":${room},"data":{"pad":"${BIG}"}}`),
  },
  'presence:update': {
    valid: (i) => frame(i === 0 ? 'presence:enter' : 'presence:update', `{"room":${room},"data":${maxData(i)}}`),
    big: () => frame('presence:update', `{"room":${room},"data":{"pad":"${BIG}"}}`),
  },
  'presence:leave': {
    valid: (i) => frame(i % 4 === 0 ? 'presence:enter' : 'presence:leave', `{"room":${room},"data":${maxData(i)}}`),
    big: () => frame('presence:leave', `{"room":${room},"data":{"pad":"${BIG}"}}`),
  },
  'presence:members': { valid: (i) => frame('presence:members', `{"room":${room},"after":"${i}${BIG}"}`) },
  other: { valid: (i) => frame(`made-up-${i % 1000}`, `{"pad":"${BIG}"}`) },
};
const frameAt = ({ valid, big }) => (i) => (big && i % BIG_EVERY === BIG_EVERY - 1 ? big(i) : valid(i));
/** The frames a flood must have written: more than the burst when they are small, else fewer. */
const minFrames = ({ valid }) => (valid(0).length < 64 * 1024 ? MIN_SMALL_FRAMES : MIN_LARGE_FRAMES);

let server;
let probe;

/** `twine_client_events_total` by event on `GET /metrics`. */
async function eventCounts() {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  return new Map([...text.matchAll(/^twine_client_events_total\{event="([^"]+)"\} (\S+)$/gm)].map((m) => [m[1], Number(m[2])]));
}
/** Cookies of sessions that are in the backlog room and missed all of it; one per held client. */
const cookies = [];

/** The sum of `name`'s samples on `GET /metrics`. */
async function metric(name) {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  let sum = 0;
  for (const [, value] of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'gm'))) sum += Number(value);
  return sum;
}

// The node starts as the file loads: the flood tests are made from the events it lists.
server = await startTwine();
const EVENTS = [...(await eventCounts()).keys()];

before(async () => {
  const sessions = EVENTS.length + 2;
  for (let n = 0; n < sessions; n++) {
    const cookie = await fetchCookie(server.url);
    const socket = await connect(server.url, { cookie });
    await subscribe(socket, BACKLOG_ROOM);
    socket.close();
    cookies.push(cookie);
  }
  await sleep(200);
  // The backlog, published while every session is away.
  const pad = 'b'.repeat(BACKLOG_BYTES);
  let next = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < BACKLOG) {
        const n = next++;
        const res = await publish(server, BACKLOG_ROOM, { n, pad });
        assert.equal(res.status, 201, `backlog message ${n}`);
      }
    }),
  );
  probe = await startLatencyProbe(server);
  await sleep(1000);
});

after(async () => {
  await probe?.stop();
  await server?.stop();
});

/**
 * `count` held clients: each reconnects with a session that missed the backlog and stops reading
 * at once. Resolves once their replays had time to fill what lies between them and the node.
 */
async function heldClients(count) {
  const held = [];
  for (let k = 0; k < count; k++) {
    const cookie = cookies.pop();
    assert.ok(cookie, 'a session left for this test');
    const ws = await connectRaw(server, { cookie });
    ws._socket.pause();
    ws.on('error', () => {});
    ws.keep = false;
    ws.replayed = 0;
    ws.read = 0;
    ws.on('message', (data) => {
      ws.read += data.length;
      if (data.subarray(0, 12).toString() === '42["message"') ws.replayed += 1;
    });
    held.push(ws);
  }
  await sleep(500);
  return held;
}

/**
 * Floods `flood`'s frames from `sockets` held clients for `ms` (reading for READ_FOR_MS every
 * READ_EVERY_MS when `reading`), then checks the bounds: memory during and after, CPU in the
 * third second after they left, the other room's p99 during the flood, that the connections were
 * held when it began, and that each flood sent what it should have (unless the node cut it or
 * stopped reading it).
 */
async function heldFlood(t, what, flood, { sockets = 1, ms = FLOOD_MS, reading = false, event = what } = {}) {
  const pid = server.proc.pid;
  const baseline = rssMB(pid);
  const countedBefore = (await eventCounts()).get(event) ?? 0;
  const replayedBefore = await metric('twine_messages_replayed_total');
  const held = await heldClients(sockets);
  const replayedAtStart = (await metric('twine_messages_replayed_total')) - replayedBefore;
  let peak = rssMB(pid);
  const sampler = setInterval(() => (peak = Math.max(peak, rssMB(pid))), 20);
  const reader = reading
    ? setInterval(() => {
        for (const ws of held) {
          ws._socket.resume();
          setTimeout(() => ws._socket.pause(), READ_FOR_MS);
        }
      }, READ_EVERY_MS)
    : null;
  const loop = monitorEventLoopDelay({ resolution: 5 });
  loop.enable();
  const started = Date.now();
  const results = await Promise.all(held.map((ws) => floodFrames(ws, frameAt(flood), { until: started + ms })));
  loop.disable();
  clearInterval(reader);
  const floodMs = Date.now() - started;
  const p99 = await probe.p99Since(started);
  const replayedAtEnd = (await metric('twine_messages_replayed_total')) - replayedBefore;
  const cut = held.map((ws) => ws.readyState !== ws.OPEN);
  for (const ws of held) ws.terminate();
  const counted = ((await eventCounts()).get(event) ?? 0) - countedBefore;
  await sleep(2000);
  const cpuStart = cpuSeconds(pid);
  await sleep(1000);
  const cpu = cpuSeconds(pid) - cpuStart;
  clearInterval(sampler);
  const now = rssMB(pid);
  const sent = results.map(
    (r) => `${r.frames} frames/${(r.bytes / 1e6).toFixed(0)} MB${r.closed ? ' (closed by the server)' : ''}${r.blockedMs ? `, held back ${r.blockedMs} ms` : ''}`,
  );
  t.diagnostic(
    `${what}: ${sockets} held client(s)${reading ? `, reading ${READ_FOR_MS} ms every ${READ_EVERY_MS} ms` : ''}; ` +
      `sent ${sent.join(', ')} in ${floodMs} ms, ${counted} counted as ${event} by the server; replayed to them ${replayedAtStart} of ${BACKLOG * sockets} before the flood, ` +
      `${replayedAtEnd} by its end (read by them ${held.map((ws) => `${ws.replayed} in ${(ws.read / 1e6).toFixed(1)} MB`).join(', ')}); cut during it ${cut.join(', ')}; ` +
      `RSS ${baseline.toFixed(0)} → peak ${peak.toFixed(0)} → ${now.toFixed(0)} MB; ` +
      `CPU ${(cpu * 100).toFixed(0)}% in the 3rd second after; other room p99 ${p99} ms ` +
      `(this process's event loop delay max ${(loop.max / 1e6).toFixed(0)} ms)`,
  );
  assert.ok(replayedAtStart < BACKLOG * sockets, `the replays were done before the flood began (${replayedAtStart} sent): no connection was held`);
  for (const r of results) {
    assert.ok(r.frames > 0, `${what}: the flood sent nothing`);
    assert.ok(
      r.closed || r.blockedMs >= ms / 2 || (r.frames >= minFrames(flood) && r.bytes >= MIN_MB * 1e6),
      `${what}: the flood sent only ${r.frames} frames, ${(r.bytes / 1e6).toFixed(0)} MB, and was neither cut nor held back by the node`,
    );
  }
  assert.ok(counted > 0, `${what}: the server counted none of the flood's frames as ${event}`);
  assert.ok(peak - baseline < MAX_GROWTH_MB, `${what}: RSS grew ${(peak - baseline).toFixed(0)} MB (${baseline.toFixed(0)} → ${peak.toFixed(0)})`);
  assert.ok(now - baseline < MAX_LEFT_OVER_MB, `${what}: RSS still ${(now - baseline).toFixed(0)} MB up after`);
  assert.ok(cpu < MAX_CPU_AFTER, `${what}: ${cpu} CPU-s in a second, 3 s after the flood`);
  assert.ok(p99 < MAX_OTHER_ROOM_P99_MS, `${what}: another room's p99 ${p99} ms`);
}

test('every event the server handles has a flood from a held connection, whose frames a connection may send', async () => {
  assert.ok(EVENTS.includes('publish'), 'the events are listed');
  for (const event of EVENTS) assert.ok(STALLED_FLOODS[event], `the event ${event} has no held-connection flood here`);
  // Each flood's frames, sent on a connection that reads, are taken as events (refused or not)
  // and the connection stays: a held client cut during its flood was cut for flooding.
  for (const [event, flood] of Object.entries(STALLED_FLOODS)) {
    const ws = await connectRaw(server);
    try {
      for (let i = 0; i < BIG_EVERY; i++) {
        const text = frameAt(flood)(i);
        assert.ok(text.length < 1_000_000, `${event} frame ${i} is ${text.length} bytes`);
        assert.ok(Array.isArray(JSON.parse(text.slice(2))), `${event} frame ${i} is an event`);
        ws.send(text);
      }
      const marker = `after-${event}`;
      ws.sendEvent('subscribe', marker);
      await until(() => ws.events.some(([name, data]) => name === 'roomJoined' && data.endsWith(marker)), 5000, `${event}: the events after its frames`);
      assert.equal(ws.readyState, ws.OPEN, `${event}: the connection stayed`);
    } finally {
      ws.close();
    }
  }
});

// A test for each event the server lists: one without an entry above fails.
for (const event of EVENTS) {
  test(`held connection floods: ${event}`, (t) => {
    assert.ok(STALLED_FLOODS[event], `the event ${event} has no held-connection flood here`);
    return heldFlood(t, event, STALLED_FLOODS[event]);
  });
}

test('held connections reading 20 ms every 2 s flood publishes for 8 s', (t) =>
  heldFlood(t, 'publish, reading now and then', STALLED_FLOODS.publish, { sockets: 2, ms: READING_FLOOD_MS, reading: true, event: 'publish' }));
