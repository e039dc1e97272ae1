// Each backend hook under a flood of anonymous clients the backend refuses, against the release
// binary and a real backend in its own process (js-fixtures/hook-flood.mjs) that takes 100 ms
// per answer: a legitimate client, which the backend allows, still gets its connects, subscribes
// and publishes answered in time. And what one client can make a hook cost: CONNECTs re-sent as
// fast as they are refused, an `auth` as large as a frame, and big publishes queued behind its
// own slow-hooked ones.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startTwine as startNode } from '../js-fixtures/server.mjs';
import { io, connect, fetchCookie, sleep } from '../js-fixtures/clients.mjs';
import { connectRaw, rssMB, cpuSeconds } from '../js-fixtures/raw.mjs';
import { startGatekeeper, rawFlood, floodFrames, HOOK_BODY_LIMIT } from '../js-fixtures/hook-flood.mjs';

const SECRET = 'hook-secret-for-the-flood-tests';
/** The backend's time per answer. */
const BACKEND_MS = 100;
/** The flooders: anonymous raw sockets, one loopback address each. */
const FLOODERS = 300;
/** How long the legitimate client tries while the flood runs, and how often. */
const LEGIT_MS = 5000;
const LEGIT_EVERY_MS = 200;
/** A legitimate attempt counts when answered within this (the backend alone takes 100 ms). */
const ANSWER_MS = 1000;
const ANSWER_WAIT_MS = 3000;
const MIN_ANSWERED = 0.8;
/** What one flooding or legitimate request of each hook is called in messages. */
const REQUESTS = { connect: 'CONNECTs', subscribe: 'subscribes', publish: 'publishes' };

/** A node that stops at once when the test ends (no drain: nothing here tests it). */
const startTwine = ({ args = [], ...options } = {}) =>
  startNode({ args: ['--drain-delay', '0s', '--drain-period', '0s', ...args], ...options });

/** A gatekeeping backend and a node with `hooks` pointed at it; both stopped after the test. */
async function setup(t, hooks, { delay = BACKEND_MS, args = [] } = {}) {
  const backend = await startGatekeeper({ secret: SECRET, delay });
  const flags = ['--hook-secret', SECRET];
  for (const hook of hooks) flags.push(`--${hook}-hook-url`, `${backend.url}/${hook}`);
  if (hooks.includes('publish')) flags.push('--client-publish', 'hook');
  const server = await startTwine({ args: [...flags, ...args] });
  t.after(async () => {
    await server.stop();
    await backend.stop();
  });
  return { backend, server };
}

/** A cookie whose session the backend allows. */
async function legitCookie(server, backend) {
  const cookie = await fetchCookie(server.url);
  await backend.allow(cookie.split('=')[1]);
  return cookie;
}

/**
 * Runs `attempt(k)` every LEGIT_EVERY_MS (one at a time) for LEGIT_MS; each resolves to an
 * outcome string, 'ok' when it got what it asked. Resolves to [{ outcome, ms }].
 */
async function legitimate(attempt) {
  const results = [];
  const end = Date.now() + LEGIT_MS;
  while (Date.now() < end && results.length < 100) {
    const started = Date.now();
    const outcome = await attempt(results.length).catch((e) => `failed: ${e.message}`);
    results.push({ outcome, ms: Date.now() - started });
    await sleep(Math.max(0, started + LEGIT_EVERY_MS - Date.now()));
  }
  return results;
}

/** How many of `results` were answered 'ok' within ANSWER_MS, and a summary of the rest. */
function tally(results) {
  const answered = results.filter((r) => r.outcome === 'ok' && r.ms <= ANSWER_MS).length;
  const outcomes = {};
  for (const r of results) {
    const key = r.outcome === 'ok' && r.ms > ANSWER_MS ? `ok after more than ${ANSWER_MS} ms` : r.outcome;
    outcomes[key] = (outcomes[key] ?? 0) + 1;
  }
  const times = results.map((r) => r.ms).sort((a, b) => a - b);
  return { answered, of: results.length, outcomes, median: times[Math.floor(times.length / 2)], max: times.at(-1) };
}

