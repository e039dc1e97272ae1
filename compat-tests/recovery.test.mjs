// Recovery, as a user sees it: a client with its twineid cookie drops, messages are published
// while it is away, and when it comes back it gets every one it missed, once, in order, with the
// original timestamps, and then live traffic again with nothing lost or repeated at the seam.
// A second, always-connected client records the ground truth.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTwine } from '../js-fixtures/server.mjs';
import { connect, fetchCookie, publish, subscribe, until, untilEvent, sleep, io } from '../js-fixtures/clients.mjs';

let server;
before(async () => {
  server = await startTwine();
});
after(() => server?.stop());

const view = (m) => ({ room: m.room, timestamp: m.timestamp, n: m.n });

/** An observer subscribed to `rooms`, recording everything live. */
async function observer(rooms) {
  const socket = await connect(server.url);
  for (const room of rooms) await subscribe(socket, room);
  return socket;
}

function assertPublishOrder(messages) {
  for (let i = 1; i < messages.length; i++) {
    assert.ok(messages[i - 1].timestamp <= messages[i].timestamp, `publish order at ${i}`);
  }
  const byRoom = new Map();
  for (const m of messages) byRoom.set(m.room, [...(byRoom.get(m.room) ?? []), m]);
  for (const [room, list] of byRoom) {
    for (let i = 1; i < list.length; i++) {
      assert.ok(list[i - 1].timestamp < list[i].timestamp, `${room}: strictly increasing at ${i}`);
    }
  }
}

test('a client that drops gets a parallel burst to two rooms once, in order, then live again', async () => {
  const rooms = ['rec-a', 'rec-b'];
  const truth = await observer(rooms);
  const cookie = await fetchCookie(server.url);
  const first = await connect(server.url, { cookie });
  for (const room of rooms) await subscribe(first, room);
  for (let n = 0; n < 6; n++) assert.equal((await publish(server, rooms[n % 2], { n })).status, 201);
  await until(() => first.messages.length === 6, 3000, 'the first six');
  first.close();

  const burst = Array.from({ length: 200 }, (_, i) => publish(server, rooms[i % 2], { n: 100 + i }));
  assert.ok((await Promise.all(burst)).every((r) => r.status === 201));
  await until(() => truth.messages.length === 206, 5000, 'observer sees the burst');

  const again = await connect(server.url, { cookie });
  await until(() => again.messages.length >= 200, 5000, 'replay of the burst');
  await sleep(200);
  const missed = truth.messages.slice(6).map(view);
  const replayed = again.messages.map(view);
  assert.equal(replayed.length, 200, 'each missed message once');
  assert.deepEqual(
    new Set(replayed.map((m) => `${m.room}/${m.timestamp}/${m.n}`)),
    new Set(missed.map((m) => `${m.room}/${m.timestamp}/${m.n}`)),
    'the same messages with their original timestamps',
  );
  assertPublishOrder(replayed);
  assert.deepEqual(
    again.events.filter((e) => e.event === 'roomJoined').map((e) => e.data).sort(),
    rooms.map((r) => `You have joined room: ${r}`),
  );

  await publish(server, 'rec-a', { n: 999 });
  await until(() => again.messages.length === 201, 3000, 'live again');
  await sleep(200);
  assert.equal(again.messages.length, 201);
  assert.equal(again.messages[200].n, 999);
  again.close();
  truth.close();
});

test('no gap and no duplicate at the seam while publishes continue during the reconnect', async () => {
  const room = 'seam';
  const truth = await observer([room]);
  const cookie = await fetchCookie(server.url);
  const first = await connect(server.url, { cookie });
  await subscribe(first, room);
  await publish(server, room, { n: 0 });
  await until(() => first.messages.length === 1, 3000, 'first message');
  first.close();

  // A long replay (thousands missed) while eight publishers keep going: live messages arrive
  // while the replay runs and must come after it, once each.
  let n = 1;
  const next = () => publish(server, room, { n: n++ });
  for (let i = 0; i < 3000; i += 50) await Promise.all(Array.from({ length: 50 }, next));
  let publishing = true;
  const publishers = Array.from({ length: 8 }, async () => {
    while (publishing) await next();
  });
  await sleep(20);
  const again = await connect(server.url, { cookie });
  await sleep(300);
  publishing = false;
  await Promise.all(publishers);
  await until(() => truth.messages.length === n, 10000, 'observer has all');
  await until(() => again.messages.length >= n - 1, 10000, 'recovered client has all');
  await sleep(200);
  assert.deepEqual(again.messages.map(view), truth.messages.slice(1).map(view));
  again.close();
  truth.close();
});

test('a client that never acknowledges resumes after the last message it was sent', async () => {
  const room = 'no-ack';
  const cookie = await fetchCookie(server.url);
  const first = await connect(server.url, { cookie, ack: false });
  await subscribe(first, room);
  for (let n = 0; n < 2; n++) await publish(server, room, { n });
  await until(() => first.messages.length === 2, 3000, 'two');
  first.close();
  await sleep(100);
  for (let n = 2; n < 5; n++) await publish(server, room, { n });
  const again = await connect(server.url, { cookie, ack: false });
  await until(() => again.messages.length === 3, 3000, 'three replayed');
  await sleep(200);
  assert.deepEqual(again.messages.map((m) => m.n), [2, 3, 4]);
  again.close();
});

