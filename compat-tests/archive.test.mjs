// Durable history in DynamoDB behind Redis (a real redis-server and dynalite): recovery and
// history pages over HTTP beyond the Redis window, write-behind that survives a node killed right
// after answering 201, and a DynamoDB outage that publishing rides out.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { startTwine } from '../js-fixtures/server.mjs';
import { startDynalite, startRedis } from '../js-fixtures/services.mjs';
import { archivedItems } from '../js-fixtures/dynamo.mjs';
import { io, connect, fetchCookie, publish, subscribe, until, sleep } from '../js-fixtures/clients.mjs';

const TABLE = 'twine_rooms';
let redis;
let dynamo;
let nodes;

const nodeArgs = () => [
  '--redis-url', redis.url,
  '--dynamodb-table', TABLE,
  '--dynamodb-create-table',
  '--redis-history-secs', '2',
];

before(async () => {
  redis = await startRedis();
  dynamo = await startDynalite();
  nodes = [];
  for (let i = 0; i < 2; i++) nodes.push(await startTwine({ args: nodeArgs(), env: dynamo.env }));
});
after(async () => {
  for (const n of nodes ?? []) await n.stop('SIGKILL');
  await redis?.stop();
  await dynamo?.stop();
});

const view = (m) => `${m.room}/${m.timestamp}/${m.n}`;
/** Messages Redis holds for `room` (its stream's name carries its partition's tag). */
function redisLen(room) {
  const cli = (...args) => execFileSync('redis-cli', ['-p', String(redis.port), ...args]).toString().trim();
  const stream = cli('--scan', '--pattern', `twine:*:h:${room}`);
  return stream ? Number(cli('XLEN', stream)) : 0;
}
const backlog = async (node) => {
  const text = await (await fetch(`${node.url}/metrics`)).text();
  return Number(text.match(/^twine_archive_backlog (\d+)$/m)?.[1]);
};

test('a client back after the Redis window gets the older part from DynamoDB and the rest from Redis', async () => {
  const room = 'tiers';
  const truth = await connect(nodes[1].url);
  await subscribe(truth, room);
  const cookie = await fetchCookie(nodes[0].url);
  const first = await connect(nodes[0].url, { cookie });
  await subscribe(first, room);
  first.close();
  await sleep(100);
  for (let n = 0; n < 10; n++) assert.equal((await publish(nodes[0], room, { n })).status, 201);
  await sleep(3000); // past the 2 s Redis window
  for (let n = 10; n < 15; n++) assert.equal((await publish(nodes[1], room, { n })).status, 201);
  assert.equal(redisLen(room), 5, 'Redis trimmed the older ten');
  assert.equal((await archivedItems(dynamo, TABLE, room)).length >= 10, true);

  await until(() => truth.messages.length === 15, 5000, 'observer');
  const again = await connect(nodes[1].url, { cookie });
  await until(() => again.messages.length === 15, 5000, 'all fifteen');
  await sleep(200);
  assert.deepEqual(again.messages.map(view), truth.messages.map(view), 'once, in order, original timestamps');
  again.close();

  // The same history over HTTP, a page of four at a time, across both tiers.
  const paged = [];
  let after = 0;
  let pages = 0;
  for (;;) {
    const res = await fetch(`${nodes[0].url}/api/rooms/${room}/messages?after=${after}&limit=4`, {
      headers: { Authorization: nodes[0].apiKey },
    });
    assert.equal(res.status, 200);
    const page = await res.json();
    assert.equal(page.truncated, false);
    assert.ok(page.messages.length <= 4);
    paged.push(...page.messages);
    pages += 1;
    if (page.next === null) break;
    after = page.next;
  }
  assert.ok(pages >= 4, `${pages} pages (one may end short where the tiers meet)`);
  assert.deepEqual(paged, truth.messages, 'every message, as delivered live, older ones from DynamoDB');

  // A client whose whole gap is older than the Redis window.
  const cookie2 = await fetchCookie(nodes[0].url);
  const late = await connect(nodes[0].url, { cookie: cookie2 });
  await subscribe(late, 'only-archive');
  late.close();
  await sleep(100);
  for (let n = 0; n < 5; n++) await publish(nodes[0], 'only-archive', { n });
  await sleep(3000);
  await publish(nodes[0], 'trigger-trim', { n: 0 });
  await publish(nodes[0], 'only-archive', { n: 5 });
  assert.equal(redisLen('only-archive'), 1);
  const back = await connect(nodes[1].url, { cookie: cookie2 });
  await until(() => back.messages.length === 6, 5000, 'six');
  assert.deepEqual(back.messages.map((m) => m.n), [0, 1, 2, 3, 4, 5]);
  back.close();
  truth.close();
});

