// What Twine lacked, against real servers: token auth (as Cerebellum issues them), presence
// across nodes sharing a real redis-server (including a node killed with SIGKILL), history over
// HTTP, Prometheus metrics that move with the traffic, JSON logs. (Readiness while Redis is down:
// cluster.test.mjs.)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { startTwine } from '../js-fixtures/server.mjs';
import { startRedis } from '../js-fixtures/services.mjs';
import { io, connect, fetchCookie, publish, subscribe, until, untilEvent, sleep } from '../js-fixtures/clients.mjs';

let redis;
let nodes;
before(async () => {
  redis = await startRedis();
  const args = ['--redis-url', redis.url, '--presence-ttl', '1500ms', '--presence-max-members', '3'];
  nodes = [];
  for (let i = 0; i < 3; i++) nodes.push(await startTwine({ args }));
});
after(async () => {
  for (const n of nodes ?? []) await n.stop('SIGKILL');
  await redis?.stop();
});

// ---- tokens ---------------------------------------------------------------------------------

const b64 = (x) => Buffer.from(typeof x === 'string' ? x : JSON.stringify(x)).toString('base64url');
/** An HS256 JWT signed with `secret`, built by hand so a test can forge and expire them. */
function jwt(claims, secret) {
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}
const inAMinute = () => Math.floor(Date.now() / 1000) + 60;

/** Connects with `auth`; resolves to the socket, or to the connect error's message. */
function connectWith(url, auth) {
  const socket = io(url, { forceNew: true, reconnection: false, transports: ['websocket'], auth });
  socket.events = [];
  for (const event of ['roomJoined', 'error', 'presence', 'presence:members']) {
    socket.on(event, (data) => socket.events.push({ event, data }));
  }
  return new Promise((resolve) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', (e) => {
      socket.close();
      resolve(e.message);
    });
  });
}

/** Subscribes a socket made by `connectWith` and waits for its `roomJoined`. */
async function join(socket, room) {
  socket.emit('subscribe', room);
  await until(() => socket.events.some((e) => e.event === 'roomJoined' && e.data.endsWith(`: ${room}`)), 3000, `joined ${room}`);
}

