// The Twine contract on socket.io 4.8 with `@socket.io/redis-adapter`: what a Node user runs to
// share live delivery between several nodes (Redis pub/sub, no history, no recovery). The
// benchmark starts two of these on one Redis as the peer of our Redis mode. Every node receives
// every broadcast (one pattern subscription); `GET /metrics` counts them.
//
// Environment: as server.mjs, plus REDIS_URL (default redis://127.0.0.1:6379).
import { createClient } from 'redis';
import { createAdapter } from '@socket.io/redis-adapter';
import { startPeer } from './contract.mjs';
import { countReceived } from './redis-count.mjs';

const url = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
const pub = createClient({ url });
const sub = pub.duplicate();
for (const client of [pub, sub]) client.on('error', (e) => console.error(`redis: ${e.message}`));
await Promise.all([pub.connect(), sub.connect()]);
const metrics = countReceived(sub);

startPeer({
  adapter: createAdapter(pub, sub),
  close: () => Promise.all([pub.quit(), sub.quit()]),
  metrics,
});