test('Socket.IO recovery reaches past the Redis window into DynamoDB', async () => {
  const room = `csr-archive-${Date.now()}`;
  const node = await startTwine({ args: [...nodeArgs(), '--socketio-recovery'], env: dynamo.env });
  const socket = io(node.url, { forceNew: true, transports: ['websocket'], reconnectionDelay: 300, reconnectionDelayMax: 300 });
  const got = [];
  const connects = [];
  socket.on('message', (m) => got.push(m.n));
  socket.on('connect', () => connects.push(socket.recovered));
  try {
    await until(() => socket.connected, 5000, 'connected');
    const joined = new Promise((resolve) => socket.once('roomJoined', resolve));
    socket.emit('subscribe', room);
    await joined;
    assert.equal((await publish(node, room, { n: 0 })).status, 201);
    await until(() => got.length === 1, 3000, 'live');
    // Away while 5 are published and the 2 s Redis window passes over them, then 2 more.
    socket.io.reconnection(false);
    socket.io.engine.close();
    for (let n = 1; n <= 5; n++) assert.equal((await publish(node, room, { n })).status, 201);
    await sleep(3000);
    for (let n = 6; n <= 7; n++) assert.equal((await publish(node, room, { n })).status, 201);
    assert.equal(redisLen(room), 2, 'Redis trimmed the older six');
    socket.io.reconnection(true);
    socket.connect();
    await until(() => connects.length === 2, 5000, 'reconnected');
    assert.equal(connects[1], true, 'socket.recovered');
    await until(() => got.length === 8, 5000, 'replayed from DynamoDB and Redis');
    await sleep(200);
    assert.deepEqual(got, [0, 1, 2, 3, 4, 5, 6, 7]);
  } finally {
    socket.close();
    await node.stop('SIGKILL');
  }
});

test('a node killed with SIGKILL right after answering 201 to a burst loses none of it', async () => {
  const victim = await startTwine({ args: nodeArgs(), env: dynamo.env });
  const room = 'killed';
  const burst = await Promise.all(Array.from({ length: 300 }, (_, n) => publish(victim, room, { n })));
  assert.ok(burst.every((r) => r.status === 201));
  await victim.stop('SIGKILL');
  // The surviving nodes take over what the dead one had claimed but not acknowledged.
  let items = [];
  for (let i = 0; i < 150 && items.length < 300; i++) {
    items = await archivedItems(dynamo, TABLE, room);
    if (items.length < 300) await sleep(200);
  }
  assert.equal(items.length, 300, 'every accepted message is in DynamoDB');
  assert.deepEqual(items.map((i) => i.payload.n).sort((a, b) => a - b), [...Array(300).keys()]);
  const ts = items.map((i) => i.timestamp);
  assert.equal(new Set(ts).size, 300, 'distinct timestamps');
  assert.ok(items.every((i) => i.expiresAt > Date.now() / 1000 + 3600), 'items carry a TTL a window ahead');
});

test('publishing keeps working while DynamoDB is down; the backlog drains when it is back', async () => {
  const room = 'dynamo-outage';
  await dynamo?.stop();
  for (let n = 0; n < 50; n++) assert.equal((await publish(nodes[0], room, { n })).status, 201);
  assert.equal((await fetch(`${nodes[0].url}/`)).status, 201, 'healthy: publishing works');
  await sleep(500);
  assert.ok((await backlog(nodes[0])) >= 50, 'the backlog is visible in /metrics');
  await dynamo.start();
  let left = Infinity;
  for (let i = 0; i < 150 && left > 0; i++) {
    left = await backlog(nodes[0]);
    if (left > 0) await sleep(200);
  }
  assert.equal(left, 0, 'backlog drained');
  const items = await archivedItems(dynamo, TABLE, room);
  assert.deepEqual(items.map((i) => i.payload.n), [...Array(50).keys()], 'history complete, in order');
});

test('drain rate: a backlog of 2000 messages', async (t) => {
  const room = 'drain';
  await dynamo?.stop();
  for (let i = 0; i < 2000; i += 100) {
    const batch = await Promise.all(Array.from({ length: 100 }, (_, k) => publish(nodes[0], room, { n: i + k })));
    assert.ok(batch.every((r) => r.status === 201));
  }
  await dynamo.start();
  const started = Date.now();
  let left = Infinity;
  for (let i = 0; i < 600 && left > 0; i++) {
    left = await backlog(nodes[0]);
    if (left > 0) await sleep(50);
  }
  const seconds = (Date.now() - started) / 1000;
  assert.equal(left, 0);
  t.diagnostic(`archive drain: 2000 messages in ${seconds.toFixed(2)} s (${Math.round(2000 / seconds)} msg/s, 2 nodes, dynalite)`);
  assert.equal((await archivedItems(dynamo, TABLE, room)).length, 2000);
});
