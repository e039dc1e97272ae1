// A TCP proxy to put between twine nodes and Redis (or any TCP service) that breaks the link on
// command, so a test can land a Redis fault at an exact step of the protocol:
//
//   const proxy = await startFaultyProxy(redis.port);
//   startTwine({ args: ['--redis-url', proxy.url] });
//
// - `pause()`: nothing is forwarded either way; bytes are held in order and sockets stay open (a
//   Redis that stops answering, a stalled network). `resume()` forwards what was held, then goes
//   on. Connections opened meanwhile are accepted and held the same way. Requests sent during a
//   pause still reach Redis when it resumes, as they would after a stall.
// - `delay(ms)`: every chunk, in either direction, is forwarded `ms` after it arrived (order
//   kept); `delay(0)` ends it. It adds to a pause: held chunks leave in order once both allow.
// - `reset()`: every current connection is destroyed with a TCP RST on both sides
//   (`socket.resetAndDestroy()`); what was held is lost. Connections made afterwards work.
// - `blackhole()`: connections are accepted and kept, and everything is silently discarded both
//   ways until `heal()`. Connections opened meanwhile are never connected upstream.
// - `heal()`: ends a pause (forwarding what was held), a delay and a blackhole. A connection that
//   lost bytes to the blackhole cannot carry on (its byte stream has a hole, which TCP never
//   gives a peer), so it is reset then, as a network that forgot a flow answers it with RST;
//   connections made afterwards work.
//
// `stats()` counts, for assertions: connections accepted (`connections`), open now (`open`),
// bytes forwarded toward the service (`toService`) and toward clients (`toClients`), bytes held
// now (`held`), bytes discarded by the blackhole (`discarded`) and connections reset (`resets`).
// Only 127.0.0.1 is used.
import net from 'node:net';

/**
 * Starts a proxy on a free 127.0.0.1 port forwarding to 127.0.0.1:`targetPort`:
 * { port, url (redis://), pause(), resume(), delay(ms), reset(), blackhole(), heal(), stats(),
 *   state(), stop() }.
 */
export async function startFaultyProxy(targetPort) {
  const mode = { paused: false, blackholed: false, delayMs: 0 };
  const counts = { connections: 0, toService: 0, toClients: 0, discarded: 0, resets: 0 };
  /** Every live connection: { client, upstream, lanes: [toService, toClients], holed }. */
  const links = new Set();

  /**
   * One direction of one connection: chunks wait here, in arrival order, until neither a pause
   * nor their delay holds them. `null` stands for the end of the stream (a half-close).
   */
  const lane = (to, counter) => ({ to, counter, queue: [], timer: null, ended: false });

  const pump = (l) => {
    if (l.timer) {
      clearTimeout(l.timer);
      l.timer = null;
    }
    while (l.queue.length > 0 && !mode.paused && !mode.blackholed) {
      const head = l.queue[0];
      const wait = head.due - Date.now();
      if (wait > 0) {
        l.timer = setTimeout(() => pump(l), wait);
        return;
      }
      l.queue.shift();
      if (head.chunk === null) {
        if (!l.to.destroyed) l.to.end();
      } else if (!l.to.destroyed && l.to.writable) {
        l.to.write(head.chunk);
        counts[l.counter] += head.chunk.length;
      }
    }
  };

  const take = (link, l, chunk) => {
    if (mode.blackholed || link.holed) {
      link.holed = true;
      if (chunk) counts.discarded += chunk.length;
      return;
    }
    l.queue.push({ chunk, due: Date.now() + mode.delayMs });
    pump(l);
  };

  const drop = (link) => {
    if (!links.delete(link)) return;
    for (const l of link.lanes) if (l.timer) clearTimeout(l.timer);
  };

  const rst = (socket) => {
    if (!socket || socket.destroyed) return;
    if (socket.connecting || socket.readyState !== 'open') socket.destroy();
    else socket.resetAndDestroy();
  };

  const resetLink = (link) => {
    counts.resets += 1;
    rst(link.client);
    rst(link.upstream);
    drop(link);
  };

  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    counts.connections += 1;
    const link = { client, upstream: null, lanes: [], holed: mode.blackholed };
    links.add(link);
    client.on('error', () => {});
    if (link.holed) {
      // Never connected upstream: whatever the client sends falls into the hole.
      client.on('data', (chunk) => (counts.discarded += chunk.length));
      client.on('close', () => drop(link));
      return;
    }
    const upstream = net.connect({ port: targetPort, host: '127.0.0.1', allowHalfOpen: true });
    link.upstream = upstream;
    upstream.on('error', () => {});
    const toService = lane(upstream, 'toService');
    const toClients = lane(client, 'toClients');
    link.lanes = [toService, toClients];
    client.on('data', (chunk) => take(link, toService, chunk));
    upstream.on('data', (chunk) => take(link, toClients, chunk));
    const ended = (l) => () => {
      if (l.ended) return;
      l.ended = true;
      take(link, l, null);
    };
    client.on('end', ended(toService));
    upstream.on('end', ended(toClients));
    // A side that was reset takes the other down with a reset; one that closed passes its end
    // on (after what it sent before).
    const gone = (other, towardOther) => (hadError) => {
      if (hadError) rst(other);
      else ended(towardOther)();
      if (client.destroyed && upstream.destroyed) drop(link);
    };
    client.on('close', gone(upstream, toService));
    upstream.on('close', gone(client, toClients));
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  const pumpAll = () => {
    for (const link of links) for (const l of link.lanes) pump(l);
  };

  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    pause() {
      mode.paused = true;
    },
    resume() {
      mode.paused = false;
      pumpAll();
    },
    delay(ms) {
      mode.delayMs = ms;
    },
    reset() {
      for (const link of [...links]) resetLink(link);
    },
    blackhole() {
      mode.blackholed = true;
      for (const link of links) {
        link.holed = true;
        for (const l of link.lanes) {
          for (const { chunk } of l.queue) if (chunk) counts.discarded += chunk.length;
          l.queue.length = 0;
        }
      }
    },
    heal() {
      mode.blackholed = false;
      mode.paused = false;
      mode.delayMs = 0;
      for (const link of [...links]) if (link.holed) resetLink(link);
      pumpAll();
    },
    /** What the proxy is doing now: { paused, blackholed, delayMs }. */
    state: () => ({ ...mode }),
    stats() {
      let held = 0;
      for (const link of links) {
        for (const l of link.lanes) for (const { chunk } of l.queue) held += chunk?.length ?? 0;
      }
      return { ...counts, open: links.size, held };
    },
    stop() {
      for (const link of [...links]) resetLink(link);
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
