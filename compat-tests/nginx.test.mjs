// Sticky sessions, shown working: two nodes on one Redis behind Debian's nginx with
// compat-tests/nginx/twine-sticky.conf. Default clients (polling, then upgrade) need every
// request of a session to reach the same node; ten sessions in a row all connect, upgrade and
// receive through the proxy.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTwine } from '../js-fixtures/server.mjs';
import { startNginx, startRedis } from '../js-fixtures/services.mjs';
import { fetchCookie, io, publish, until } from '../js-fixtures/clients.mjs';

let redis;
let nodes;
let proxy;
before(async () => {
  redis = await startRedis();
  nodes = [];
  for (let i = 0; i < 2; i++) nodes.push(await startTwine({ args: ['--redis-url', redis.url] }));
  proxy = await startNginx(nodes.map((n) => n.port));
});
after(async () => {
  await proxy?.stop();
  for (const n of nodes ?? []) await n.stop();
  await redis?.stop();
});

test('polling then upgrade works through the cookie-pinned proxy for every session', async () => {
  const sockets = [];
  try {
    for (let i = 0; i < 10; i++) {
      const cookie = await fetchCookie(proxy.url);
      const socket = io(proxy.url, { forceNew: true, reconnection: false, extraHeaders: { Cookie: cookie } });
      socket.got = [];
      socket.on('message', (m) => socket.got.push(m));
      let upgraded = false;
      socket.io.on('open', () => {
        assert.equal(socket.io.engine.transport.name, 'polling');
        socket.io.engine.on('upgrade', () => (upgraded = true));
      });
      await until(() => socket.connected && upgraded, 5000, `session ${i} connected and upgraded`);
      socket.emit('subscribe', 'behind-proxy');
      await new Promise((r) => socket.once('roomJoined', r));
      sockets.push(socket);
    }
    const via = { ...nodes[0], url: proxy.url };
    assert.equal((await publish(via, 'behind-proxy', { n: 1 })).status, 201);
    await until(() => sockets.every((s) => s.got.length === 1), 5000, 'every session receives');
  } finally {
    for (const s of sockets) s.close();
  }
});
