// The app's backend in the loop (`--connect-hook-url`, `--subscribe-hook-url`,
// `--publish-hook-url`) and clients publishing (`--client-publish`), end to end: the release
// binary against a real HTTP backend (js-fixtures/backend.mjs) that checks every call's
// `Twine-Signature`, with stock socket.io-client, the unchanged twine-client-library and raw
// WebSockets as clients.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { spawn } from 'node:child_process';
import { startTwine as startNode, runTwine } from '../js-fixtures/server.mjs';
import { io, connect, fetchCookie, publish, subscribe, until, untilEvent, sleep } from '../js-fixtures/clients.mjs';
import { rssMB } from '../js-fixtures/raw.mjs';
import { startBackend, closedPortUrl, sign } from '../js-fixtures/backend.mjs';

const fixtures = createRequire(new URL('../js-fixtures/package.json', import.meta.url));
const loadLibrary = async () => (await import(fixtures.resolve('twine-client-library'))).default;

const SECRET = 'hook-secret-for-the-tests';

/** A node that stops at once when the test ends (no drain: nothing here tests it). */
const startTwine = ({ args = [], ...options } = {}) =>
  startNode({ args: ['--drain-delay', '0s', '--drain-period', '0s', ...args], ...options });
const COULD_NOT_ASK = 'the app could not be asked; retry later';

/** `--<hook>-hook-url` flags for `hooks` on `backend` (and `--client-publish hook` with publish). */
function hookArgs(backend, hooks, { secret = SECRET } = {}) {
  const args = ['--hook-secret', secret];
  for (const hook of hooks) args.push(`--${hook}-hook-url`, `${backend.url}/${hook}`);
  if (hooks.includes('publish')) args.push('--client-publish', 'hook');
  return args;
}

/** A backend with `modes` and a node with `args(backend)`; both stopped after the test. */
async function setup(t, { modes = {}, args = () => [] } = {}) {
  const backend = await startBackend({ secret: SECRET, modes });
  const server = await startTwine({ args: args(backend) });
  t.after(async () => {
    await server.stop();
    await backend.stop();
  });
  return { backend, server };
}

/** Every call the backend got was signed with the secret, within 60 s of now. */
function assertSigned(backend) {
  assert.ok(backend.calls.length > 0, 'the backend was called');
  assert.deepEqual(backend.badSignatures().map((c) => c.signature.why), [], 'no call failed its signature check');
  for (const call of backend.calls) {
    assert.ok(call.signature?.ok, `${call.hook} call signed`);
    assert.ok(call.signature.skew < 60, `${call.hook} call signed ${call.signature.skew} s away from now`);
  }
}

/**
 * A socket.io-client that records what it gets (`messages`, `events`, `errors` for
 * connect_error) and acknowledges messages; not awaited. `options` go to io().
 */
function client(t, url, { cookie, headers = {}, ...options } = {}) {
  const socket = io(url, {
    forceNew: true,
    reconnection: false,
    ...options,
    extraHeaders: { ...(cookie ? { Cookie: cookie } : {}), ...headers },
  });
  socket.messages = [];
  socket.events = [];
  socket.errors = [];
  socket.connects = 0;
  socket.on('connect', () => (socket.connects += 1));
  socket.on('connect_error', (e) => socket.errors.push(e.message));
  socket.on('message', (m) => {
    socket.messages.push(m);
    socket.emit('updateSessionTS', m.timestamp);
  });
  for (const event of ['roomJoined', 'roomLeft', 'error']) socket.on(event, (data) => socket.events.push({ event, data }));
  t.after(() => socket.close());
  return socket;
}

/** `client` resolved once connected (rejects with the connect_error). */
function connected(t, url, options) {
  const socket = client(t, url, options);
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', reject);
  });
}

/** The connect_error a client gets, with its socket (rejects if it connects). */
function refused(t, url, options, ms = 5000) {
  const socket = client(t, url, options);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('neither connected nor refused')), ms);
    socket.once('connect', () => reject(new Error('connected, expected a refusal')));
    socket.once('connect_error', (e) => {
      clearTimeout(timer);
      resolve({ socket, message: e.message });
    });
  });
}

const joinedRooms = (socket) =>
  socket.events.filter((e) => e.event === 'roomJoined').map((e) => e.data.replace('You have joined room: ', ''));
const errorsOf = (socket, event) => socket.events.filter((e) => e.event === 'error' && e.data.event === event).map((e) => e.data.message);

