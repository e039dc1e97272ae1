// The Socket.IO Admin UI's protocol on `/admin` (`@socket.io/admin-ui` 0.5), spoken to by a
// stock socket.io-client as the UI does: the login (a bcrypt hash made here with bcryptjs),
// `config`, `server_stats`, `all_sockets`, the live events of a Twine client's life, nothing
// secret in anything the namespace sends, the listing's bound with thousands of clients, the
// operations with `--admin-readonly off`, and the UI's own pages at `/admin/`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startTwine, runTwine } from '../js-fixtures/server.mjs';
import { connect, fetchCookie, subscribe, until, untilEvent, sleep } from '../js-fixtures/clients.mjs';
import { connectAdmin, hashPassword } from '../js-fixtures/admin.mjs';
import { crowd } from '../js-fixtures/raw.mjs';
import { startRedis } from '../js-fixtures/services.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const uiDir = path.join(root, 'js-fixtures/node_modules/@socket.io/admin-ui/ui/dist');
const USERNAME = 'operator';
const PASSWORD = 'correct horse battery';
const HASH = hashPassword(PASSWORD);
const API_KEY = 'admin-test-api-key-0123456789';
const ADMIN_ARGS = ['--admin', 'on', '--admin-username', USERNAME, '--admin-password-hash', HASH];

/** Connects to `/admin` as the Admin UI does, recording every event (name and arguments). */
const admin = (server, auth = { username: USERNAME, password: PASSWORD }) => connectAdmin(server, auth);

const of = (socket, event) => socket.received.filter((e) => e.event === event);

test('--admin on without a login is refused at start, never an open admin', async () => {
  const { code, output } = await runTwine(['--admin', 'on'], { TWINE_API_KEY: API_KEY });
  assert.notEqual(code, 0);
  assert.match(output, /--admin-username/);
  const notAHash = await runTwine([...ADMIN_ARGS.slice(0, 4), '--admin-password-hash', PASSWORD]);
  assert.notEqual(notAHash.code, 0);
  assert.match(notAHash.output, /bcrypt/);
});

let server;
before(async () => {
  server = await startTwine({ args: [...ADMIN_ARGS, '--admin-ui-dir', uiDir], apiKey: API_KEY });
});
after(() => server?.stop());

test('without --admin the namespace is not served', async () => {
  const plain = await startTwine({ args: ['--drain-delay', '0s'], apiKey: API_KEY });
  try {
    await assert.rejects(admin(plain));
  } finally {
    await plain.stop();
  }
});

test('a wrong password is refused; the right one gets config, server_stats and all_sockets', async () => {
  await assert.rejects(admin(server, { username: USERNAME, password: 'wrong' }), /invalid credentials/);
  await assert.rejects(admin(server, { username: 'root', password: PASSWORD }), /invalid credentials/);
  await assert.rejects(admin(server, {}), /invalid credentials/);
  const ui = await admin(server);
  try {
    await until(() => of(ui, 'config').length && of(ui, 'all_sockets').length && of(ui, 'server_stats').length, 5000, 'greeting');
    const [config] = of(ui, 'config')[0].args;
    assert.deepEqual(config.supportedFeatures, ['AGGREGATED_EVENTS', 'ALL_EVENTS'], 'read-only by default');
    assert.ok(Array.isArray(of(ui, 'all_sockets')[0].args[0]));
    assert.equal(typeof of(ui, 'session')[0]?.args[0], 'string', 'a session id for reconnecting');
    const [stats] = of(ui, 'server_stats')[0].args;
    for (const field of ['serverId', 'hostname', 'pid', 'uptime', 'clientsCount', 'pollingClientsCount', 'aggregatedEvents', 'namespaces']) {
      assert.ok(field in stats, `server_stats has ${field}`);
    }
    assert.equal(stats.pid, server.proc.pid);
    assert.deepEqual(stats.namespaces.map((n) => n.name), ['/', '/admin']);
    // The session id logs in again without the password.
    const again = await admin(server, { sessionId: of(ui, 'session')[0].args[0] });
    again.close();
  } finally {
    ui.close();
  }
});

