// Graceful shutdown: on SIGTERM or SIGINT the server closes every socket in a way that makes
// clients reconnect (elsewhere, behind a load balancer) and exits 0.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startTwine } from '../js-fixtures/server.mjs';
import { io, until } from '../js-fixtures/clients.mjs';

for (const signal of ['SIGTERM', 'SIGINT']) {
  test(`${signal} closes sockets so clients reconnect, and exits 0`, async () => {
    const server = await startTwine();
    const reasons = [];
    const sockets = ['websocket', 'polling'].map((transport) => {
      const s = io(server.url, { forceNew: true, transports: [transport], reconnectionDelay: 60000 });
      s.on('disconnect', (reason) => reasons.push(reason));
      return s;
    });
    try {
      await until(() => sockets.every((s) => s.connected), 5000, 'both connected');
      const started = Date.now();
      const { code } = await server.stop(signal);
      assert.equal(code, 0);
      assert.ok(Date.now() - started < 10000, 'exits promptly');
      await until(() => reasons.length === 2, 5000, 'both disconnected');
      for (const reason of reasons) {
        assert.ok(['transport close', 'transport error'].includes(reason), `reason ${reason}`);
      }
      assert.ok(sockets.every((s) => s.active), 'clients will reconnect by themselves');
    } finally {
      for (const s of sockets) s.close();
    }
  });
}
