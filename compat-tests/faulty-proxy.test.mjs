// The Redis fault harness itself (js-fixtures/faulty-proxy.mjs), against a real redis-server and
// raw RESP over TCP: what redis-faults.test.mjs relies on when it pauses, delays, resets or
// blackholes the link.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startRedis } from '../js-fixtures/services.mjs';
import { startFaultyProxy } from '../js-fixtures/faulty-proxy.mjs';
import { until, sleep } from '../js-fixtures/clients.mjs';

let redis;
let proxy;
before(async () => {
  redis = await startRedis();
  proxy = await startFaultyProxy(redis.port);
});
after(async () => {
  await proxy?.stop();
  await redis?.stop();
});

/** A raw connection through the proxy: { socket, text (all it received), closed (its error code, or `closed`) }. */
async function dial() {
  const socket = net.connect(proxy.port, '127.0.0.1');
  const link = { socket, text: '', closed: null };
  socket.on('data', (chunk) => (link.text += chunk));
  socket.on('error', (e) => (link.closed = e.code));
  socket.on('close', () => (link.closed ??= 'closed'));
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return link;
}

test('forwards both ways and counts what it forwarded', async () => {
  const before = proxy.stats();
  const link = await dial();
  link.socket.write('PING\r\n');
  await until(() => link.text === '+PONG\r\n', 2000, 'PONG');
  const after = proxy.stats();
  assert.equal(after.connections - before.connections, 1);
  assert.equal(after.toService - before.toService, 6);
  assert.equal(after.toClients - before.toClients, 7);
  link.socket.destroy();
});

test('pause holds bytes both ways with sockets open; resume delivers them in order; new connections wait too', async () => {
  const link = await dial();
  let late;
  proxy.pause();
  try {
    const requests = 'SET faulty-proxy 1\r\nGET faulty-proxy\r\n';
    link.socket.write(requests);
    late = await dial();
    late.socket.write('PING\r\n');
    await sleep(300);
    assert.equal(link.text, '', 'nothing answered while paused');
    assert.equal(late.text, '', 'a new connection is held as well');
    assert.equal(link.closed, null, 'the connection stays open');
    assert.equal(proxy.stats().held, requests.length + 'PING\r\n'.length);
    proxy.resume();
    await until(() => link.text === '+OK\r\n$1\r\n1\r\n' && late.text === '+PONG\r\n', 2000, 'the held requests answered');
    assert.equal(proxy.stats().held, 0);
  } finally {
    proxy.heal();
    link.socket.destroy();
    late?.socket.destroy();
  }
});

test('delay adds its latency to each direction', async () => {
  const link = await dial();
  proxy.delay(100);
  try {
    const sent = Date.now();
    link.socket.write('PING\r\n');
    await until(() => link.text === '+PONG\r\n', 2000, 'PONG');
    const rtt = Date.now() - sent;
    assert.ok(rtt >= 195, `round trip ${rtt} ms`);
  } finally {
    proxy.heal();
    link.socket.destroy();
  }
});

test('reset destroys every connection with RST; connections made afterwards work', async () => {
  await until(() => proxy.stats().open === 0, 2000, 'the earlier connections closed and forgotten');
  const links = [await dial(), await dial()];
  const resets = proxy.stats().resets;
  proxy.reset();
  await until(() => links.every((l) => l.closed), 2000, 'both closed');
  assert.deepEqual(links.map((l) => l.closed), ['ECONNRESET', 'ECONNRESET']);
  assert.equal(proxy.stats().resets - resets, 2);
  const fresh = await dial();
  fresh.socket.write('PING\r\n');
  await until(() => fresh.text === '+PONG\r\n', 2000, 'PONG after the reset');
  fresh.socket.destroy();
});

test('blackhole discards everything silently with connections open; heal resets those and new ones work', async () => {
  const link = await dial();
  proxy.blackhole();
  try {
    const discarded = proxy.stats().discarded;
    link.socket.write('PING\r\n');
    const late = await dial();
    late.socket.write('PING\r\n');
    await sleep(300);
    assert.equal(link.text, '');
    assert.equal(late.text, '');
    assert.equal(link.closed, null, 'nothing tells the client');
    assert.equal(proxy.stats().discarded - discarded, 12);
    proxy.heal();
    await until(() => link.closed && late.closed, 2000, 'holed connections reset at heal');
    assert.equal(link.closed, 'ECONNRESET');
    const fresh = await dial();
    fresh.socket.write('PING\r\n');
    await until(() => fresh.text === '+PONG\r\n', 2000, 'PONG after heal');
    fresh.socket.destroy();
  } finally {
    proxy.heal();
    link.socket.destroy();
  }
});
