// Socket.IO's own connection state recovery (socket.io 4.6+), with stock socket.io-client and no
// Twine code: two nodes on a real redis-server with --socketio-recovery. A client that drops gets
// `socket.recovered === true`, its rooms and every missed message once, on another node, after a
// node is killed, before it received any event, and across repeated drops; an offset older than
// what is kept gives `recovered === false` and a `recovery` event saying why.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTwine } from '../js-fixtures/server.mjs';
import { startRedis } from '../js-fixtures/services.mjs';
import { io, connect, fetchCookie, publish, subscribe, until, sleep } from '../js-fixtures/clients.mjs';

let redis;
let nodes;
const args = () => ['--redis-url', redis.url, '--socketio-recovery', '--history-per-room', '40'];
before(async () => {
  redis = await startRedis();
  nodes = [await startTwine({ args: args() }), await startTwine({ args: args() })];
});
after(async () => {
  for (const n of nodes ?? []) await n.stop('SIGKILL');
  await redis?.stop();
});

/**
 * A stock client, reconnecting by itself. Records each `message` with its arguments, `recovery`
 * events, and `socket.recovered` at each connect.
 */
function recovering(url, { transports } = {}) {
  const socket = io(url, { forceNew: true, transports, reconnectionDelay: 300, reconnectionDelayMax: 300 });
  socket.got = [];
  socket.argCounts = [];
  socket.recoveries = [];
  socket.connects = [];
  socket.on('message', (...args) => {
    socket.got.push(args[0].n);
    socket.argCounts.push(args.length);
  });
  socket.on('recovery', (notice) => socket.recoveries.push(notice));
  socket.on('connect', () => socket.connects.push(socket.recovered));
  return socket;
}

/** Points the client's next reconnection at `node` (as a load balancer may) and drops its transport. */
function dropTo(socket, node) {
  socket.io.uri = node.url;
  socket.io.engine.close();
}

async function joined(socket, room) {
  await until(() => socket.connected, 5000, 'connected');
  const acked = new Promise((resolve) => socket.once('roomJoined', resolve));
  socket.emit('subscribe', room);
  await acked;
}

const range = (from, to) => Array.from({ length: to - from }, (_, i) => from + i);

for (const transports of [undefined, ['websocket']]) {
  const how = transports ? 'WebSocket only' : 'polling then WebSocket';
  test(`a client recovers on another node what it missed, once (${how})`, async () => {
    const room = `csr-move-${transports ? 'ws' : 'default'}`;
    const socket = recovering(nodes[0].url, { transports });
    try {
      await joined(socket, room);
      assert.deepEqual(socket.connects, [false]);
      for (const n of range(0, 3)) assert.equal((await publish(nodes[0], room, { n })).status, 201);
      await until(() => socket.got.length === 3, 3000, 'live');
      assert.ok(socket.argCounts.every((c) => c === 2), 'each message carries its offset');
      dropTo(socket, nodes[1]);
      for (const n of range(3, 8)) assert.equal((await publish(nodes[0], room, { n })).status, 201);
      await until(() => socket.connects.length === 2, 5000, 'reconnected');
      assert.equal(socket.connects[1], true, 'socket.recovered');
      await until(() => socket.got.length === 8, 3000, 'replayed');
      assert.equal((await publish(nodes[1], room, { n: 8 })).status, 201, 'and live again, in the same room');
      await until(() => socket.got.length === 9, 3000, 'live after recovery');
      await sleep(200);
      assert.deepEqual(socket.got, range(0, 9));
      assert.deepEqual(socket.recoveries.at(-1), { recovered: true });
    } finally {
      socket.close();
    }
  });
}

test('a client whose node is killed recovers on the other node', async () => {
  const room = 'csr-kill';
  const doomed = await startTwine({ args: args() });
  const socket = recovering(doomed.url);
  try {
    await joined(socket, room);
    for (const n of range(0, 5)) assert.equal((await publish(doomed, room, { n })).status, 201);
    await until(() => socket.got.length === 5, 3000, 'live');
    socket.io.uri = nodes[1].url;
    await doomed.stop('SIGKILL');
    for (const n of range(5, 10)) assert.equal((await publish(nodes[0], room, { n })).status, 201);
    await until(() => socket.connects.length === 2, 8000, 'reconnected');
    assert.equal(socket.connects[1], true);
    await until(() => socket.got.length === 10, 3000, 'replayed');
    await sleep(200);
    assert.deepEqual(socket.got, range(0, 10));
  } finally {
    socket.close();
  }
});

test('a client that drops before it received any message still recovers (it was sent an offset at once)', async () => {
  const room = 'csr-early';
  const socket = recovering(nodes[0].url);
  try {
    await joined(socket, room);
    assert.equal(socket.got.length, 0);
    dropTo(socket, nodes[1]);
    for (const n of range(0, 4)) assert.equal((await publish(nodes[0], room, { n })).status, 201);
    await until(() => socket.connects.length === 2, 5000, 'reconnected');
    assert.equal(socket.connects[1], true);
    await until(() => socket.got.length === 4, 3000, 'replayed');

    // A client that never joined a room recovers too: the `recovery` event gave it an offset.
    const bare = recovering(nodes[0].url);
    await until(() => bare.recoveries.length === 1, 3000, 'first recovery event');
    dropTo(bare, nodes[1]);
    await until(() => bare.connects.length === 2, 5000, 'bare reconnected');
    assert.deepEqual(bare.connects, [false, true]);
    bare.close();
  } finally {
    socket.close();
  }
});