/** Sum of `metric` lines of GET /metrics whose labels include `labels`. */
async function metric(server, name, labels = {}) {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  let sum = 0;
  for (const [, labelText, value] of text.matchAll(new RegExp(`^${name}(?:\\{([^}]*)\\})? (\\S+)$`, 'gm'))) {
    const have = Object.fromEntries([...(labelText ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum += Number(value);
  }
  return sum;
}
const hookCalls = (server, hook, outcome) => metric(server, 'twine_hook_calls_total', { hook, outcome });

/** GET /api/rooms/{room}/messages with the API key. */
async function history(server, room) {
  const res = await fetch(`${server.url}/api/rooms/${encodeURIComponent(room)}/messages`, {
    headers: { Authorization: server.apiKey },
  });
  assert.equal(res.status, 200);
  return (await res.json()).messages;
}

/**
 * Publishes a marker over HTTP to `room` and waits until every socket got it: whatever should
 * have reached them before it has, so "nothing else arrived" is a fact, not a sleep.
 */
async function fence(server, room, sockets) {
  const marker = `fence-${Math.random()}`;
  assert.equal((await publish(server, room, { marker })).status, 201);
  await until(() => sockets.every((s) => s.messages.some((m) => m.marker === marker)), 5000, `fence in ${room}`);
}
const withoutFences = (messages) => messages.filter((m) => !m.marker?.startsWith('fence-'));
const strip = ({ timestamp, room, ...payload }) => payload;

/** Runs `fn` while collecting what is printed with console.log (as the library prints). */
async function printed(fn) {
  const lines = [];
  const original = console.log;
  console.log = (...args) => lines.push(args.join(' '));
  try {
    await fn(lines);
  } finally {
    console.log = original;
  }
  return lines;
}

const twineidOf = (cookie) => cookie.split('=')[1];

// --- connect hook ---------------------------------------------------------------------------

test('connect hook allows with rooms and a user: joined at once, delivered, backend saw the handshake', async (t) => {
  const { backend, server } = await setup(t, {
    modes: { connect: { mode: 'rooms', rooms: ['lobby', 'alerts'], user: (body) => `user-${body.auth?.user}` } },
    args: (b) => hookArgs(b, ['connect', 'subscribe']),
  });
  const cookie = await fetchCookie(server.url);
  const auth = { token: 'app-session-1', user: 'ann', nested: { n: 1 } };
  const headers = { Origin: 'http://app.example', 'User-Agent': 'hooks-test/1.0' };
  const socket = await connected(t, server.url, { cookie, headers, auth, transports: ['websocket'] });
  await until(() => joinedRooms(socket).length === 2, 3000, 'roomJoined for both rooms');
  assert.deepEqual(joinedRooms(socket), ['lobby', 'alerts']);

  assert.equal((await publish(server, 'alerts', { text: 'fire drill' })).status, 201);
  await until(() => socket.messages.length === 1, 3000, 'the alert');
  assert.equal(socket.messages[0].text, 'fire drill');
  assert.equal(socket.messages[0].room, 'alerts');

  const calls = backend.callsOf('connect');
  assert.equal(calls.length, 1);
  const { body } = calls[0];
  assert.equal(body.twineid, twineidOf(cookie));
  assert.deepEqual(body.auth, auth);
  assert.ok(body.headers.cookie.includes(cookie), body.headers.cookie);
  assert.equal(body.headers.origin, 'http://app.example');
  assert.equal(body.headers['user-agent'], 'hooks-test/1.0');
  assert.equal(body.headers['x-forwarded-for'], null);
  assert.equal(body.address, '127.0.0.1');
  assert.equal(backend.callsOf('subscribe').length, 0, 'rooms the connect hook named are not asked of the subscribe hook');

  // The session keeps them: a reconnect with the cookie has them back (the hook naming them
  // again joins nothing twice), and the user goes to the subscribe hook.
  socket.close();
  const again = await connected(t, server.url, { cookie, auth });
  await until(() => joinedRooms(again).length >= 2, 3000, 'rooms back');
  again.emit('subscribe', 'more');
  await untilEvent(again, 'roomJoined', 'You have joined room: more');
  await sleep(100);
  assert.deepEqual(joinedRooms(again).sort(), ['alerts', 'lobby', 'more']);
  assert.equal(backend.callsOf('connect').length, 2);
  assert.deepEqual(backend.callsOf('subscribe').map((c) => c.body), [{ twineid: twineidOf(cookie), user: 'user-ann', room: 'more' }]);
  assertSigned(backend);
});

test('connect hook refuses: socket.io-client gets the reason once and does not retry; the library stays bounded', async (t) => {
  const reason = 'not signed in: log in first';
  const { backend, server } = await setup(t, {
    modes: { connect: { mode: 'refuse', reason } },
    args: (b) => hookArgs(b, ['connect']),
  });
  const cookie = await fetchCookie(server.url);
  // Stock client with its default reconnection on.
  const socket = client(t, server.url, { cookie, reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 200 });
  await until(() => socket.errors.length === 1, 3000, 'connect_error');
  assert.equal(socket.errors[0], reason);
  await sleep(3000);
  assert.equal(socket.errors.length, 1, 'no second attempt');
  assert.equal(socket.connects, 0);
  assert.equal(backend.callsOf('connect').length, 1, 'exactly one connect call in 3 s');
  socket.close();

  // The unchanged twine-client-library, same situation.
  const TwineClientLibrary = await loadLibrary();
  const before = backend.callsOf('connect').length;
  const seen = { connectErrors: [], connects: 0, disconnects: 0, callbacks: 0 };
  let library;
  const started = Date.now();
  const lines = await printed(async () => {
    library = new TwineClientLibrary(server.url);
    t.after(() => library.disconnect());
    // Checked every turn of the event loop, so the listeners below are on before any packet.
    const deadline = Date.now() + 3000;
    while (!library.socket && Date.now() < deadline) await new Promise((r) => setImmediate(r));
    assert.ok(library.socket, 'the library made its socket');
    library.socket.on('connect_error', (e) => seen.connectErrors.push(e.message));
    library.socket.on('connect', () => (seen.connects += 1));
    library.socket.on('disconnect', () => (seen.disconnects += 1));
    library.subscribe('lib-refused');
    library.listenOn('lib-refused', () => (seen.callbacks += 1));
    await sleep(1000);
    assert.equal((await publish(server, 'lib-refused', { n: 1 })).status, 201);
    await sleep(2000);
  });
  const calls = backend.callsOf('connect').slice(before);
  const seconds = (Date.now() - started) / 1000;
  const perSecond = Math.max(0, ...calls.map((c) => calls.filter((d) => d.at >= c.at && d.at < c.at + 1000).length));
  t.diagnostic(
    `twine-client-library refused at connect: printed ${JSON.stringify(lines)}; connect_error ${JSON.stringify(seen.connectErrors)}; ` +
      `connects ${seen.connects}; socket.active ${library.socket.active}; ${calls.length} connect hook calls in ${seconds.toFixed(1)} s ` +
      `(most in one second ${perSecond}); listenOn callbacks ${seen.callbacks}`,
  );
  assert.equal(seen.connects, 0);
  assert.equal(seen.callbacks, 0, 'nothing reached the app');
  assert.ok(!lines.some((l) => l.includes('joined room')), 'nothing joined');
  assert.ok(perSecond <= 5, `the library asked the hook ${perSecond} times in one second`);
  assert.ok(calls.length <= 10, `${calls.length} connect calls in ${seconds} s`);
  assert.equal(await metric(server, 'twine_connections'), 0);
  assertSigned(backend);
});

test('a connect hook call signed with another secret is refused by the backend and fails the connect', async (t) => {
  const { backend, server } = await setup(t, {
    args: (b) => hookArgs(b, ['connect'], { secret: 'not-the-backends-secret' }),
  });
  const { message } = await refused(t, server.url, {});
  assert.equal(message, COULD_NOT_ASK);
  assert.equal(backend.badSignatures().length, 1, 'the backend caught the bad signature');
  assert.equal(await hookCalls(server, 'connect', 'garbled'), 1, 'a 401 counts as garbled');
  // The header is the documented scheme keyed by the node's secret: only the key was wrong.
  const call = backend.calls[0];
  assert.match(call.headers['twine-signature'], /^t=\d+,v1=[0-9a-f]{64}$/);
  const t0 = Number(call.headers['twine-signature'].match(/t=(\d+)/)[1]);
  assert.equal(sign('not-the-backends-secret', call.raw, t0), call.headers['twine-signature']);
});

// --- subscribe hook -------------------------------------------------------------------------

test('subscribe hook refuses: error event, no roomJoined, not kept by the session; the library in that case', async (t) => {
  const reason = 'members only';
  const { backend, server } = await setup(t, {
    modes: { subscribe: (body) => (body.room === 'secret' ? { allow: false, reason } : { allow: true }) },
    args: (b) => hookArgs(b, ['subscribe']),
  });
  const cookie = await fetchCookie(server.url);
  const socket = await connected(t, server.url, { cookie });
  await subscribe(socket, 'open');
  socket.emit('subscribe', 'secret');
  await until(() => errorsOf(socket, 'subscribe').length === 1, 3000, 'the refusal');
  assert.deepEqual(socket.events.find((e) => e.event === 'error').data, { event: 'subscribe', message: reason });
  assert.deepEqual(joinedRooms(socket), ['open']);
  assert.equal((await publish(server, 'secret', { n: 'live' })).status, 201);
  await fence(server, 'open', [socket]);
  assert.deepEqual(withoutFences(socket.messages), []);

  // Away, then back with the cookie: the refused room is not the session's.
  socket.close();
  assert.equal((await publish(server, 'secret', { n: 'missed-secret' })).status, 201);
  assert.equal((await publish(server, 'open', { n: 'missed-open' })).status, 201);
  const back = await connected(t, server.url, { cookie });
  await until(() => back.messages.some((m) => m.n === 'missed-open'), 3000, 'the open room replayed');
  assert.equal((await publish(server, 'secret', { n: 'live-again' })).status, 201);
  await fence(server, 'open', [back]);
  assert.deepEqual(joinedRooms(back), ['open']);
  assert.deepEqual(withoutFences(back.messages).map((m) => m.n), ['missed-open']);
  assert.deepEqual(
    backend.callsOf('subscribe').map((c) => [c.body.room, c.body.user, c.body.twineid]),
    [['open', null, twineidOf(cookie)], ['secret', null, twineidOf(cookie)]],
    'asked once per room; nothing asked on the reconnect',
  );

  // The unchanged twine-client-library.
  const TwineClientLibrary = await loadLibrary();
  const seen = { errors: [], secret: [], open: [] };
  let library;
  const lines = await printed(async () => {
    library = new TwineClientLibrary(server.url);
    t.after(() => library.disconnect());
    await until(() => library.socket?.connected, 5000, 'the library connected');
    library.socket.on('error', (e) => seen.errors.push(e)); // an observer; the library has none
    library.subscribe('secret');
    library.listenOn('secret', (p) => seen.secret.push(p));
    library.subscribe('open');
    library.listenOn('open', (p) => seen.open.push(p));
    await until(() => library.socket.listeners('message').length === 2, 3000, 'listenOn attached');
    await until(() => seen.errors.length === 1, 3000, 'the refusal reached the socket');
    await sleep(200);
    assert.equal((await publish(server, 'secret', { n: 'for-the-library' })).status, 201);
    assert.equal((await publish(server, 'open', { n: 'open-for-the-library' })).status, 201);
    await until(() => seen.open.length === 1, 3000, 'the open room reaches the library');
    await sleep(300);
  });
  t.diagnostic(
    `twine-client-library subscribe refused: printed ${JSON.stringify(lines)}; error events ${JSON.stringify(seen.errors)}; ` +
      `listenOn('secret') callbacks ${seen.secret.length}; listenOn('open') callbacks ${seen.open.length}; still connected ${library.socket.connected}`,
  );
  assert.deepEqual(seen.errors, [{ event: 'subscribe', message: reason }]);
  assert.equal(seen.secret.length, 0);
  assert.ok(library.socket.connected, 'the refusal does not disconnect the library');
  assert.ok(lines.includes('You have joined room: open') && !lines.includes('You have joined room: secret'), lines.join('\n'));
  assertSigned(backend);
});

test('subscribe hook allows: normal delivery, and the hook gets the user the connect hook named', async (t) => {
  const { backend, server } = await setup(t, {
    modes: { connect: { mode: 'rooms', rooms: [], user: 'ann' }, subscribe: 'allow' },
    args: (b) => hookArgs(b, ['connect', 'subscribe']),
  });
  const cookie = await fetchCookie(server.url);
  const socket = await connected(t, server.url, { cookie });
  await subscribe(socket, 'news');
  assert.equal((await publish(server, 'news', { headline: 'hello' })).status, 201);
  await until(() => socket.messages.length === 1, 3000, 'the news');
  assert.equal(socket.messages[0].headline, 'hello');
  // Subscribing again to a room it is in asks nothing.
  await subscribe(socket, 'news');
  assert.deepEqual(backend.callsOf('subscribe').map((c) => c.body), [{ twineid: twineidOf(cookie), user: 'ann', room: 'news' }]);
  assert.equal(await hookCalls(server, 'subscribe', 'allowed'), 1);
  assertSigned(backend);
});

// --- publish hook ---------------------------------------------------------------------------

test('publish hook allows: stored and delivered as published; the hook saw who and what', async (t) => {
  const { backend, server } = await setup(t, {
    modes: { connect: { mode: 'rooms', rooms: [], user: 'bob' }, publish: 'allow' },
    args: (b) => hookArgs(b, ['connect', 'publish']),
  });
  const listener = await connect(server.url);
  await subscribe(listener, 'chat');
  const cookie = await fetchCookie(server.url);
  const publisher = await connected(t, server.url, { cookie });
  const ack = await publisher.timeout(3000).emitWithAck('publish', { room_id: 'chat', payload: { text: 'hi all', n: 1 } });
  assert.equal(ack.ok, true, JSON.stringify(ack));
  assert.equal(ack.repeated, false);
  await until(() => listener.messages.length === 1, 3000, 'the message');
  assert.deepEqual(listener.messages[0], { text: 'hi all', n: 1, timestamp: ack.timestamp, room: 'chat' });
  assert.deepEqual(
    backend.callsOf('publish').map((c) => c.body),
    [{ twineid: twineidOf(cookie), user: 'bob', room: 'chat', payload: { text: 'hi all', n: 1 } }],
  );
  assert.deepEqual((await history(server, 'chat')).map(strip), [{ text: 'hi all', n: 1 }]);
  listener.close();
  assertSigned(backend);
});

test('publish hook refuses: the ack or an error event says why; nothing stored, nothing delivered', async (t) => {
  const reason = 'no spam, please';
  const { backend, server } = await setup(t, {
    modes: { publish: (body) => (/spam/i.test(body.payload.text) ? { allow: false, reason } : { allow: true }) },
    args: (b) => hookArgs(b, ['publish']),
  });
  const listener = await connect(server.url);
  await subscribe(listener, 'chat');
  const publisher = await connected(t, server.url, {});
  const ack = await publisher.timeout(3000).emitWithAck('publish', { room_id: 'chat', payload: { text: 'buy SPAM now' } });
  assert.deepEqual(ack, { ok: false, reason });
  publisher.emit('publish', { room_id: 'chat', payload: { text: 'more spam' } });
  await until(() => errorsOf(publisher, 'publish').length === 1, 3000, 'the error event');
  assert.deepEqual(errorsOf(publisher, 'publish'), [reason]);
  // Malformed events are refused before any hook.
  const bad = await publisher.timeout(3000).emitWithAck('publish', { room_id: 'chat', payload: 'not an object' });
  assert.equal(bad.ok, false);
  assert.equal(backend.callsOf('publish').length, 2);
  await fence(server, 'chat', [listener]);
  assert.deepEqual(withoutFences(listener.messages), []);
  assert.deepEqual((await history(server, 'chat')).filter((m) => !m.marker), [], 'nothing stored');
  assert.equal(await hookCalls(server, 'publish', 'refused'), 2);
  listener.close();
  assertSigned(backend);
});

test('publish hook transforms: the replaced payload is what live subscribers, a replay and history get', async (t) => {
  const { backend, server } = await setup(t, {
    modes: { publish: 'transform' },
    args: (b) => hookArgs(b, ['publish']),
  });
  const live = [await connect(server.url), await connect(server.url)];
  for (const s of live) await subscribe(s, 'chat');
  const awayCookie = await fetchCookie(server.url);
  const away = await connect(server.url, { cookie: awayCookie });
  await subscribe(away, 'chat');
  away.close();
  await sleep(200);

  const publisher = await connected(t, server.url, {});
  const ack = await publisher.timeout(3000).emitWithAck('publish', { room_id: 'chat', payload: { text: 'hello there', from: 'cy' } });
  assert.equal(ack.ok, true, JSON.stringify(ack));
  const expected = { text: 'HELLO THERE', from: 'cy', checked: true, timestamp: ack.timestamp, room: 'chat' };
  await until(() => live.every((s) => s.messages.length === 1), 3000, 'both live subscribers');
  for (const s of live) assert.deepEqual(s.messages, [expected]);
  assert.deepEqual(backend.callsOf('publish')[0].body.payload, { text: 'hello there', from: 'cy' }, 'the hook got the original');

  const back = await connect(server.url, { cookie: awayCookie });
  await until(() => back.messages.length === 1, 3000, 'the replay');
  assert.deepEqual(back.messages, [expected]);
  assert.deepEqual(await history(server, 'chat'), [expected]);
  for (const s of [...live, back]) s.close();
  assertSigned(backend);
});

test('publish retries with the same id are stored once, also after the publisher reconnects', async (t) => {
  const { backend, server } = await setup(t, {
    modes: { publish: 'transform' },
    args: (b) => hookArgs(b, ['publish']),
  });
  const listener = await connect(server.url);
  await subscribe(listener, 'chat');
  const cookie = await fetchCookie(server.url);
  const publisher = await connected(t, server.url, { cookie });
  const message = { room_id: 'chat', payload: { text: 'only once' }, id: 'msg-0001' };
  const acks = await Promise.all([1, 2, 3].map(() => publisher.timeout(3000).emitWithAck('publish', message)));
  assert.deepEqual(acks.map((a) => [a.ok, a.repeated]), [[true, false], [true, true], [true, true]], JSON.stringify(acks));
  assert.ok(acks.every((a) => a.timestamp === acks[0].timestamp), 'the same timestamp');

  // The publisher drops before it saw the ack, reconnects with its cookie and retries.
  publisher.close();
  const again = await connected(t, server.url, { cookie });
  const retry = await again.timeout(3000).emitWithAck('publish', message);
  assert.deepEqual(retry, { ok: true, timestamp: acks[0].timestamp, repeated: true });
  // Another session's same id is its own message.
  const other = await connected(t, server.url, { cookie: await fetchCookie(server.url) });
  const theirs = await other.timeout(3000).emitWithAck('publish', message);
  assert.equal(theirs.repeated, false);
  assert.notEqual(theirs.timestamp, acks[0].timestamp);

  await fence(server, 'chat', [listener]);
  assert.deepEqual(withoutFences(listener.messages).map((m) => m.timestamp), [acks[0].timestamp, theirs.timestamp]);
  assert.deepEqual((await history(server, 'chat')).filter((m) => !m.marker).map((m) => m.text), ['ONLY ONCE', 'ONLY ONCE']);
  listener.close();
  assertSigned(backend);
});

test(
  'a retry through a publish hook that stamps the payload is still the same publish',
  async (t) => {
    let checks = 0;
    const { backend, server } = await setup(t, {
      modes: { publish: (body) => ({ allow: true, payload: { ...body.payload, check: ++checks } }) },
      args: (b) => hookArgs(b, ['publish']),
    });
    const listener = await connect(server.url);
    await subscribe(listener, 'chat');
    const publisher = await connected(t, server.url, { cookie: await fetchCookie(server.url) });
    const message = { room_id: 'chat', payload: { text: 'stamped' }, id: 'stamped-1' };
    const first = await publisher.timeout(3000).emitWithAck('publish', message);
    assert.equal(first.ok, true, JSON.stringify(first));
    await until(() => listener.messages.length === 1, 3000, 'delivered');
    const retry = await publisher.timeout(3000).emitWithAck('publish', message);
    backend.setMode('publish', 'refuse', { reason: 'changed its mind' });
    const late = await publisher.timeout(3000).emitWithAck('publish', message);
    t.diagnostic(`first ${JSON.stringify(first)}; retry ${JSON.stringify(retry)}; retry once the hook refuses ${JSON.stringify(late)}`);
    listener.close();
    assert.deepEqual(retry, { ok: true, timestamp: first.timestamp, repeated: true });
    assert.deepEqual(late, { ok: true, timestamp: first.timestamp, repeated: true });
  },
);

// --- token mode, filter, configuration --------------------------------------------------------

test('--client-publish token: the token lists the rooms a client may publish to', async (t) => {
  const server = await startTwine({ args: ['--client-publish', 'token', '--auth', 'optional'] });
  t.after(() => server.stop());
  const res = await fetch(`${server.url}/api/token`, {
    method: 'POST',
    headers: { Authorization: server.apiKey, 'Content-Type': 'application/json' },
    body: JSON.stringify({ publish: ['chat'] }),
  });
  assert.equal(res.status, 201);
  const { token } = await res.json();
  const listener = await connect(server.url);
  await subscribe(listener, 'chat');
  const publisher = await connected(t, server.url, { auth: { token } });
  const ok = await publisher.timeout(3000).emitWithAck('publish', { room_id: 'chat', payload: { text: 'with a token' } });
  assert.equal(ok.ok, true, JSON.stringify(ok));
  await until(() => listener.messages.length === 1, 3000, 'the message');
  assert.equal(listener.messages[0].text, 'with a token');

  const elsewhere = await publisher.timeout(3000).emitWithAck('publish', { room_id: 'other', payload: { text: 'x' } });
  assert.equal(elsewhere.ok, false);
  assert.match(elsewhere.reason, /token does not allow publishing to room other/);
  const anonymous = await connected(t, server.url, {});
  const none = await anonymous.timeout(3000).emitWithAck('publish', { room_id: 'chat', payload: { text: 'y' } });
  assert.equal(none.ok, false, 'no token, no publishing');
  assert.deepEqual((await history(server, 'other')), []);
  listener.close();
});

test('--publish-filter-words masks whole words in every string, before the publish hook', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'twine-filter-'));
  const words = path.join(dir, 'words.txt');
  writeFileSync(words, 'darn\nHeck\n');
  const { backend, server } = await setup(t, {
    modes: { publish: 'allow' },
    args: (b) => [...hookArgs(b, ['publish']), '--publish-filter-words', words],
  });
  const listener = await connect(server.url);
  await subscribe(listener, 'chat');
  const publisher = await connected(t, server.url, {});
  const payload = { text: 'Darn it, what the HECK! darned fine', nested: { note: 'heck', list: ['DARN', 'ok'] }, n: 7 };
  const ack = await publisher.timeout(3000).emitWithAck('publish', { room_id: 'chat', payload });
  assert.equal(ack.ok, true, JSON.stringify(ack));
  const masked = { text: '**** it, what the ****! darned fine', nested: { note: '****', list: ['****', 'ok'] }, n: 7 };
  await until(() => listener.messages.length === 1, 3000, 'the message');
  assert.deepEqual(strip(listener.messages[0]), masked);
  assert.deepEqual(backend.callsOf('publish')[0].body.payload, masked, 'the hook got it masked');
  listener.close();
  assertSigned(backend);
});

