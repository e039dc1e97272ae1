// A session in many rooms that drops and reconnects, run in a worker thread so that decoding its
// thousands of `roomJoined` events does not delay the test's own event loop, where other
// clients' arrival times are taken. workerData: { port, cookie, rooms }. Posts 'dropped' once
// the session has left; then, told to reconnect, 'rejoined' when every room was rejoined, and
// stays connected until terminated.
import { parentPort, workerData } from 'node:worker_threads';
import { connectRaw } from './raw.mjs';
import { until, sleep } from './clients.mjs';

const { port, cookie, rooms } = workerData;
const node = { port };

const big = await connectRaw(node, { cookie });
// In batches: a connection queues at most 4,096 events.
for (let r = 0; r < rooms; r++) {
  big.sendEvent('subscribe', `wide-${r}`);
  if (r % 2000 === 1999) await until(() => big.events.length === r + 1, 30000, 'a batch joined');
}
big.close();
await sleep(200);
parentPort.postMessage('dropped');
await new Promise((resolve) => parentPort.once('message', resolve));
const back = await connectRaw(node, { cookie });
await until(() => back.events.length === rooms, 60000, 'every room rejoined');
parentPort.postMessage('rejoined');
// Connected until the test terminates this worker.