async function mint(server, body) {
  const res = await fetch(`${server.url}/api/token`, {
    method: 'POST',
    headers: { Authorization: server.apiKey, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  assert.equal(res.status, 201);
  return (await res.json()).token;
}

test('tokens: required mode admits a minted token and refuses none, expired, forged and bad ones', async () => {
  const server = await startTwine({ args: ['--auth', 'required', '--auth-secret', 'shh'] });
  try {
    assert.equal(await connectWith(server.url, {}), 'Authentication error', 'no token');
    assert.equal(await connectWith(server.url, { token: 'not.a.jwt' }), 'Authentication error', 'garbage');
    const expired = jwt({ exp: Math.floor(Date.now() / 1000) - 5 }, 'shh');
    assert.equal(await connectWith(server.url, { token: expired }), 'Authentication error', 'expired');
    const forged = jwt({ exp: inAMinute() }, 'not-the-secret');
    assert.equal(await connectWith(server.url, { token: forged }), 'Authentication error', 'forged');
    const noExp = jwt({ sub: 'u1' }, 'shh');
    assert.equal(await connectWith(server.url, { token: noExp }), 'Authentication error', 'no exp');

    const made = jwt({ exp: inAMinute(), sub: 'u1' }, 'shh');
    const ok = await connectWith(server.url, { token: made });
    assert.equal(typeof ok, 'object', `a token signed with the secret connects: ${ok}`);
    ok.close();

    const noKey = await fetch(`${server.url}/api/token`, { method: 'POST' });
    assert.equal(noKey.status, 401, 'minting needs the API key');
    const token = await mint(server, { sub: 'u2', ttl: '1m' });
    const [, claims] = token.split('.');
    const decoded = JSON.parse(Buffer.from(claims, 'base64url').toString());
    assert.equal(decoded.sub, 'u2');
    assert.ok(decoded.exp > Date.now() / 1000 + 50 && decoded.exp <= Date.now() / 1000 + 61, 'ttl honoured');
    const minted = await connectWith(server.url, { token });
    assert.equal(typeof minted, 'object');
    minted.close();
  } finally {
    await server.stop();
  }
});

test('tokens: a token too large for a handshake to carry is not minted', async () => {
  const server = await startTwine({ args: ['--auth', 'required', '--max-payload', '2000'] });
  try {
    const rooms = Array.from({ length: 100 }, (_, i) => `room-with-a-long-name-${i}`);
    const res = await fetch(`${server.url}/api/token`, {
      method: 'POST',
      headers: { Authorization: server.apiKey, 'Content-Type': 'application/json' },
      body: JSON.stringify({ rooms }),
    });
    assert.equal(res.status, 413);
    assert.match(await res.text(), /more than a handshake may carry \(--max-payload 2000\); name fewer rooms/);
    const fits = await mint(server, { rooms: rooms.slice(0, 3) });
    const socket = await connectWith(server.url, { token: fits });
    assert.equal(typeof socket, 'object', `a token that fits connects: ${socket}`);
    socket.close();
  } finally {
    await server.stop();
  }
});

test('tokens: a rooms claim limits subscribes, prefixes included', async () => {
  const server = await startTwine({ args: ['--auth', 'required'] });
  try {
    // The secret defaults to the API key, as with Cerebellum.
    const token = await mint(server, { sub: 'u3', rooms: ['news-*', 'lobby'] });
    const socket = await connectWith(server.url, { token });
    for (const room of ['news-eu', 'lobby']) await join(socket, room);
    socket.emit('subscribe', 'sports');
    await until(() => socket.events.some((e) => e.event === 'error'), 3000, 'refusal');
    const refusal = socket.events.find((e) => e.event === 'error').data;
    assert.equal(refusal.event, 'subscribe');
    assert.match(refusal.message, /does not allow room sports/);
    assert.ok(!socket.events.some((e) => e.event === 'roomJoined' && e.data.endsWith('sports')));
    assert.equal((await publish(server, 'sports', { n: 1 })).status, 201);
    socket.close();
  } finally {
    await server.stop();
  }
});

test('tokens: optional mode admits clients without a token but still refuses a bad one; off ignores tokens', async () => {
  const optional = await startTwine({ args: ['--auth', 'optional'] });
  const off = await startTwine();
  try {
    const anonymous = await connectWith(optional.url, {});
    assert.equal(typeof anonymous, 'object');
    anonymous.close();
    const forged = jwt({ exp: inAMinute() }, 'wrong');
    assert.equal(await connectWith(optional.url, { token: forged }), 'Authentication error');
    const ignored = await connectWith(off.url, { token: forged });
    assert.equal(typeof ignored, 'object', 'off (the default) is Twine as it was');
    ignored.close();
  } finally {
    await optional.stop();
    await off.stop();
  }
});

// ---- presence -------------------------------------------------------------------------------

/** Every change a socket was told of, as `action:name`, in order. */
const changes = (socket) =>
  socket.events
    .filter((e) => e.event === 'presence')
    .flatMap((e) => e.data.changes.map((c) => `${c.action}:${c.member.data?.name}`));
/** The members listed in the last `presence:members` a socket got after `since` events. */
const listedAfter = (socket, since) =>
  socket.events.slice(since).filter((e) => e.event === 'presence:members').at(-1)?.data;
const presentNames = async (node, room) => {
  const res = await fetch(`${node.url}/api/rooms/${room}/presence`, { headers: { Authorization: node.apiKey } });
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.room, room);
  return body.members.map((m) => m.data.name).sort();
};

test('presence: enter, update and leave reach members on other nodes; disconnecting leaves', async () => {
  const room = 'presence-two-nodes';
  const a = await connectWith(nodes[0].url, {});
  const b = await connectWith(nodes[1].url, {});
  try {
    for (const s of [a, b]) await join(s, room);
    a.emit('presence:enter', { room, data: { name: 'ann' } });
    await until(() => changes(b).includes('enter:ann'), 3000, 'b sees ann enter');
    const seen = b.events.find((e) => e.event === 'presence').data;
    assert.equal(seen.room, room);
    assert.equal(seen.changes[0].member.id, a.id, 'members are known by their connection id');
    b.emit('presence:enter', { room, data: { name: 'bob' } });
    await until(() => changes(a).includes('enter:bob'), 3000, 'a sees bob enter');
    const snapshot = listedAfter(b, 0);
    assert.deepEqual(snapshot.members.map((m) => m.data.name), ['ann'], 'a newcomer is sent the room as it is');
    await sleep(1100); // listings are at most one --presence-interval old
    const since = a.events.length;
    a.emit('presence:members', { room });
    await until(() => listedAfter(a, since), 3000, 'member list');
    const listed = listedAfter(a, since);
    assert.deepEqual(listed.members.map((m) => m.data.name).sort(), ['ann', 'bob']);
    assert.equal(listed.next, null, 'one page');
    assert.deepEqual(await presentNames(nodes[2], room), ['ann', 'bob'], 'the HTTP route on a third node agrees');

    b.emit('presence:update', { room, data: { name: 'bobby' } });
    await until(() => changes(a).includes('update:bobby'), 3000, 'a sees the update');
    a.close();
    await until(() => changes(b).includes('leave:ann'), 3000, 'b sees ann leave when she disconnects');
    assert.deepEqual(await presentNames(nodes[0], room), ['bobby']);
    b.emit('presence:leave', { room });
    await until(() => changes(b).includes('leave:bobby'), 3000, 'leaving is announced to oneself too');
    assert.deepEqual(await presentNames(nodes[0], room), []);
  } finally {
    a.close();
    b.close();
  }
});

test('presence: the members of a node killed with SIGKILL expire and leave, on the other nodes', async () => {
  const room = 'presence-kill';
  const doomed = await startTwine({ args: ['--redis-url', redis.url, '--presence-ttl', '1500ms'] });
  const watcher = await connectWith(nodes[0].url, {});
  const victim = await connectWith(doomed.url, {});
  try {
    for (const s of [watcher, victim]) await join(s, room);
    victim.emit('presence:enter', { room, data: { name: 'victim' } });
    await until(() => changes(watcher).includes('enter:victim'), 3000, 'enter seen');
    await sleep(2000);
    assert.deepEqual(await presentNames(nodes[1], room), ['victim'], 'the heartbeat keeps a live node\'s members');
    const killedAt = Date.now();
    await doomed.stop('SIGKILL');
    await until(() => changes(watcher).includes('leave:victim'), 5000, 'leave after the entry expires');
    const after = Date.now() - killedAt;
    assert.ok(after >= 500, `not before the entry could expire (${after} ms)`);
    assert.deepEqual(await presentNames(nodes[1], room), []);
  } finally {
    watcher.close();
    victim.close();
  }
});

test('presence: bounded members and data, only in subscribed rooms, and the HTTP route needs the key', async () => {
  const room = 'presence-bounds';
  const sockets = [];
  try {
    for (let i = 0; i < 4; i++) {
      const s = await connectWith(nodes[i % 2].url, {});
      sockets.push(s);
      await join(s, room);
    }
    for (let i = 0; i < 3; i++) {
      sockets[i].emit('presence:enter', { room, data: { name: `m${i}` } });
      await until(() => changes(sockets[i]).includes(`enter:m${i}`), 3000, `m${i} entered`);
    }
    const [, , , fourth] = sockets;
    const errorOf = (s) => s.events.find((e) => e.event === 'error')?.data;
    fourth.emit('presence:enter', { room, data: { name: 'm3' } });
    await until(() => errorOf(fourth), 3000, 'refused over the member limit');
    assert.equal(errorOf(fourth).event, 'presence:enter');
    assert.match(errorOf(fourth).message, /3 members present already/);
    assert.deepEqual(await presentNames(nodes[0], room), ['m0', 'm1', 'm2']);

    const stranger = await connectWith(nodes[0].url, {});
    sockets.push(stranger);
    stranger.emit('presence:members', { room });
    await until(() => errorOf(stranger), 3000, 'refused outside the room');
    assert.match(errorOf(stranger).message, /subscribe to room presence-bounds/);

    const big = await connectWith(nodes[0].url, {});
    sockets.push(big);
    await join(big, 'presence-big');
    big.emit('presence:enter', { room: 'presence-big', data: { blob: 'x'.repeat(2000) } });
    await until(() => errorOf(big), 3000, 'refused data');
    assert.match(errorOf(big).message, /limit is 1024/);
    big.emit('presence:update', { room: 'presence-big', data: {} });
    await until(() => big.events.filter((e) => e.event === 'error').length === 2, 3000, 'update refused');
    assert.match(big.events.filter((e) => e.event === 'error')[1].data.message, /enter it first/);

    const noKey = await fetch(`${nodes[0].url}/api/rooms/${room}/presence`);
    assert.equal(noKey.status, 401);
  } finally {
    for (const s of sockets) s.close();
  }
});

test('presence: a token\'s subject is the member\'s user, so peers can trust who entered', async () => {
  const server = await startTwine({ args: ['--auth', 'required'] });
  try {
    const token = await mint(server, { sub: 'user-42' });
    const s = await connectWith(server.url, { token });
    await join(s, 'p-user');
    s.emit('presence:enter', { room: 'p-user', data: { user: 'someone-else' } });
    await until(() => s.events.some((e) => e.event === 'presence'), 3000, 'announced');
    const [{ member }] = s.events.find((e) => e.event === 'presence').data.changes;
    assert.equal(member.user, 'user-42');
    assert.equal(member.data.user, 'someone-else', 'data is the client\'s word, user is the token\'s');
    s.close();
  } finally {
    await server.stop();
  }
});

// ---- history over HTTP ------------------------------------------------------------------------

async function history(node, room, query, key = node.apiKey) {
  const res = await fetch(`${node.url}/api/rooms/${encodeURIComponent(room)}/messages?${query}`, {
    headers: key ? { Authorization: key } : {},
  });
  return { status: res.status, body: res.status === 200 ? await res.json() : await res.text() };
}

test('history: pages of a room\'s messages, as clients receive them, after a timestamp', async () => {
  const room = 'history-pages';
  const watcher = await connect(nodes[1].url);
  await subscribe(watcher, room);
  for (let n = 0; n < 25; n++) assert.equal((await publish(nodes[n % 3], room, { n })).status, 201);
  await until(() => watcher.messages.length === 25, 5000, 'live');
  const pages = [];
  let after = 0;
  for (;;) {
    const { status, body } = await history(nodes[2], room, `after=${after}&limit=10`);
    assert.equal(status, 200);
    pages.push(body.messages.length);
    assert.equal(body.truncated, false);
    if (body.next === null) {
      after = null;
      pages.all = [...(pages.all ?? []), ...body.messages];
      break;
    }
    pages.all = [...(pages.all ?? []), ...body.messages];
    after = body.next;
  }
  assert.deepEqual(pages.slice(0, 3), [10, 10, 5]);
  assert.deepEqual(pages.all, watcher.messages, 'the same objects, timestamps and all, as delivered live');
  const mid = watcher.messages[19].timestamp;
  const rest = await history(nodes[0], room, `after=${mid}`);
  assert.deepEqual(rest.body.messages.map((m) => m.n), [20, 21, 22, 23, 24]);
  assert.equal((await history(nodes[0], room, 'limit=0')).status, 400);
  assert.equal((await history(nodes[0], room, 'limit=5000')).status, 400);
  assert.equal((await history(nodes[0], room, 'after=-1')).status, 400);
  assert.equal((await history(nodes[0], room, '', null)).status, 401);
  assert.deepEqual((await history(nodes[0], 'never-used', '')).body.messages, []);
  watcher.close();
});

// ---- metrics, readiness, logs -----------------------------------------------------------------

/** Parses the Prometheus text format strictly: every sample line must be well formed. */
function parseMetrics(text) {
  const samples = new Map();
  const types = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line === '# EOF') continue;
    const meta = line.match(/^# (HELP|TYPE|UNIT) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/);
    if (meta) {
      if (meta[1] === 'TYPE') types.set(meta[2], meta[3]);
      continue;
    }
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (-?[0-9.eE+-]+|NaN|\+Inf|-Inf)$/);
    assert.ok(m, `a well-formed sample line: ${JSON.stringify(line)}`);
    samples.set(`${m[1]}${m[2] ?? ''}`, Number(m[3]));
  }
  return { samples, types };
}
const scrape = async (node) => {
  const res = await fetch(`${node.url}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^(text\/plain|application\/openmetrics-text)/);
  return parseMetrics(await res.text());
};

test('metrics: --metrics api-key asks for the key, off serves nothing', async () => {
  const keyed = await startTwine({ args: ['--metrics', 'api-key'] });
  const off = await startTwine({ args: ['--metrics', 'off'] });
  try {
    assert.equal((await fetch(`${keyed.url}/metrics`)).status, 401);
    const scraped = await fetch(`${keyed.url}/metrics`, { headers: { Authorization: `Bearer ${keyed.apiKey}` } });
    assert.equal(scraped.status, 200);
    assert.match(await scraped.text(), /twine_connections/);
    assert.equal((await fetch(`${off.url}/metrics`, { headers: { Authorization: off.apiKey } })).status, 404);
  } finally {
    await keyed.stop();
    await off.stop();
  }
});

test('metrics: /metrics parses, and its counters move with connections, publishes, deliveries, replays and limits', async () => {
  const node = await startTwine({ args: ['--max-rooms', '2'] });
  try {
    const before = await scrape(node);
    for (const [name, type] of [
      ['twine_connections', 'gauge'],
      ['twine_messages_published', 'counter'],
      ['twine_messages_delivered', 'counter'],
      ['twine_messages_replayed', 'counter'],
      ['twine_delivery_seconds', 'histogram'],
      ['twine_replay_seconds', 'histogram'],
      ['twine_store_seconds', 'histogram'],
      ['twine_limits_reached', 'counter'],
      ['twine_store_up', 'gauge'],
      ['twine_delivery_lag_seconds', 'gauge'],
    ]) {
      assert.equal(before.types.get(name), type, `${name} is a ${type}`);
    }
    const value = (m, key) => m.samples.get(key) ?? 0;

    const cookie = await fetchCookie(node.url);
    const ws = await connect(node.url, { cookie, transports: ['websocket'] });
    const polling = await connect(node.url, { transports: ['polling'] });
    await subscribe(ws, 'm');
    await subscribe(polling, 'm');
    for (let n = 0; n < 5; n++) assert.equal((await publish(node, 'm', { n })).status, 201);
    await until(() => ws.messages.length === 5 && polling.messages.length === 5, 3000, 'delivered');
    ws.emit('subscribe', 'm2');
    ws.emit('subscribe', 'm3'); // over --max-rooms 2
    await untilEvent(ws, 'roomJoined', 'You have joined room: m2');
    await until(() => ws.events.some((e) => e.event === 'error'), 3000, 'refused');
    await sleep(300); // the acknowledgement flush
    ws.close();
    await sleep(200);
    for (let n = 5; n < 8; n++) assert.equal((await publish(node, 'm', { n })).status, 201);
    const back = await connect(node.url, { cookie, transports: ['websocket'] });
    await until(() => back.messages.length === 3, 3000, 'replayed');

    const now = await scrape(node);
    assert.equal(value(now, 'twine_messages_published_total') - value(before, 'twine_messages_published_total'), 8);
    assert.ok(value(now, 'twine_messages_delivered_total') - value(before, 'twine_messages_delivered_total') >= 13);
    assert.equal(value(now, 'twine_messages_replayed_total') - value(before, 'twine_messages_replayed_total'), 3);
    assert.equal(value(now, 'twine_connections_opened_total{transport="websocket"}'), 2);
    assert.equal(value(now, 'twine_connections_opened_total{transport="polling"}'), 1);
    assert.equal(value(now, 'twine_connections'), 2);
    assert.equal(value(now, 'twine_limits_reached_total{limit="rooms"}'), 1);
    assert.ok(value(now, 'twine_delivery_seconds_count') >= 8);
    assert.ok(value(now, 'twine_replay_seconds_count') >= 1);
    assert.ok(value(now, 'twine_store_seconds_count{op="append"}') >= 8);
    assert.equal(value(now, 'twine_store_up'), 1);
    back.close();
    polling.close();
  } finally {
    await node.stop();
  }
});

test('logs: --log-format json writes one JSON object per line', async () => {
  const node = await startTwine({ args: ['--log-format', 'json'] });
  await node.stop();
  const lines = node.logs().trim().split('\n');
  assert.ok(lines.length >= 2);
  for (const line of lines) {
    const entry = JSON.parse(line);
    assert.ok(entry.timestamp && entry.level && entry.fields, line);
  }
  assert.ok(lines.some((l) => JSON.parse(l).fields.message.startsWith('listening on')));
});