test('configuration: publishing is off by default; hook flags are checked at start', async (t) => {
  const server = await startTwine();
  t.after(() => server.stop());
  const socket = await connected(t, server.url, {});
  const ack = await socket.timeout(3000).emitWithAck('publish', { room_id: 'chat', payload: { a: 1 } });
  assert.deepEqual(ack, { ok: false, reason: 'publishing from clients is off on this server' });
  socket.emit('publish', { room_id: 'chat', payload: { a: 1 } });
  await until(() => errorsOf(socket, 'publish').length === 1, 3000, 'error event');

  const url = 'http://127.0.0.1:9/hook';
  for (const args of [
    ['--connect-hook-url', url],
    ['--connect-hook-url', 'https://example.com/hook', '--hook-secret', 's'],
    ['--publish-hook-url', url, '--hook-secret', 's'],
    ['--client-publish', 'hook', '--hook-secret', 's'],
    ['--publish-hook-url', url, '--hook-secret', 's', '--client-publish', 'token'],
  ]) {
    const { code, output } = await runTwine(['--port', '0', '--api-key', 'k', ...args]);
    assert.notEqual(code, 0, `${args.join(' ')} should not start:\n${output}`);
    assert.ok(code !== null, `${args.join(' ')} started`);
  }
});

// --- failures ---------------------------------------------------------------------------------

