// The Twine contract on socket.io 4.8 with connection state recovery and
// `@socket.io/redis-streams-adapter`: the peer that also recovers. Every broadcast goes through a
// Redis stream; a client that reconnects within two minutes with the `pid` and last `offset` it
// was given (stock socket.io-client does this by itself) gets its rooms back and every packet
// of its rooms it missed, from the stream. Sessions live in Redis, so a client may come back on
// another node.
//
// Environment: as server.mjs, plus REDIS_URL (default redis://127.0.0.1:6379).
import { createClient } from 'redis';
import { createAdapter } from '@socket.io/redis-streams-adapter';
import { startPeer } from './contract.mjs';

const url = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
const client = createClient({ url });
client.on('error', (e) => console.error(`redis: ${e.message}`));
await client.connect();

startPeer({
  // The defaults of socket.io's documentation: two minutes away, middlewares skipped on recovery.
  options: { connectionStateRecovery: { maxDisconnectionDuration: 2 * 60 * 1000, skipMiddlewares: true } },
  adapter: createAdapter(client),
  close: () => client.quit(),
});
