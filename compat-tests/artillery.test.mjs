// The Artillery scenarios of js-fixtures/artillery as short smoke runs: subscriber, publisher and
// reconnect against the Rust server, subscriber and publisher against the Node peer
// (js-fixtures/node-peer, which has no recovery). Each run must complete every virtual user.
// The runs of one server go in parallel: each Artillery process spends about 10 s at exit trying
// to send its telemetry, which cannot reach the network here.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startTwine } from '../js-fixtures/server.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const scenarios = path.join(root, 'js-fixtures/artillery');
const artilleryBin = path.join(scenarios, 'node_modules/artillery/bin/run');
const peerScript = path.join(root, 'js-fixtures/node-peer/server.mjs');
const API_KEY = 'test-key';

const running = new Set();
process.on('exit', () => {
  for (const p of running) p.kill('SIGKILL');
});

let outDir;
before(async () => {
  for (const [needed, install] of [
    [artilleryBin, 'PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix js-fixtures/artillery'],
    [path.join(root, 'js-fixtures/node-peer/node_modules/socket.io'), 'npm ci --prefix js-fixtures/node-peer'],
  ]) {
    assert.ok(existsSync(needed), `${needed} is missing: run \`${install}\``);
  }
  outDir = await mkdtemp(path.join(tmpdir(), 'twine-artillery-'));
});
after(() => rm(outDir, { recursive: true, force: true }));

/** Spawns `node args` and collects its output; `exited` resolves with { code, signal, output }. */
function spawnNode(args, env, cwd = root) {
  const proc = spawn(process.execPath, args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(proc);
  const run = { proc, output: '' };
  const collect = (chunk) => {
    run.output += chunk;
    if (process.env.TWINE_TEST_ECHO) process.stderr.write(chunk);
  };
  proc.stdout.on('data', collect);
  proc.stderr.on('data', collect);
  run.exited = new Promise((resolve) => {
    proc.on('exit', (code, signal) => {
      running.delete(proc);
      resolve({ code, signal, output: run.output });
    });
  });
  return run;
}

/** Starts the Node peer on a free port; resolves once it listens: { url, stop() }. */
async function startPeer() {
  const run = spawnNode([peerScript], { PORT: '0', TWINE_HOST: '127.0.0.1', TWINE_API_KEY: API_KEY });
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`node peer did not start:\n${run.output}`)), 15000);
    const check = () => {
      const m = run.output.match(/listening on [\d.]+:(\d+)/);
      if (!m) return;
      clearTimeout(timer);
      resolve(Number(m[1]));
    };
    run.proc.stdout.on('data', check);
    run.exited.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`node peer exited with ${code} before listening:\n${run.output}`));
    });
  });
  return {
    url: `http://127.0.0.1:${port}`,
    async stop() {
      if (run.proc.exitCode === null && run.proc.signalCode === null) run.proc.kill('SIGTERM');
      await run.exited;
    },
  };
}

/** Runs one scenario file against `url`; resolves with the JSON report's aggregate counters. */
async function runScenario(file, url, label) {
  const output = path.join(outDir, `${label}-${path.basename(file, '.yml')}.json`);
  const run = spawnNode(
    [artilleryBin, 'run', '--target', url, '--output', output, file],
    { TWINE_API_KEY: API_KEY, ARTILLERY_DISABLE_TELEMETRY: '1' },
    scenarios,
  );
  const timer = setTimeout(() => run.proc.kill('SIGKILL'), 90000);
  const { code, signal } = await run.exited;
  clearTimeout(timer);
  let report;
  try {
    report = JSON.parse(await readFile(output, 'utf8'));
  } catch (err) {
    assert.fail(`artillery ${file} (exit ${code ?? signal}) wrote no report: ${err.message}\n${run.output}`);
  }
  const counters = report.aggregate.counters;
  const errors = Object.entries(counters).filter(([k]) => k.startsWith('errors.'));
  const created = counters['vusers.created'] ?? 0;
  assert.ok(created > 0, `no virtual user was created\n${run.output}`);
  assert.equal(counters['vusers.failed'] ?? 0, 0, `failed virtual users: ${JSON.stringify(errors)}\n${run.output}`);
  assert.equal(counters['vusers.completed'], created, `not every virtual user completed\n${run.output}`);
  assert.equal(code, 0, `artillery exited with ${code ?? signal}\n${run.output}`);
  return counters;
}

describe('artillery against the Rust server', { concurrency: true }, () => {
  let server;
  before(async () => {
    server = await startTwine({ apiKey: API_KEY });
  });
  after(() => server.stop());

  test('subscriber: every user receives its own message', async () => {
    const c = await runScenario('subscriber.yml', server.url, 'rust');
    assert.equal(c['twine.received'], c['vusers.created']);
  });

  test('publisher: every publish answers 201', async () => {
    const c = await runScenario('publisher.yml', server.url, 'rust');
    assert.equal(c['http.codes.201'], c['vusers.created']);
  });

  test('reconnect: every user recovers the message published while away', async () => {
    const c = await runScenario('reconnect.yml', server.url, 'rust');
    assert.equal(c['twine.recovered'], c['vusers.created']);
  });
});

describe('artillery against the Node peer', { concurrency: true }, () => {
  let peer;
  before(async () => {
    peer = await startPeer();
  });
  after(() => peer.stop());

  test('subscriber: every user receives its own message', async () => {
    const c = await runScenario('subscriber.yml', peer.url, 'peer');
    assert.equal(c['twine.received'], c['vusers.created']);
  });

  test('publisher: every publish answers 201', async () => {
    const c = await runScenario('publisher.yml', peer.url, 'peer');
    assert.equal(c['http.codes.201'], c['vusers.created']);
  });
});