/** Resolves to the first of `socket.events` after `from` that `match` maps to an outcome. */
async function nextAnswer(socket, from, match, ms = ANSWER_WAIT_MS) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    for (const e of socket.events.slice(from)) {
      const outcome = match(e);
      if (outcome) return outcome;
    }
    await sleep(5);
  }
  return 'no answer';
}

/**
 * Floods `mode` from FLOODERS sockets while the legitimate client makes its attempts; checks that
 * the flood ran and reached the backend, and that the legitimate client was answered in time.
 */
async function underFlood(t, { server, backend, hook, mode, attempt, floodOptions = {} }) {
  await backend.reset();
  const flood = rawFlood(server.port, { mode, sockets: FLOODERS, ms: LEGIT_MS + 500, ...floodOptions });
  const opened = await flood.flooding;
  const results = await legitimate(attempt);
  const summary = await flood.done;
  const stats = await backend.stats();
  const legit = tally(results);
  t.diagnostic(
    `${hook} hook, ${BACKEND_MS} ms per answer, under ${summary.opened} anonymous sockets (${JSON.stringify(opened.failed)} not opened) ` +
      `sending ${summary.sent} ${REQUESTS[mode]} in ${summary.ms} ms (refused ${summary.refused}, ` +
      `error events ${summary.errors}, closed ${summary.closed}); backend: ${JSON.stringify(stats[hook])}; ` +
      `legitimate client: ${legit.answered} of ${legit.of} answered within ${ANSWER_MS} ms ${JSON.stringify(legit.outcomes)}, ` +
      `median ${legit.median} ms, max ${legit.max} ms`,
  );
  assert.ok(summary.opened >= FLOODERS * 0.95, `only ${summary.opened} flooders opened`);
  // A flood ran if it sent what it meant to, or the node closed its sockets for it.
  assert.ok(
    summary.sent >= FLOODERS * 10 || summary.closed >= FLOODERS * 0.95,
    `the flood sent only ${summary.sent}, and the node closed ${summary.closed} of its sockets`,
  );
  assert.ok(stats[hook].refused >= 500, `the flood reached the backend ${stats[hook].refused} times`);
  assert.ok(legit.of >= 10, `only ${legit.of} legitimate attempts`);
  assert.ok(
    legit.answered >= legit.of * MIN_ANSWERED,
    `the legitimate client got ${legit.answered} of ${legit.of} ${REQUESTS[hook]} answered within ${ANSWER_MS} ms: ${JSON.stringify(legit.outcomes)}`,
  );
}

test('subscribe hook: 300 sockets asking for rooms the backend refuses do not crowd out an allowed client', async (t) => {
  const { backend, server } = await setup(t, ['subscribe']);
  const socket = await connect(server.url, { cookie: await legitCookie(server, backend), transports: ['websocket'] });
  t.after(() => socket.close());
  await underFlood(t, {
    server,
    backend,
    hook: 'subscribe',
    mode: 'subscribe',
    async attempt(k) {
      const room = `legit-${k}`;
      const from = socket.events.length;
      socket.emit('subscribe', room);
      return nextAnswer(socket, from, (e) => {
        if (e.event === 'roomJoined' && e.data === `You have joined room: ${room}`) return 'ok';
        if (e.event === 'error' && e.data?.event === 'subscribe') return `refused: ${e.data.message}`;
        return null;
      });
    },
  });
});