test('a publish hook answering garbage takes the failure outcome; the node logs it and keeps serving', async (t) => {
  const backend = await startBackend({ secret: SECRET, modes: { publish: 'garbage' } });
  const refusing = await startTwine({ args: hookArgs(backend, ['publish']) });
  const allowing = await startTwine({ args: [...hookArgs(backend, ['publish']), '--publish-hook-failure', 'allow'] });
  t.after(async () => {
    await refusing.stop();
    await allowing.stop();
    await backend.stop();
  });
  for (const server of [refusing, allowing]) {
    const listener = await connect(server.url);
    await subscribe(listener, 'chat');
    const publisher = await connected(t, server.url, {});
    const send = (text) => publisher.timeout(3000).emitWithAck('publish', { room_id: 'chat', payload: { text } });
    const allowed = server === allowing;

    backend.setMode('publish', 'garbage');
    const garbage = await send('after garbage');
    backend.setMode('publish', 'status', { status: 500 });
    const status = await send('after a 500');
    backend.setMode('publish', () => ({ allow: true, payload: ['not', 'an', 'object'] }));
    const notObject = await send('after an array payload');
    backend.setMode('publish', () => ({ allowed: 'yes' }));
    const noAllow = await send('after an answer without allow');
    const acks = [garbage, status, notObject, noAllow];
    if (allowed) {
      assert.ok(acks.every((a) => a.ok === true), JSON.stringify(acks));
      await until(() => listener.messages.length === 4, 3000, 'the client payloads');
      assert.deepEqual(listener.messages.map((m) => m.text), ['after garbage', 'after a 500', 'after an array payload', 'after an answer without allow']);
    } else {
      assert.deepEqual(acks, acks.map(() => ({ ok: false, reason: COULD_NOT_ASK })));
      await fence(server, 'chat', [listener]);
      assert.deepEqual(withoutFences(listener.messages), []);
    }
    assert.equal(await hookCalls(server, 'publish', 'garbled'), 4, 'each counted once, as garbled');
    assert.equal(await hookCalls(server, 'publish', 'allowed'), 0, 'and never as allowed');
    assert.match(server.logs(), /hook failed/, 'logged');
    assert.match(server.logs(), /hook=publish|publish/);
    // Still serving.
    backend.setMode('publish', 'allow');
    assert.equal((await send('fine again')).ok, true);
    assert.equal((await fetch(`${server.url}/ready`)).status, 200);
    assert.equal((await publish(server, 'chat', { http: true })).status, 201);
    await until(() => listener.messages.some((m) => m.http), 3000, 'an HTTP publish');
    listener.close();
  }
  t.diagnostic(`log lines: ${refusing.logs().split('\n').filter((l) => /hook/.test(l)).slice(0, 2).join(' | ')}`);
  assertSigned(backend);
});