test("a Twine client's life arrives live, and nothing secret is ever sent", async () => {
  const ui = await admin(server);
  const cookie = await fetchCookie(server.url);
  const twineid = cookie.split('=')[1];
  const authToken = 'auth-token-value-abcdef123456';
  let client;
  try {
    await until(() => of(ui, 'all_sockets').length, 5000, 'all_sockets');
    client = await connect(server.url, {
      cookie,
      options: {
        auth: { token: authToken },
        query: { token: authToken, apiKey: API_KEY },
        extraHeaders: { Cookie: cookie, Authorization: `Bearer ${API_KEY}`, 'X-Api-Key': API_KEY },
      },
    });
    // The only client connecting now. The UI knows it under a pseudonym, never its id (which
    // is its Engine.IO session id, all a long-polling request needs to act as it).
    await until(() => of(ui, 'socket_connected').length === 1, 5000, 'socket_connected');
    const [socket, at] = of(ui, 'socket_connected')[0].args;
    const id = socket.id;
    assert.notEqual(id, client.id);
    assert.match(id, /^[0-9a-f]{20}$/);
    assert.equal(socket.nsp, '/');
    assert.ok(['polling', 'websocket'].includes(socket.transport));
    assert.equal(socket.handshake.address, '127.0.0.1');
    assert.ok(socket.handshake.headers.cookie, 'the cookie header is listed, its value not');
    assert.ok(!Number.isNaN(Date.parse(at)));

    await subscribe(client, 'lobby');
    await until(() => of(ui, 'room_joined').some((e) => e.args[2] === id), 5000, 'room_joined');
    assert.deepEqual(of(ui, 'room_joined').find((e) => e.args[2] === id).args.slice(0, 3), ['/', 'lobby', id]);

    client.emit('unsubscribe', 'lobby');
    await untilEvent(client, 'roomLeft', 'You have left room: lobby');
    await until(() => of(ui, 'room_left').some((e) => e.args[2] === id), 5000, 'room_left');
    assert.deepEqual(of(ui, 'room_left').find((e) => e.args[2] === id).args.slice(0, 3), ['/', 'lobby', id]);

    await subscribe(client, 'kept');
    // A later admin lists the client with its rooms.
    const late = await admin(server);
    await until(() => of(late, 'all_sockets').length, 5000, 'all_sockets');
    const listed = of(late, 'all_sockets')[0].args[0].find((s) => s.id === id);
    assert.deepEqual(listed.rooms, ['kept']);
    late.received.forEach((e) => ui.received.push(e));
    late.close();

    client.close();
    await until(() => of(ui, 'socket_disconnected').some((e) => e.args[1] === id), 5000, 'socket_disconnected');
    await sleep(2100); // one more server_stats
    const sent = JSON.stringify(ui.received);
    for (const secret of [twineid, API_KEY, authToken, client.id, client.io.engine.id]) {
      assert.ok(!sent.includes(secret), `${secret} appears in what /admin sent`);
    }
    assert.ok(!/twineid=/.test(sent), 'no twineid cookie pair');
    assert.ok(!/"event_(received|sent)"/.test(sent), "no event's arguments");
    const connections = of(ui, 'server_stats').flatMap((e) => e.args[0].aggregatedEvents).filter((e) => e.type === 'rawConnection');
    assert.ok(connections.length > 0, 'aggregated connections');
  } finally {
    client?.close();
    ui.close();
  }
});

test('the UI pages are served at /admin/', async () => {
  const page = await fetch(`${server.url}/admin/`);
  assert.equal(page.status, 200);
  assert.match(await page.text(), /Socket\.IO Admin UI/);
  const bare = await fetch(`${server.url}/admin`, { redirect: 'manual' });
  assert.equal(bare.status, 308);
  assert.equal(bare.headers.get('location'), '/admin/');
});