test('publish hook: 300 sockets publishing what the backend refuses do not crowd out an allowed client', async (t) => {
  const { backend, server } = await setup(t, ['publish']);
  const socket = await connect(server.url, { cookie: await legitCookie(server, backend), transports: ['websocket'] });
  t.after(() => socket.close());
  await underFlood(t, {
    server,
    backend,
    hook: 'publish',
    mode: 'publish',
    floodOptions: { room: 'chat', bytes: 1000 },
    async attempt(k) {
      const ack = await socket
        .timeout(ANSWER_WAIT_MS)
        .emitWithAck('publish', { room_id: 'legit-chat', payload: { k }, id: `legit-${k}` })
        .catch(() => ({ ok: false, reason: 'no answer' }));
      return ack.ok ? 'ok' : `refused: ${ack.reason}`;
    },
  });
});

test('connect hook: 300 sockets re-sending CONNECTs the backend refuses do not crowd out an allowed client', async (t) => {
  const { backend, server } = await setup(t, ['connect']);
  const cookie = await legitCookie(server, backend);
  await underFlood(t, {
    server,
    backend,
    hook: 'connect',
    mode: 'connect',
    attempt() {
      const socket = io(server.url, { forceNew: true, reconnection: false, transports: ['websocket'], extraHeaders: { Cookie: cookie } });
      return new Promise((resolve) => {
        const done = (outcome) => {
          clearTimeout(timer);
          socket.close();
          resolve(outcome);
        };
        const timer = setTimeout(() => done('no answer'), ANSWER_WAIT_MS);
        socket.once('connect', () => done('ok'));
        socket.once('connect_error', (e) => done(`refused: ${e.message}`));
      });
    },
  });
});

test('CONNECTs re-sent as fast as they are refused are rate limited: the node spends under a quarter of a core', async (t) => {
  // One client (one address, 20 sockets, 16 CONNECTs outstanding on each) against a hook whose
  // one place (--hook-max-in-flight 1) is taken by a CONNECT the backend answers in 1 s: the
  // others are refused at once, without a call, and each is re-sent as soon as it is refused.
  const FLOOD_MS = 3000;
  const MAX_CORE = 0.25;
  const { backend, server } = await setup(t, ['connect'], { delay: 1000, args: ['--hook-max-in-flight', '1'] });
  await sleep(500);
  const pid = server.proc.pid;
  const flood = rawFlood(server.port, { mode: 'connect', sockets: 20, depth: 16, address: '127.0.0.9', ms: FLOOD_MS });
  await flood.flooding;
  const cpuStart = cpuSeconds(pid);
  const started = Date.now();
  const summary = await flood.done;
  const cpu = (cpuSeconds(pid) - cpuStart) / ((Date.now() - started) / 1000);
  const stats = await backend.stats();
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  const busy = Number(metrics.match(/^twine_hook_calls_total\{hook="connect",outcome="busy"\} (\S+)$/m)?.[1] ?? 0);
  t.diagnostic(
    `one client re-sending refused CONNECTs on ${summary.opened} sockets for ${summary.ms} ms: ${summary.sent} sent ` +
      `(${Math.round(summary.sent / (summary.ms / 1000))}/s), ${summary.refused} refusals, ${summary.closed} sockets closed; ` +
      `refused as busy ${busy}; backend calls ${stats.connect.calls}; node CPU ${(cpu * 100).toFixed(0)}% of a core`,
  );
  assert.equal(summary.opened, 20, 'every socket opened its Engine.IO session');
  assert.ok(summary.sent >= 320 && (summary.refused >= 1 || summary.closed > 0), `the flood sent ${summary.sent} and was answered ${summary.refused} times`);
  assert.ok(cpu < MAX_CORE, `the node spent ${(cpu * 100).toFixed(0)}% of a core answering one client's CONNECTs`);
});

