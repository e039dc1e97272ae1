// Clients other than socket.io-client 4: python-socketio, and socket.io-client 2 (Engine.IO v3 /
// Socket.IO v4 protocol), served by the same node at the same time as current clients.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { startTwine } from '../js-fixtures/server.mjs';
import { connect, fetchCookie, publish, subscribe, until } from '../js-fixtures/clients.mjs';

const fixtures = createRequire(new URL('../js-fixtures/package.json', import.meta.url));
const python = process.env.PYTHON ?? 'python3';

let server;
before(async () => {
  server = await startTwine();
});
after(() => server?.stop());

test('python-socketio connects with the cookie, subscribes, receives and acknowledges', async () => {
  const room = 'py-room';
  const script = new URL('../js-fixtures/python/client.py', import.meta.url).pathname;
  const proc = spawn(python, [script, server.url, room, '5'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines = [];
  let stderr = '';
  let partial = ''; // a chunk may end inside a line
  proc.stdout.on('data', (chunk) => {
    const text = partial + chunk;
    const complete = text.split('\n');
    partial = complete.pop();
    for (const line of complete.filter(Boolean)) lines.push(JSON.parse(line));
  });
  proc.stderr.on('data', (c) => (stderr += c));
  const exited = new Promise((resolve) => proc.on('exit', resolve));
  try {
    await until(() => lines.some((l) => l.ready), 15000, `python client ready (${stderr})`);
    const joined = lines.find((l) => l.roomJoined);
    assert.equal(joined.roomJoined, `You have joined room: ${room}`);
    for (let n = 0; n < 5; n++) assert.equal((await publish(server, room, { n })).status, 201);
    assert.equal(await exited, 0, stderr);
    // python-engineio hands each message to its handler on a thread of its own, so the lines
    // may come in any order; the order the server gave them is in their timestamps.
    const messages = lines.filter((l) => l.message).map((l) => l.message);
    messages.sort((a, b) => a.timestamp - b.timestamp);
    assert.deepEqual(messages.map((m) => m.n), [0, 1, 2, 3, 4]);
    assert.ok(messages.every((m) => m.room === room && Number.isInteger(m.timestamp)));
  } finally {
    proc.kill();
  }
});

test('socket.io-client 2 (Engine.IO v3) and socket.io-client 4 share a room on one node', async () => {
  const ioV2 = fixtures('socket.io-client-v2');
  const room = 'v2-room';
  const cookie = await fetchCookie(server.url);
  const old = ioV2(server.url, {
    forceNew: true,
    reconnection: false,
    transportOptions: { polling: { extraHeaders: { Cookie: cookie } } },
  });
  const current = await connect(server.url);
  try {
    const got = [];
    const joined = [];
    old.on('message', (m) => got.push(m));
    old.on('roomJoined', (m) => joined.push(m));
    await until(() => old.connected, 5000, 'v2 connect');
    old.emit('subscribe', room);
    await until(() => joined.length === 1, 5000, 'v2 roomJoined');
    assert.equal(joined[0], `You have joined room: ${room}`);
    await subscribe(current, room);
    for (let n = 0; n < 3; n++) await publish(server, room, { n });
    await until(() => got.length === 3 && current.messages.length === 3, 5000, 'both receive');
    assert.deepEqual(got.map((m) => m.n), [0, 1, 2]);
    assert.deepEqual(got.map((m) => m.timestamp), current.messages.map((m) => m.timestamp));
    await until(() => old.io.engine.transport.name === 'websocket', 5000, 'v2 upgrade');
  } finally {
    old.close();
    current.close();
  }
});
