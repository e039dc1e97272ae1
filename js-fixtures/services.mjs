// Real backing services for tests: redis-server and nginx from Debian, each on a free port,
// stopped when the test process exits.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const running = new Set();
process.on('exit', () => {
  for (const p of running) p.kill('SIGKILL');
});

/** A TCP port nobody listens on right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

function waitForPort(port, ms = 10000) {
  const deadline = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const sock = net.connect(port, '127.0.0.1');
      sock.once('connect', () => {
        sock.destroy();
        resolve();
      });
      sock.once('error', () => {
        sock.destroy();
        if (Date.now() > deadline) reject(new Error(`nothing listens on ${port}`));
        else setTimeout(attempt, 25);
      });
    };
    attempt();
  });
}

function launch(cmd, args) {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  proc.stdout.on('data', (c) => (output += c));
  proc.stderr.on('data', (c) => (output += c));
  running.add(proc);
  const exited = new Promise((resolve) => proc.on('exit', (code) => {
    running.delete(proc);
    resolve(code);
  }));
  return { proc, exited, output: () => output };
}

/**
 * A server that can be stopped and started again on the same port (an outage): `launchOn(port)`
 * starts one instance.
 */
async function restartable(port, launchOn, extra = {}) {
  const service = {
    port,
    ...extra,
    current: null,
    async start() {
      const current = launchOn(port);
      this.current = current;
      const died = current.exited.then((code) => {
        throw new Error(`exited with ${code} before listening on ${port}:\n${current.output()}`);
      });
      await Promise.race([waitForPort(port), died]);
    },
    async stop() {
      if (!this.current) return;
      this.current.proc.kill('SIGKILL');
      await this.current.exited;
      this.current = null;
    },
    /** Freezes the server (SIGSTOP): connections stay open, nothing is answered. */
    pause() {
      this.current?.proc.kill('SIGSTOP');
    },
    /** Lets a paused server run again (SIGCONT); it then works through what queued up. */
    resume() {
      this.current?.proc.kill('SIGCONT');
    },
  };
  await service.start();
  return service;
}

/** A redis-server without persistence; `stop()` and `start()` again on the same port. */
export async function startRedis() {
  const port = await freePort();
  return restartable(
    port,
    (p) => launch('redis-server', ['--port', String(p), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']),
    { url: `redis://127.0.0.1:${port}` },
  );
}

/**
 * dynalite, a DynamoDB-compatible server, keeping its data on disk so `stop()` then `start()`
 * (an outage) loses nothing. `env` holds the AWS settings that point a node at it.
 */
export async function startDynalite() {
  const port = await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'twine-dynalite-'));
  const cli = new URL('./node_modules/dynalite/cli.js', import.meta.url).pathname;
  return restartable(port, (p) => launch(process.execPath, [cli, '--host', '127.0.0.1', '--port', String(p), '--path', dir]), {
    env: {
      AWS_ENDPOINT_URL_DYNAMODB: `http://127.0.0.1:${port}`,
      AWS_REGION: 'us-east-1',
      AWS_ACCESS_KEY_ID: 'test',
      AWS_SECRET_ACCESS_KEY: 'test',
      AWS_EC2_METADATA_DISABLED: 'true',
    },
  });
}

/**
 * nginx in front of `upstreams` (ports) with compat-tests/nginx/twine-sticky.conf, which pins a
 * client to one node by its twineid cookie and proxies WebSocket upgrades.
 */
export async function startNginx(upstreams) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'twine-nginx-'));
  mkdirSync(path.join(dir, 'temp'));
  const port = await freePort();
  const template = readFileSync(new URL('../compat-tests/nginx/twine-sticky.conf', import.meta.url), 'utf8');
  const servers = upstreams.map((p) => `server 127.0.0.1:${p};`).join('\n    ');
  const conf = template
    .replace('server 127.0.0.1:3005;\n    server 127.0.0.1:3006;', servers)
    .replace('listen 80;', `listen 127.0.0.1:${port};`);
  const wrapper = `daemon off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir}/temp/body;
  proxy_temp_path ${dir}/temp/proxy;
  fastcgi_temp_path ${dir}/temp/fastcgi;
  uwsgi_temp_path ${dir}/temp/uwsgi;
  scgi_temp_path ${dir}/temp/scgi;
${conf}
}
`;
  writeFileSync(path.join(dir, 'nginx.conf'), wrapper);
  const nginx = launch('nginx', ['-p', dir, '-c', path.join(dir, 'nginx.conf')]);
  await waitForPort(port).catch((e) => {
    throw new Error(`${e.message}\n${nginx.output()}`);
  });
  return {
    url: `http://127.0.0.1:${port}`,
    async stop() {
      nginx.proc.kill('SIGTERM');
      await nginx.exited;
    },
  };
}
