// The published Twine packages, unchanged: twine-server-library publishes from a backend and
// twine-client-library subscribes and acknowledges from a (Node) frontend.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { startTwine } from '../js-fixtures/server.mjs';
import { connect, subscribe, until } from '../js-fixtures/clients.mjs';

const fixtures = createRequire(new URL('../js-fixtures/package.json', import.meta.url));
const load = async (name) => (await import(fixtures.resolve(name))).default;

let server;
before(async () => {
  server = await startTwine();
});
after(() => server?.stop());

/** Runs `fn` while collecting what the libraries print, and returns the lines. */
async function printed(fn) {
  const lines = [];
  const original = console.log;
  console.log = (...args) => lines.push(args.join(' '));
  try {
    await fn();
  } finally {
    console.log = original;
  }
  return lines;
}

test('twine-server-library publishes and subscribers receive it', async () => {
  const TwineServerLibrary = await load('twine-server-library');
  const socket = await connect(server.url);
  try {
    await subscribe(socket, 'lib-server');
    const backend = new TwineServerLibrary(server.url, server.apiKey);
    const lines = await printed(() => backend.publish('lib-server', { text: 'from backend' }));
    assert.deepEqual(lines, ['publish status: 201']);
    await until(() => socket.messages.length === 1, 3000, 'message');
    assert.equal(socket.messages[0].text, 'from backend');
    assert.equal(socket.messages[0].room, 'lib-server');

    const wrong = new TwineServerLibrary(server.url, 'not-the-key');
    assert.deepEqual(await printed(() => wrong.publish('lib-server', { a: 1 })), ['publish status: 401']);
  } finally {
    socket.close();
  }
});

test('twine-client-library connects, subscribes, receives and acknowledges', async () => {
  const TwineClientLibrary = await load('twine-client-library');
  const TwineServerLibrary = await load('twine-server-library');
  const backend = new TwineServerLibrary(server.url, server.apiKey);
  let client;
  const lines = await printed(async () => {
    client = new TwineClientLibrary(server.url);
    await until(() => client.socket?.connected, 5000, 'client library connect');
  });
  assert.ok(lines.includes('Connected to the Twine server'), lines.join('\n'));
  try {
    const received = [];
    const acks = [];
    const emit = client.socket.emit.bind(client.socket);
    client.socket.emit = (event, ...args) => {
      if (event === 'updateSessionTS') acks.push(args[0]);
      return emit(event, ...args);
    };
    let roomJoined = false;
    client.socket.once('roomJoined', () => (roomJoined = true));
    const joined = await printed(async () => {
      client.subscribe('lib-client');
      client.listenOn('lib-client', (payload) => received.push(payload));
      await until(() => client.socket.listeners('message').length > 0, 3000, 'listenOn');
      await until(() => roomJoined, 3000, 'roomJoined');
      await new Promise((r) => setTimeout(r, 20));
    });
    assert.ok(joined.includes('You have joined room: lib-client'), joined.join('\n'));
    await printed(async () => {
      for (let n = 0; n < 5; n++) await backend.publish('lib-client', { n });
      await backend.publish('other-room', { n: 99 });
    });
    await until(() => received.length === 5, 3000, 'five messages');
    assert.deepEqual(received.map((p) => p.n), [0, 1, 2, 3, 4]);
    assert.ok(received.every((p) => p.room === 'lib-client' && typeof p.timestamp === 'number'));
    assert.deepEqual(acks, received.map((p) => p.timestamp), 'the library acknowledges each message');
  } finally {
    client.disconnect();
  }
});
