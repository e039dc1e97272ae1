// Starts real `twine` binaries for tests: each on a free port (the server binds port 0 and logs
// the port it got), stopped when the test process exits.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The binary under test: $TWINE_BIN, else the release build. */
export const twineBin = process.env.TWINE_BIN ?? path.join(root, 'target/release/twine');

const running = new Set();
process.on('exit', () => {
  for (const p of running) p.kill('SIGKILL');
});

/**
 * Starts a node. `args` are extra flags; the API key is `test-key` unless given.
 * Resolves once it listens: { url, port, apiKey, proc, logs(), stop(signal), exited }.
 */
export async function startTwine({ args = [], env = {}, apiKey = 'test-key' } = {}) {
  const chosenPort = args.includes('--port') ? [] : ['--port', '0'];
  // Tests address nodes directly, with no balancer to send a moved client elsewhere: nodes of a
  // fleet rebalance only where a test asks for it.
  if ((args.includes('--redis-url') || env.REDIS_URL) && !args.includes('--rebalance') && !env.TWINE_REBALANCE) {
    args = [...args, '--rebalance', 'off'];
  }
  const proc = spawn(twineBin, ['--host', '127.0.0.1', ...chosenPort, ...args], {
    env: { PATH: process.env.PATH, TWINE_API_KEY: apiKey, TWINE_LOG: process.env.TWINE_TEST_LOG ?? 'info', NO_COLOR: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(proc);
  let output = '';
  const listeners = new Set();
  const onData = (chunk) => {
    output += chunk;
    if (process.env.TWINE_TEST_ECHO) process.stderr.write(chunk);
    for (const l of listeners) l();
  };
  proc.stdout.on('data', onData);
  proc.stderr.on('data', onData);
  const exited = new Promise((resolve) => {
    proc.on('exit', (code, signal) => {
      running.delete(proc);
      resolve({ code, signal });
    });
  });
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`twine did not start:\n${output}`)), 15000);
    const check = () => {
      const m = output.match(/listening on [\d.]+:(\d+)/);
      if (m) {
        clearTimeout(timer);
        listeners.delete(check);
        resolve(Number(m[1]));
      }
    };
    listeners.add(check);
    exited.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`twine exited with ${code} before listening:\n${output}`));
    });
  });
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    apiKey,
    proc,
    exited,
    logs: () => output,
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
  };
}

/** Runs the binary to completion (for configuration checks): { code, output }. */
export function runTwine(args, env = {}) {
  return new Promise((resolve) => {
    const proc = spawn(twineBin, args, {
      env: { PATH: process.env.PATH, NO_COLOR: '1', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    proc.stdout.on('data', (c) => (output += c));
    proc.stderr.on('data', (c) => (output += c));
    const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
    proc.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}