test('backend down: connects are refused (or allowed with --connect-hook-failure allow)', async (t) => {
  // A backend that goes away.
  const { backend, server } = await setup(t, { args: (b) => hookArgs(b, ['connect']) });
  const first = await connected(t, server.url, {});
  first.close();
  await backend.stop();
  const { message } = await refused(t, server.url, {});
  assert.equal(message, COULD_NOT_ASK);
  assert.equal(await hookCalls(server, 'connect', 'unreachable'), 1);
  assert.match(server.logs(), /hook failed/);

  // Nothing ever listened there.
  const closed = await closedPortUrl();
  const refusing = await startTwine({ args: ['--hook-secret', SECRET, '--connect-hook-url', `${closed}/connect`] });
  const allowing = await startTwine({
    args: ['--hook-secret', SECRET, '--connect-hook-url', `${closed}/connect`, '--connect-hook-failure', 'allow'],
  });
  t.after(async () => {
    await refusing.stop();
    await allowing.stop();
  });
  assert.equal((await refused(t, refusing.url, {})).message, COULD_NOT_ASK);
  const socket = await connected(t, allowing.url, {});
  await subscribe(socket, 'still-here');
  assert.equal((await publish(allowing, 'still-here', { ok: 1 })).status, 201);
  await until(() => socket.messages.length === 1, 3000, 'delivered');
  assert.equal(await hookCalls(allowing, 'connect', 'unreachable'), 1);
});