test('repeated drops during a replay neither lose nor repeat a message', async () => {
  const room = 'csr-repeat';
  const socket = recovering(nodes[0].url);
  try {
    await joined(socket, room);
    socket.io.engine.close();
    for (const n of range(0, 30)) assert.equal((await publish(nodes[n % 2], room, { n })).status, 201);
    for (let round = 0; round < 4; round++) {
      const seen = socket.got.length;
      await until(() => socket.connected, 5000, `reconnected ${round}`);
      await until(() => socket.got.length > seen || socket.got.length === 30, 3000, 'some replayed');
      if (socket.got.length < 30) dropTo(socket, nodes[round % 2]);
    }
    await until(() => socket.connected && socket.got.length >= 30, 8000, 'everything');
    await sleep(300);
    assert.deepEqual(socket.got, range(0, 30));
    assert.ok(socket.connects.slice(1).every((r) => r === true), `every reconnection recovered: ${socket.connects}`);
  } finally {
    socket.close();
  }
});

test('an offset older than what is kept gives recovered === false and a recovery event saying why', async () => {
  const room = 'csr-old';
  const socket = recovering(nodes[0].url);
  try {
    await joined(socket, room);
    assert.equal((await publish(nodes[0], room, { n: 0 })).status, 201);
    await until(() => socket.got.length === 1, 3000, 'live');
    socket.io.engine.close();
    // --history-per-room 40: fifty more push the client's place out of what is kept.
    for (const n of range(1, 51)) assert.equal((await publish(nodes[0], room, { n })).status, 201);
    await until(() => socket.connects.length === 2, 5000, 'reconnected');
    assert.equal(socket.connects[1], false);
    await until(() => socket.recoveries.length === 2, 3000, 'told why');
    const notice = socket.recoveries[1];
    assert.equal(notice.recovered, false);
    assert.match(notice.reason, /room csr-old after the offset are no longer kept/);
    await sleep(200);
    assert.deepEqual(socket.got, [0], 'nothing replayed, and the room is not rejoined');
    assert.equal((await publish(nodes[0], room, { n: 99 })).status, 201);
    await sleep(300);
    assert.deepEqual(socket.got, [0]);
  } finally {
    socket.close();
  }
});

test('recovered means what socket.io clients take it to mean: a pid the client made up is not recovered', async () => {
  const auth = { pid: 'a-pid-i-chose', offset: '' };
  const made = io(nodes[0].url, { forceNew: true, reconnection: false, transports: ['websocket'], auth });
  const notices = [];
  made.on('recovery', (n) => notices.push(n));
  try {
    await until(() => made.connected, 5000, 'connected');
    assert.equal(made.recovered, false);
    assert.notEqual(made._pid, 'a-pid-i-chose', 'it is given a pid of the server\'s');
    await until(() => notices.length === 1, 3000, 'told');
    assert.deepEqual(notices[0], { recovered: false, reason: 'the session expired or is unknown' });
  } finally {
    made.close();
  }
  // A pid the server handed out, of a session that never joined a room, recovers (on any node).
  const first = recovering(nodes[0].url);
  try {
    await until(() => first.connected, 5000, 'connected');
    assert.equal(first.connects[0], false);
    dropTo(first, nodes[1]);
    await until(() => first.connects.length === 2, 5000, 'reconnected');
    assert.equal(first.connects[1], true, 'nothing to miss, and the pid is the server\'s');
  } finally {
    first.close();
  }
});

test('clients with a twineid cookie keep the Twine flow: no pid, no extra argument', async () => {
  const cookie = await fetchCookie(nodes[0].url);
  const socket = await connect(nodes[0].url, { cookie });
  const args = [];
  socket.on('message', (...a) => args.push(a.length));
  await subscribe(socket, 'csr-twine');
  assert.equal((await publish(nodes[0], 'csr-twine', { n: 1 })).status, 201);
  await until(() => args.length === 1, 3000, 'message');
  assert.deepEqual(args, [1]);
  assert.equal(socket._pid, undefined);
  socket.close();
});

test('in memory (one node, no Redis) a client recovers what it missed the same way', async () => {
  const alone = await startTwine({ args: ['--socketio-recovery'] });
  const socket = recovering(alone.url);
  try {
    await joined(socket, 'csr-memory');
    for (const n of range(0, 3)) assert.equal((await publish(alone, 'csr-memory', { n })).status, 201);
    await until(() => socket.got.length === 3, 3000, 'live');
    socket.io.engine.close();
    for (const n of range(3, 7)) assert.equal((await publish(alone, 'csr-memory', { n })).status, 201);
    await until(() => socket.connects.length === 2, 5000, 'reconnected');
    assert.equal(socket.connects[1], true, 'socket.recovered');
    await until(() => socket.got.length === 7, 3000, 'replayed');
    await sleep(200);
    assert.deepEqual(socket.got, range(0, 7));
  } finally {
    socket.close();
    await alone.stop();
  }
});
