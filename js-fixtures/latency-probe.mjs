// A client in a room of its own, sent a message every 50 ms, run in a worker thread: its
// publish-to-delivery latencies are taken on an event loop (and heap) of their own, so a test
// that floods from its main thread measures the node, not its own pauses.
//
// In tests: `const probe = await startLatencyProbe(server)`, then `await probe.p99Since(t)` for
// the latencies of messages published from `t` (ms since epoch) on; `await probe.stop()`.
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { connect, publish, subscribe } from './clients.mjs';

/** Starts the probe on `server` in `room`; resolves once it receives. */
export async function startLatencyProbe(server, { room = 'pulse', every = 50 } = {}) {
  const worker = new Worker(fileURLToPath(import.meta.url), {
    workerData: { url: server.url, port: server.port, apiKey: server.apiKey, room, every },
  });
  let asked = 0;
  const answers = new Map();
  worker.on('message', (message) => {
    const resolve = answers.get(message.id);
    answers.delete(message.id);
    resolve?.(message);
  });
  const ask = (request) =>
    new Promise((resolve, reject) => {
      const id = asked++;
      answers.set(id, resolve);
      worker.postMessage({ id, ...request });
      setTimeout(() => answers.has(id) && reject(new Error(`the latency probe did not answer ${request.kind}`)), 10000).unref();
    });
  await ask({ kind: 'ready' });
  return {
    /** The 99th percentile latency, in ms, of messages published from `from` on (Infinity if none). */
    p99Since: async (from) => (await ask({ kind: 'p99', from })).p99 ?? Infinity,
    async stop() {
      await ask({ kind: 'stop' }).catch(() => {});
      await worker.terminate();
    },
  };
}

if (!isMainThread && workerData?.room) {
  const { url, port, apiKey, room, every } = workerData;
  const server = { url, port, apiKey };
  const socket = await connect(url);
  await subscribe(socket, room);
  let seq = 0;
  const timer = setInterval(() => publish(server, room, { seq: seq++, sent: Date.now() }).catch(() => {}), every);
  parentPort.on('message', ({ id, kind, from }) => {
    if (kind === 'p99') {
      const latencies = socket.messages
        .map((m, i) => [m.sent, socket.arrivals[i] - m.sent])
        .filter(([sent]) => sent >= from)
        .map(([, latency]) => latency)
        .sort((a, b) => a - b);
      parentPort.postMessage({ id, p99: latencies[Math.floor(latencies.length * 0.99)] ?? null });
    } else if (kind === 'stop') {
      clearInterval(timer);
      socket.close();
      parentPort.postMessage({ id });
    } else parentPort.postMessage({ id });
  });
}