test('a hook slower than --hook-timeout fails at the timeout', async (t) => {
  const { backend, server } = await setup(t, {
    modes: { connect: { mode: 'slow', delay: 1500 } },
    args: (b) => [...hookArgs(b, ['connect']), '--hook-timeout', '300ms'],
  });
  const started = Date.now();
  const { message } = await refused(t, server.url, {});
  const took = Date.now() - started;
  assert.equal(message, COULD_NOT_ASK);
  assert.ok(took >= 250 && took < 1200, `refused after ${took} ms`);
  assert.equal(await hookCalls(server, 'connect', 'timeout'), 1);
  assert.ok((await metric(server, 'twine_hook_seconds_count', { hook: 'connect' })) >= 1);
  await until(() => backend.inFlight() === 0, 3000, 'the slow call ended');
  assertSigned(backend);
});

// --- a slow backend under a connect flood -----------------------------------------------------

/**
 * Raw Socket.IO connects in waves, from a child process (so the flood does not stall this
 * process's clocks and clients): `waves` waves of `size` connects every `every` ms, spread over
 * loopback source addresses. Resolves to one { outcome, message, ms } per connect.
 */
function connectFlood(server, { waves, size, every }) {
  const script = `
    import { createRequire } from 'node:module';
    const WebSocket = createRequire(${JSON.stringify(fixtures.resolve('ws'))})('ws');
    const [port, waves, size, every] = process.argv.slice(1).map(Number);
    function attempt(localAddress) {
      return new Promise((resolve) => {
        const started = Date.now();
        const ws = new WebSocket('ws://127.0.0.1:' + port + '/socket.io/?EIO=4&transport=websocket', { localAddress });
        let over = false;
        const done = (outcome, message) => {
          if (over) return;
          over = true;
          clearTimeout(timer);
          ws.terminate();
          resolve({ outcome, message, ms: Date.now() - started });
        };
        const timer = setTimeout(() => done('no answer'), 8000);
        ws.on('error', (e) => done('error', e.message));
        ws.on('unexpected-response', (_, res) => done('http ' + res.statusCode));
        ws.on('message', (data) => {
          const text = data.toString();
          if (text.startsWith('0')) ws.send('40');
          else if (text === '2') ws.send('3');
          else if (text.startsWith('40')) done('connected');
          else if (text.startsWith('44')) done('refused', JSON.parse(text.slice(2)).message);
        });
      });
    }
    const started = Date.now();
    const attempts = [];
    for (let wave = 0; wave < waves; wave++) {
      await new Promise((r) => setTimeout(r, Math.max(0, started + wave * every - Date.now())));
      for (let i = 0; i < size; i++) {
        attempts.push(attempt('127.0.' + (20 + wave * 2 + Math.floor(i / 250)) + '.' + (1 + (i % 250))));
      }
    }
    process.stdout.write(JSON.stringify(await Promise.all(attempts)));
  `;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, String(server.port), String(waves), String(size), String(every)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (err += c));
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`the flood exited ${code}: ${err}`))));
  });
}

