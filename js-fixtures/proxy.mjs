// A TCP proxy that adds latency: every chunk waits `rtt / 2` in each direction, so a browser
// behind it sees the server `rtt` further away, as over a real network.
import net from 'node:net';

/** Starts a proxy to 127.0.0.1:`targetPort` on a free port: { url, port, stop() }. */
export async function startDelayingProxy(targetPort, { rtt = 200 } = {}) {
  const oneWay = rtt / 2;
  const sockets = new Set();
  const relay = (from, to) => {
    // Chunks are held, not reordered: each leaves `oneWay` after it arrived, in arrival order.
    from.on('data', (chunk) => setTimeout(() => to.writable && to.write(chunk), oneWay));
    from.on('end', () => setTimeout(() => to.end(), oneWay));
    from.on('error', () => to.destroy());
    from.on('close', () => setTimeout(() => to.destroy(), oneWay));
  };
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    }
    relay(client, upstream);
    relay(upstream, client);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    stop: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(resolve);
      }),
  };
}