test('the connect hook is never sent more than 64 KiB: an auth as large as a frame is refused or cut before it', async (t) => {
  const SOCKETS = 20;
  const FLOOD_MS = 3000;
  const { backend, server } = await setup(t, ['connect']);
  const flood = rawFlood(server.port, { mode: 'connect', sockets: SOCKETS, ms: FLOOD_MS, authBytes: 990_000 });
  await flood.flooding;
  const summary = await flood.done;
  await sleep(500); // calls still in flight reach the backend
  const stats = await backend.stats();
  t.diagnostic(
    `${summary.opened} clients re-sending a CONNECT with a 990 KB auth for ${summary.ms} ms: ${summary.sent} sent, ${summary.refused} refused, ` +
      `${summary.connected} connected, ${summary.closed} closed by the node; backend: ${stats.connect.calls} calls, ` +
      `${(stats.connect.bytes / 1e6).toFixed(1)} MB, largest body ${stats.connect.maxBody} bytes, ${stats.connect.overLimit} over 64 KiB`,
  );
  assert.equal(summary.opened, SOCKETS);
  assert.ok(summary.sent >= SOCKETS, `only ${summary.sent} CONNECTs sent`);
  assert.ok(summary.refused + summary.connected + summary.closed >= SOCKETS, 'every CONNECT was answered or its socket closed');
  assert.equal(stats.connect.overLimit, 0, `${stats.connect.overLimit} connect hook calls carried over 64 KiB (largest ${stats.connect.maxBody} bytes)`);
  assert.ok(stats.connect.maxBody <= HOOK_BODY_LIMIT, `a connect hook body of ${stats.connect.maxBody} bytes`);
});

test("big publishes queued behind a client's own slow-hooked publishes are not held: memory stays bounded", async (t) => {
  const FLOOD_MS = 4000;
  const SOCKETS = 2;
  const { backend, server } = await setup(t, ['publish'], { delay: { connect: 0, subscribe: 0, publish: 1500 } });
  await sleep(500);
  const pid = server.proc.pid;
  const baseline = rssMB(pid);
  let peak = baseline;
  const sampler = setInterval(() => (peak = Math.max(peak, rssMB(pid))), 20);
  const sockets = await Promise.all(Array.from({ length: SOCKETS }, () => connectRaw(server)));
  const big = 'x'.repeat(990_000);
  // Every eighth publish is within --client-publish-max-bytes and waits 1.5 s for the hook; the
  // others carry as much as a frame may.
  const frameAt = (i) => `42["publish",{"room_id":"chat","payload":{"i":${i},"pad":"${i % 8 === 0 ? 'small' : big}"}}]`;
  for (const ws of sockets) {
    ws.on('error', () => {});
    ws.keep = false;
  }
  const started = Date.now();
  const results = await Promise.all(sockets.map((ws) => floodFrames(ws, frameAt, { until: started + FLOOD_MS })));
  const during = peak;
  for (const ws of sockets) ws.terminate();
  await sleep(2000);
  clearInterval(sampler);
  const now = rssMB(pid);
  const stats = await backend.stats();
  t.diagnostic(
    `${SOCKETS} clients, publish hook taking 1.5 s: sent ${results.map((r) => `${r.frames} frames/${(r.bytes / 1e6).toFixed(0)} MB${r.closed ? ' (closed by the node)' : ''}${r.blockedMs ? `, held back ${r.blockedMs} ms` : ''}`).join(', ')}; ` +
      `backend publish calls ${stats.publish.calls}; RSS ${baseline.toFixed(0)} → peak ${during.toFixed(0)} → ${now.toFixed(0)} MB`,
  );
  assert.ok(stats.publish.calls >= 1, 'the publish hook was asked');
  for (const r of results) {
    assert.ok(
      r.closed || r.blockedMs >= FLOOD_MS / 2 || (r.frames >= 60 && r.bytes >= 64e6),
      `the flood sent only ${r.frames} frames, ${(r.bytes / 1e6).toFixed(0)} MB, and was neither cut nor held back by the node`,
    );
  }
  assert.ok(during - baseline < 150, `RSS grew ${(during - baseline).toFixed(0)} MB (${baseline.toFixed(0)} → ${during.toFixed(0)})`);
  assert.ok(now - baseline < 60, `RSS still ${(now - baseline).toFixed(0)} MB up after`);
});
