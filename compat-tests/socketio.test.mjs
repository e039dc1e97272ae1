// Stock socket.io-client 4 against the server: transports, the Twine events and replies, and
// refusals of bad input that leave the connection and the server working.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTwine } from '../js-fixtures/server.mjs';
import { connect, fetchCookie, publish, subscribe, until, untilEvent, io, sleep } from '../js-fixtures/clients.mjs';
import { connectRaw, pollingSession } from '../js-fixtures/raw.mjs';

let server;
before(async () => {
  server = await startTwine();
});
after(() => server?.stop());

test('default options start on polling and upgrade to WebSocket', async () => {
  const socket = io(server.url, {
    forceNew: true,
    reconnection: false,
    extraHeaders: { Cookie: await fetchCookie(server.url) },
  });
  let opened;
  let upgradedTo;
  socket.io.on('open', () => {
    opened = socket.io.engine.transport.name;
    socket.io.engine.on('upgrade', (t) => (upgradedTo = t.name));
  });
  const got = [];
  socket.on('message', (m) => got.push(m));
  try {
    await until(() => socket.connected, 5000, 'connect');
    assert.equal(opened, 'polling');
    await until(() => upgradedTo === 'websocket', 5000, 'upgrade');
    socket.emit('subscribe', 'upgrade-room');
    await new Promise((r) => socket.once('roomJoined', r));
    assert.equal((await publish(server, 'upgrade-room', { n: 1 })).status, 201);
    await until(() => got.length === 1, 3000, 'message');
  } finally {
    socket.close();
  }
});

test('messages queued while long-polling upgrades to WebSocket all arrive, in order, once', async () => {
  const cookie = await fetchCookie(server.url);
  const away = await connect(server.url, { cookie });
  await subscribe(away, 'across-upgrade');
  away.close();
  const count = 12;
  for (let n = 0; n < count; n++) {
    assert.equal((await publish(server, 'across-upgrade', { n, pad: 'x'.repeat(600_000) })).status, 201);
  }
  // The session comes back on long-polling and its replay fills the send queue (more than one
  // --max-payload of messages) before it polls once and upgrades, as socket.io-client does.
  const session = await pollingSession(server, { cookie }).open();
  try {
    assert.equal(session.handshake.maxPayload, 1_000_000, 'the handshake offers --max-payload');
    await sleep(300);
    await session.poll();
    await session.upgrade();
    const received = () => session.events.filter(([event]) => event === 'message').map(([, m]) => m.n);
    await until(() => received().length >= count, 10000, 'every message').catch(() => {});
    assert.deepEqual(received(), [...Array(count).keys()]);
  } finally {
    session.close();
  }
});

test('WebSocket-only clients connect, subscribe and receive the Twine message shape', async () => {
  const raw = await connectRaw(server);
  assert.equal(raw.handshake.maxPayload, 1_000_000, 'a WebSocket handshake offers --max-payload too');
  raw.close();
  const socket = await connect(server.url, { transports: ['websocket'] });
  try {
    assert.equal(socket.io.engine.transport.name, 'websocket');
    await subscribe(socket, 'ws-room');
    const before = Date.now();
    await publish(server, 'ws-room', { text: 'hi', nested: { a: [1, 2] } });
    await until(() => socket.messages.length === 1, 3000, 'message');
    const [m] = socket.messages;
    assert.deepEqual(Object.keys(m).sort(), ['nested', 'room', 'text', 'timestamp']);
    assert.equal(m.room, 'ws-room');
    assert.equal(m.text, 'hi');
    assert.deepEqual(m.nested, { a: [1, 2] });
    assert.equal(typeof m.timestamp, 'number');
    assert.ok(Math.abs(m.timestamp - before) < 5000, 'timestamp is ms since epoch');
  } finally {
    socket.close();
  }
});

test('polling-only clients receive messages too', async () => {
  const socket = await connect(server.url, { transports: ['polling'] });
  try {
    await subscribe(socket, 'poll-room');
    await publish(server, 'poll-room', { n: 1 });
    await until(() => socket.messages.length === 1, 3000, 'message');
  } finally {
    socket.close();
  }
});