test('acknowledged positions are exact: unacknowledged messages are replayed', async () => {
  const room = 'partial-ack';
  const cookie = await fetchCookie(server.url);
  const first = await connect(server.url, { cookie, ack: false });
  await subscribe(first, room);
  for (let n = 0; n < 4; n++) await publish(server, room, { n });
  await until(() => first.messages.length === 4, 3000, 'four');
  first.emit('updateSessionTS', first.messages[1].timestamp);
  await sleep(100);
  first.close();
  const again = await connect(server.url, { cookie });
  await until(() => again.messages.length === 2, 3000, 'two replayed');
  await sleep(200);
  assert.deepEqual(again.messages.map(view), first.messages.slice(2).map(view));
  again.close();
});

test('unsubscribed rooms are not rejoined, and sessions without a cookie are private', async () => {
  const cookie = await fetchCookie(server.url);
  const first = await connect(server.url, { cookie });
  await subscribe(first, 'keep');
  await subscribe(first, 'drop');
  first.emit('unsubscribe', 'drop');
  await untilEvent(first, 'roomLeft', 'You have left room: drop');
  const stranger = await connect(server.url);
  await subscribe(stranger, 'stranger-room');
  first.close();
  stranger.close();

  const again = await connect(server.url, { cookie });
  await untilEvent(again, 'roomJoined', 'You have joined room: keep');
  const anonymous = await connect(server.url);
  await sleep(300);
  assert.deepEqual(again.events.map((e) => e.data), ['You have joined room: keep']);
  assert.deepEqual(anonymous.events, [], 'a client without a cookie gets no one else\'s session');
  await publish(server, 'stranger-room', { n: 1 });
  await sleep(200);
  assert.equal(anonymous.messages.length, 0);
  again.close();
  anonymous.close();
});

test('over --max-replay the newest are replayed after a recoveryTruncated event', async () => {
  const small = await startTwine({ args: ['--max-replay', '5'] });
  try {
    const cookie = await fetchCookie(small.url);
    const first = await connect(small.url, { cookie });
    await subscribe(first, 'big');
    first.close();
    await sleep(100);
    for (let n = 0; n < 8; n++) await publish(small, 'big', { n });
    const again = await connect(small.url, { cookie });
    await until(() => again.messages.length === 5, 3000, 'five replayed');
    await sleep(200);
    assert.deepEqual(again.messages.map((m) => m.n), [3, 4, 5, 6, 7]);
    const truncated = again.events.filter((e) => e.event === 'recoveryTruncated');
    assert.equal(truncated.length, 1);
    assert.equal(truncated[0].data.room, 'big');
    assert.equal(typeof truncated[0].data.from, 'number');
    assert.equal(truncated[0].data.until, again.messages[0].timestamp);
    again.close();
  } finally {
    await small.stop();
  }
});

test('a session holds at most --max-rooms rooms, and every roomJoined of a reconnect arrives in order', async () => {
  // 1,001 subscribes at once are over the default --event-burst (1,000): the room bound is what
  // is tested here, not the event rate.
  const limited = await startTwine({ args: ['--max-rooms', '1000', '--event-burst', '2000'] });
  try {
    const cookie = await fetchCookie(limited.url);
    const first = await connect(limited.url, { cookie });
    const rooms = Array.from({ length: 1000 }, (_, i) => `many-${String(i).padStart(4, '0')}`);
    for (const room of rooms) first.emit('subscribe', room);
    first.emit('subscribe', 'one-too-many');
    await until(() => first.events.length === 1001, 10000, 'every reply');
    const refused = first.events.filter((e) => e.event === 'error');
    assert.equal(refused.length, 1);
    assert.equal(refused[0].data.event, 'subscribe');
    assert.match(refused[0].data.message, /1000 rooms/);
    first.close();
    await sleep(100);
    const again = await connect(limited.url, { cookie });
    await until(() => again.events.length === 1000, 10000, 'every roomJoined');
    assert.deepEqual(
      again.events.map((e) => e.data),
      rooms.map((r) => `You have joined room: ${r}`),
      'all of them, in order, and not the refused one',
    );
    again.close();
  } finally {
    await limited.stop();
  }
});

test('programs are replayed to at once; pages get the replay grace from their handshake', async () => {
  const graceful = await startTwine({ args: ['--replay-grace', '1500ms'] });
  try {
    const room = 'grace';
    const timed = async (extraHeaders) => {
      const cookie = await fetchCookie(graceful.url);
      const first = await connect(graceful.url, { cookie });
      await subscribe(first, room);
      first.close();
      await sleep(100);
      await publish(graceful, room, { n: 1 });
      const started = Date.now();
      const socket = io(graceful.url, {
        forceNew: true,
        reconnection: false,
        transports: ['websocket'],
        extraHeaders: { Cookie: cookie, ...extraHeaders },
      });
      const at = await new Promise((resolve) => socket.on('message', () => resolve(Date.now() - started)));
      socket.close();
      return at;
    };
    const program = await timed({});
    const page = await timed({ Origin: 'https://app.example' });
    assert.ok(program < 500, `a program got its replay after ${program} ms`);
    assert.ok(page >= 1400, `a page got its replay after ${page} ms, not before its grace`);
  } finally {
    await graceful.stop();
  }
});