test('slow backend under a connect flood: in-flight bounded, others unaffected', async (t) => {
  const MAX_IN_FLIGHT = 20;
  const WAVES = 4;
  const WAVE = 500;
  const WAVE_EVERY_MS = 1000;
  const FLOOD_MS = WAVES * WAVE_EVERY_MS;
  const { backend, server } = await setup(t, {
    modes: { connect: 'allow' },
    args: (b) => [...hookArgs(b, ['connect', 'subscribe']), '--hook-max-in-flight', String(MAX_IN_FLIGHT), '--hook-timeout', '2s'],
  });
  // The existing client connects while the backend is fast.
  const cookie = await fetchCookie(server.url);
  const existing = await connect(server.url, { cookie, transports: ['websocket'] });
  await subscribe(existing, 'pulse');
  await sleep(1000);
  const pid = server.proc.pid;
  const baseline = rssMB(pid);
  let peak = baseline;

  backend.setMode('connect', 'slow', { delay: 1500 });
  backend.resetPeaks();
  const loop = monitorEventLoopDelay({ resolution: 5 });
  loop.enable();
  const started = Date.now();
  const rss = setInterval(() => (peak = Math.max(peak, rssMB(pid))), 50);
  const ready = [];
  const readyChecks = [];
  const readyTimer = setInterval(() => {
    const t0 = performance.now();
    readyChecks.push(
      fetch(`${server.url}/ready`, { signal: AbortSignal.timeout(3000) })
        .then(async (res) => {
          await res.text();
          ready.push({ status: res.status, ms: performance.now() - t0 });
        })
        .catch((e) => ready.push({ status: String(e), ms: performance.now() - t0 })),
    );
  }, 100);
  const publishes = [];
  for (let seq = 0; seq < 50; seq++) {
    publishes.push(
      sleep((seq * FLOOD_MS) / 50).then(() => publish(server, 'pulse', { seq, sent: Date.now() }).then((r) => r.status)),
    );
  }
  const flood = connectFlood(server, { waves: WAVES, size: WAVE, every: WAVE_EVERY_MS });
  // A connected user's subscribe while the flood holds the connect hook's in-flight bound: each
  // hook has its own.
  await until(() => Date.now() > started + 2000 && backend.inFlight() >= MAX_IN_FLIGHT, 3000, 'the third wave in flight');
  existing.emit('subscribe', 'during-flood');
  const statuses = await Promise.all(publishes);
  const results = await flood;
  clearInterval(readyTimer);
  await Promise.all(readyChecks);
  clearInterval(rss);
  await until(() => existing.messages.length === 50, 5000, 'the 50 pulses');

  const latencies = existing.messages.map((m, i) => existing.arrivals[i] - m.sent).sort((a, b) => a - b);
  const p99 = latencies[Math.floor(latencies.length * 0.99)];
  const readyMax = Math.max(...ready.map((r) => r.ms));
  const outcomes = {};
  for (const r of results) {
    const key = r.outcome === 'refused' ? `refused: ${r.message}` : r.outcome;
    outcomes[key] = (outcomes[key] ?? 0) + 1;
  }
  const busy = await hookCalls(server, 'connect', 'busy');
  const limits = await metric(server, 'twine_limits_reached_total', { limit: 'hooks_in_flight' });
  const maxInFlight = backend.maxInFlight('connect');
  const grew = peak - baseline;
  const midFlood = existing.events.find((e) => e.data === 'You have joined room: during-flood' || e.data?.event === 'subscribe');
  t.diagnostic(
    `${results.length} connects in ${WAVES} waves of ${WAVE}: ${JSON.stringify(outcomes)}; backend saw ${backend.callsOf('connect').length - 1} calls, ` +
      `at most ${maxInFlight} in flight; busy ${busy}, limits_reached hooks_in_flight ${limits}; /ready ${ready.length} samples, ` +
      `max ${readyMax.toFixed(0)} ms; existing client p99 ${p99} ms (max ${latencies.at(-1)} ms); this process's event loop delay max ${(loop.max / 1e6).toFixed(0)} ms; RSS ${baseline.toFixed(0)} → peak ${peak.toFixed(0)} MB (+${grew.toFixed(0)})`,
  );
  assert.ok(statuses.every((s) => s === 201), `publishes answered ${statuses}`);
  assert.ok(maxInFlight <= MAX_IN_FLIGHT, `the backend had ${maxInFlight} calls in flight`);
  assert.equal(midFlood?.data, 'You have joined room: during-flood', 'a connected client subscribes during the flood');
  assert.ok(maxInFlight >= MAX_IN_FLIGHT / 2, `the flood reached the backend (${maxInFlight} in flight)`);
  assert.ok(busy > 0 && limits > 0, `busy ${busy}, limits ${limits}`);
  assert.ok(outcomes[`refused: ${COULD_NOT_ASK}`] > 0 && outcomes.connected > 0, JSON.stringify(outcomes));
  assert.equal(results.length, (outcomes[`refused: ${COULD_NOT_ASK}`] ?? 0) + (outcomes.connected ?? 0), 'each connect answered');
  assert.ok(ready.length >= FLOOD_MS / 100 - 5, `${ready.length} /ready samples`);
  assert.ok(ready.every((r) => r.status === 200), `/ready answered ${[...new Set(ready.map((r) => r.status))]}`);
  assert.ok(readyMax < 500, `/ready took ${readyMax} ms`);
  assert.ok(p99 < 200, `the existing client's p99 ${p99} ms`);
  assert.ok(grew < 100, `RSS grew ${grew} MB`);
  assert.ok(existing.connected, 'the existing client stayed');

  // Afterwards, a fast backend lets a newcomer in at once.
  backend.setMode('connect', 'allow');
  await until(() => backend.inFlight() === 0, 5000, 'the backend idle');
  const newcomer = await connected(t, server.url, {});
  assert.ok(newcomer.connected);
  existing.close();
  assertSigned(backend);
});