test('unsubscribe leaves the room and stops delivery', async () => {
  const socket = await connect(server.url);
  try {
    await subscribe(socket, 'leave-room');
    socket.emit('unsubscribe', 'leave-room');
    await untilEvent(socket, 'roomLeft', 'You have left room: leave-room');
    await publish(server, 'leave-room', { n: 1 });
    await sleep(300);
    assert.equal(socket.messages.length, 0);
  } finally {
    socket.close();
  }
});

test('events sent in the same tick as the connection are not lost and keep their order', async () => {
  const socket = io(server.url, { forceNew: true, reconnection: false, transports: ['websocket'] });
  const events = [];
  for (const e of ['roomJoined', 'roomLeft']) socket.on(e, (d) => events.push(d));
  // Buffered by the client and flushed in one go right after the namespace connect.
  socket.emit('subscribe', 'early-a');
  socket.emit('subscribe', 'early-b');
  socket.emit('unsubscribe', 'early-a');
  socket.emit('subscribe', 'early-c');
  try {
    await until(() => events.length === 4, 3000, 'four replies');
    assert.deepEqual(events, [
      'You have joined room: early-a',
      'You have joined room: early-b',
      'You have left room: early-a',
      'You have joined room: early-c',
    ]);
    const got = [];
    socket.on('message', (m) => got.push(m.room));
    for (const room of ['early-a', 'early-b', 'early-c']) await publish(server, room, { n: 1 });
    await until(() => got.length === 2, 3000, 'two messages');
    await sleep(200);
    assert.deepEqual(got.sort(), ['early-b', 'early-c']);
  } finally {
    socket.close();
  }
});

test('bad room names and timestamps get an error event; the connection keeps working', async () => {
  const socket = await connect(server.url);
  try {
    const bad = ['', 'x'.repeat(257), 42, { room: 'a' }, null];
    for (const room of bad) socket.emit('subscribe', room);
    socket.emit('unsubscribe', 17);
    socket.emit('subscribe');
    socket.emit('updateSessionTS', 'yesterday');
    socket.emit('updateSessionTS', -5);
    await until(() => socket.events.filter((e) => e.event === 'error').length === 9, 3000, 'nine errors');
    const errors = socket.events.filter((e) => e.event === 'error').map((e) => e.data);
    assert.deepEqual(
      errors.map((e) => e.event),
      [...Array(5).fill('subscribe'), 'unsubscribe', 'subscribe', 'updateSessionTS', 'updateSessionTS'],
    );
    assert.match(errors[0].message, /empty/);
    assert.match(errors[1].message, /257 bytes.*256/);
    assert.match(errors[2].message, /string/);
    assert.match(errors[7].message, /timestamp/);
    assert.ok(!socket.events.some((e) => e.event === 'roomJoined'));

    await subscribe(socket, 'x'.repeat(256));
    await subscribe(socket, 'still-works');
    await publish(server, 'still-works', { n: 1 });
    await until(() => socket.messages.length === 1, 3000, 'message after bad input');
  } finally {
    socket.close();
  }
  assert.equal((await fetch(`${server.url}/`)).status, 201);
});

test('a payload carrying its own room and timestamp gets the real ones', async () => {
  const socket = await connect(server.url);
  try {
    await subscribe(socket, 'real-room');
    await publish(server, 'real-room', { room: 'fake', timestamp: 1, keep: true });
    await until(() => socket.messages.length === 1, 3000, 'message');
    const [m] = socket.messages;
    assert.equal(m.room, 'real-room');
    assert.ok(m.timestamp > 1_600_000_000_000);
    assert.equal(m.keep, true);
  } finally {
    socket.close();
  }
});

test('garbage on the wire does not take the server down', async () => {
  // Raw Engine.IO: a handshake, then packets no client would send.
  const hs = await (await fetch(`${server.url}/socket.io/?EIO=4&transport=polling`)).text();
  const sid = JSON.parse(hs.slice(1)).sid;
  const post = (body) =>
    fetch(`${server.url}/socket.io/?EIO=4&transport=polling&sid=${sid}`, { method: 'POST', body });
  await post('40');
  for (const body of ['42["subscribe"', '42{}', '4', '9zz', '42["subscribe","a","b"]', '\u0000\u0001']) {
    await post(body).catch(() => {});
  }
  const res = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling&sid=nope`);
  assert.equal(res.status, 400);
  assert.equal((await fetch(`${server.url}/`)).status, 201);
  const socket = await connect(server.url);
  socket.close();
});
