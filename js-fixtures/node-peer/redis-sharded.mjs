// The Twine contract on socket.io 4.8 with `@socket.io/redis-adapter`'s sharded adapter on a Redis
// Cluster: what a Node user runs on a cluster (Redis 7 sharded pub/sub, `SSUBSCRIBE` /
// `SPUBLISH`, no history, no recovery). Subscription mode "dynamic": one channel per public room,
// so a node subscribes only to the rooms its clients are in (and each channel lives on the
// primary that owns its slot). `GET /metrics` counts the messages the node took from Redis.
//
// Environment: as server.mjs, plus REDIS_URL: the cluster's seeds, comma-separated
// (`redis://127.0.0.1:7000,redis://127.0.0.1:7001`).
import { createCluster } from 'redis';
import { createShardedAdapter } from '@socket.io/redis-adapter';
import { startPeer } from './contract.mjs';
import { countReceived } from './redis-count.mjs';

const seeds = (process.env.REDIS_URL || 'redis://127.0.0.1:7000')
  .split(',')
  .map((url) => url.trim())
  .filter(Boolean);
const pub = createCluster({ rootNodes: seeds.map((url) => ({ url })) });
const sub = pub.duplicate();
for (const client of [pub, sub]) client.on('error', (e) => console.error(`redis: ${e.message}`));
await Promise.all([pub.connect(), sub.connect()]);
const metrics = countReceived(sub);

startPeer({
  adapter: createShardedAdapter(pub, sub, { subscriptionMode: 'dynamic' }),
  close: () => Promise.all([pub.quit(), sub.quit()]),
  metrics,
});