test('operations need --admin-readonly off, and reach this node', async () => {
  const node = await startTwine({ args: [...ADMIN_ARGS, '--admin-readonly', 'off', '--drain-delay', '0s'], apiKey: API_KEY });
  let client;
  let ui;
  try {
    ui = await admin(node);
    await until(() => of(ui, 'config').length, 5000, 'config');
    assert.deepEqual(of(ui, 'config')[0].args[0].supportedFeatures, ['JOIN', 'LEAVE', 'DISCONNECT', 'AGGREGATED_EVENTS', 'ALL_EVENTS']);
    client = await connect(node.url, { cookie: await fetchCookie(node.url) });
    await until(() => of(ui, 'socket_connected').length === 1, 5000, 'socket_connected');
    const id = of(ui, 'socket_connected')[0].args[0].id;
    ui.emit('join', '/', 'ops-room', client.id); // its real id names nothing
    ui.emit('join', '/', 'ops-room', id);
    await untilEvent(client, 'roomJoined', 'You have joined room: ops-room');
    await until(() => of(ui, 'room_joined').some((e) => e.args[2] === id), 5000, 'room_joined');
    ui.emit('leave', '/', 'ops-room', id);
    await untilEvent(client, 'roomLeft', 'You have left room: ops-room');
    const gone = new Promise((r) => client.once('disconnect', r));
    ui.emit('_disconnect', '/', false, id);
    assert.equal(await gone, 'io server disconnect');
  } finally {
    client?.close();
    ui?.close();
    await node.stop();
  }
});

test('all_sockets lists a bounded number of the newest sockets with 5,000 clients', { timeout: 120_000 }, async () => {
  const node = await startTwine({ args: [...ADMIN_ARGS, '--drain-delay', '0s'], apiKey: API_KEY });
  let members = [];
  let ui;
  try {
    members = await crowd(node, 'crowd', 5000);
    ui = await admin(node);
    await until(() => of(ui, 'all_sockets').length && of(ui, 'server_stats').length, 10000, 'greeting');
    const listed = of(ui, 'all_sockets')[0].args[0];
    assert.equal(listed.length, 1000);
    const [stats] = of(ui, 'server_stats')[0].args;
    assert.equal(stats.namespaces[0].socketsCount, 5000);
    assert.equal(stats.listedSockets, 1000);
    assert.ok(listed.every((s) => s.rooms.includes('crowd')));
    // 500 leave at once: the live events stay within their rate, the rest counted dropped.
    for (const ws of members.slice(0, 500)) ws.close();
    const started = Date.now();
    const disconnected = () => of(ui, 'socket_disconnected').length;
    const dropped = () => of(ui, 'server_stats').reduce((n, e) => n + (e.args[0].droppedEvents ?? 0), 0);
    await until(() => disconnected() + dropped() === 500, 10000, 'every disconnection sent or counted dropped');
    const within = 400 + ((Date.now() - started) / 1000) * 200;
    assert.ok(disconnected() <= within, `${disconnected()} live events within the rate (${within})`);
  } finally {
    ui?.close();
    for (const ws of members) ws.close();
    await node.stop();
  }
});

test('wrong passwords are rate-limited per address', async () => {
  const refusals = [];
  for (let i = 0; i < 8; i++) {
    refusals.push(await admin(server, { username: USERNAME, password: `guess-${i}` }).catch((e) => e.message));
  }
  assert.ok(refusals.some((m) => /too many login attempts/.test(m)), refusals.join(', '));
  await assert.rejects(admin(server), /too many login attempts/, 'the right password waits too');
});

