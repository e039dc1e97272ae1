// Counts the pub/sub messages a `redis` v4 client (plain or cluster) hands to its listeners, so a
// peer can say on `GET /metrics` how many messages it took from Redis: what the benchmark compares
// for a node whose clients are in rooms that get no traffic. The metric has our server's name
// (`twine_redis_messages_received_total`), so the load generator reads both the same way.
export function countReceived(client) {
  const counter = { received: 0 };
  for (const method of ['subscribe', 'pSubscribe', 'sSubscribe']) {
    if (typeof client[method] !== 'function') continue;
    const subscribe = client[method].bind(client);
    client[method] = (channels, listener, bufferMode) =>
      subscribe(
        channels,
        (...args) => {
          counter.received += 1;
          return listener(...args);
        },
        bufferMode,
      );
  }
  return () =>
    '# TYPE twine_redis_messages_received_total counter\n' +
    `twine_redis_messages_received_total ${counter.received}\n`;
}