test('with Redis, an admin on one node sees and acts on every node', { timeout: 90_000 }, async () => {
  const redis = await startRedis();
  const args = ['--redis-url', redis.url, '--redis-prefix', 'admin-fleet', '--drain-delay', '0s', ...ADMIN_ARGS, '--admin-readonly', 'off'];
  const watched = await startTwine({ args, apiKey: API_KEY });
  const other = await startTwine({ args, apiKey: API_KEY });
  let ui;
  const clients = [];
  try {
    // Both nodes know each other (they announce themselves each second).
    const fleetSize = async (node) =>
      (await (await fetch(`${node.url}/api/fleet`, { headers: { Authorization: API_KEY } })).json()).nodes.length;
    for (const node of [watched, other]) {
      const deadline = Date.now() + 10000;
      while ((await fleetSize(node)) < 2) {
        assert.ok(Date.now() < deadline, 'the nodes see each other');
        await sleep(100);
      }
    }
    // Before the admin logs in: one client on each node, each in a room.
    for (const [node, room] of [[watched, 'here-room'], [other, 'there-room']]) {
      const client = await connect(node.url, { cookie: await fetchCookie(node.url) });
      await subscribe(client, room);
      clients.push(client);
    }
    ui = await admin(watched);
    await until(() => of(ui, 'all_sockets').length && of(ui, 'server_stats').length, 5000, 'greeting');
    const listed = of(ui, 'all_sockets')[0].args[0];
    assert.deepEqual(listed.map((s) => s.rooms).sort(), [['here-room'], ['there-room']], 'both nodes\' clients, with their rooms');
    const [mine] = of(ui, 'server_stats')[0].args;
    assert.equal(mine.pid, watched.proc.pid);
    await until(
      () => of(ui, 'server_stats').some((e) => e.args[0].serverId !== mine.serverId && e.args[0].clientsCount === 1),
      10000,
      "the other node's server_stats",
    );
    assert.equal(new Set(of(ui, 'server_stats').map((e) => e.args[0].serverId)).size, 2);

    // The other node learns from the fleet's announcements (each second) that an admin is
    // logged in here, and keeps its events for this node, which reads them every 500 ms.
    await sleep(3000);
    const cookie = await fetchCookie(other.url);
    const twineid = cookie.split('=')[1];
    const client = await connect(other.url, { cookie });
    clients.push(client);
    await until(() => of(ui, 'socket_connected').length === 1, 5000, 'socket_connected from the other node');
    const [socket] = of(ui, 'socket_connected')[0].args;
    const id = socket.id;
    assert.match(id, /^[0-9a-f]{20}$/);
    if (socket.transport === 'polling') {
      await until(() => of(ui, 'socket_updated').some((e) => e.args[0].id === id), 5000, 'socket_updated (the upgrade)');
      assert.deepEqual(of(ui, 'socket_updated').find((e) => e.args[0].id === id).args[0], { id, nsp: '/', transport: 'websocket' });
    }
    await subscribe(client, 'lobby');
    await until(() => of(ui, 'room_joined').some((e) => e.args[2] === id), 5000, 'room_joined from the other node');
    client.emit('unsubscribe', 'lobby');
    await until(() => of(ui, 'room_left').some((e) => e.args[2] === id), 5000, 'room_left from the other node');

    // Operations reach the other node's sockets: by id, and by room.
    ui.emit('join', '/', 'ops-room', id);
    await untilEvent(client, 'roomJoined', 'You have joined room: ops-room');
    ui.emit('leave', '/', 'there-room', 'there-room'); // every socket in the room, on every node
    await untilEvent(clients[1], 'roomLeft', 'You have left room: there-room');
    const gone = new Promise((r) => client.once('disconnect', r));
    ui.emit('_disconnect', '/', false, id);
    assert.equal(await gone, 'io server disconnect');
    await until(() => of(ui, 'socket_disconnected').some((e) => e.args[1] === id), 5000, 'socket_disconnected from the other node');
    const sent = JSON.stringify(ui.received);
    for (const secret of [twineid, API_KEY, client.id, client.io.engine.id]) {
      assert.ok(!sent.includes(secret), `${secret} appears in what /admin sent`);
    }
    // Only the nodes may ask each other.
    const forged = await fetch(`${other.url}/api/fleet/admin`, {
      method: 'POST',
      headers: { 'Twine-Relay': `x:${Date.now()}:${'0'.repeat(64)}` },
      body: JSON.stringify({ ask: 'sockets' }),
    });
    assert.equal(forged.status, 403);
  } finally {
    for (const c of clients) c.close();
    ui?.close();
    await Promise.all([watched.stop(), other.stop()]);
    await redis.stop();
  }
});
