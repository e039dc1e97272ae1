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
 * nginx in front of `upstreams` (ports) with compat-tests/nginx/`config`: twine-sticky.conf (the
 * default) pins a client to one node by its twineid cookie, twine-round-robin.conf sends each
 * request to the next node; both proxy WebSocket upgrades. `serverOptions` go on each
 * upstream's line (`max_fails=0`: never take a node out for having refused). `reload(ports)`
 * points it at other upstreams, as a balancer adds or removes a node.
 */
export async function startNginx(upstreams, { serverOptions = '', config = 'twine-sticky.conf' } = {}) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'twine-nginx-'));
  mkdirSync(path.join(dir, 'temp'));
  const port = await freePort();
  const template = readFileSync(new URL(`../compat-tests/nginx/${config}`, import.meta.url), 'utf8');
  const site = (ports) =>
    template
      .replace('server 127.0.0.1:3005;\n    server 127.0.0.1:3006;', ports.map((p) => `server 127.0.0.1:${p} ${serverOptions};`).join('\n    '))
      .replace('listen 80;', `listen 127.0.0.1:${port};`);
  const conf = site(upstreams);
  // Two connections per proxied client (its own and the upstream's), for a few thousand clients.
  const wrapper = (conf) => `daemon off;
worker_processes 1;
worker_rlimit_nofile 16384;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 8192; }
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
  writeFileSync(path.join(dir, 'nginx.conf'), wrapper(conf));
  const nginx = launch('nginx', ['-p', dir, '-c', path.join(dir, 'nginx.conf')]);
  await waitForPort(port).catch((e) => {
    throw new Error(`${e.message}\n${nginx.output()}`);
  });
  return {
    url: `http://127.0.0.1:${port}`,
    async reload(ports) {
      writeFileSync(path.join(dir, 'nginx.conf'), wrapper(site(ports)));
      nginx.proc.kill('SIGHUP');
      // New workers take the new upstreams once nginx has read the file again.
      await sleepMs(500);
    },
    async stop() {
      nginx.proc.kill('SIGTERM');
      await nginx.exited;
    },
  };
}

/** Runs `redis-cli -p port ...args` once. */
function redisCliOnce(port, args) {
  return new Promise((resolve, reject) => {
    const proc = spawn('redis-cli', ['-p', String(port), ...args.map(String)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    proc.stdout.on('data', (c) => (out += c));
    proc.stderr.on('data', (c) => (out += c));
    proc.on('exit', (code) => (code === 0 && !out.startsWith('Could not connect') ? resolve(out.trim()) : reject(new Error(`redis-cli ${args.join(' ')}: ${out}`))));
  });
}

/** Runs `redis-cli -p port ...args` and resolves to what it printed (tried three times). */
export async function redisCli(port, ...args) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await redisCliOnce(port, args);
    } catch (e) {
      if (attempt === 3) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

const sleepMs = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * A real Redis Cluster: three primaries with a replica each, on free ports, a failover taking
 * about two seconds (`cluster-node-timeout` 1 s). Resolves once every slot is served and every
 * replica is in sync: { url (the seeds, comma-separated), ports, primaries(), ownerOf(slot),
 * slotOf(key), kill(port), pause(port), resume(port), migrate(slot, toPort), stop() }.
 */
export async function startRedisCluster() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'twine-cluster-'));
  const ports = [];
  for (let i = 0; i < 6; i++) ports.push(await freePort());
  const nodes = new Map();
  const launchNode = (port) => {
    const node = launch('redis-server', [
      '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir,
      '--cluster-enabled', 'yes', '--cluster-node-timeout', '1000', '--cluster-config-file', `nodes-${port}.conf`,
    ]);
    nodes.set(port, node);
    return node;
  };
  for (const port of ports) launchNode(port);
  await Promise.all(ports.map((p) => waitForPort(p)));
  await new Promise((resolve, reject) => {
    const create = launch('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '1', '--cluster-yes']);
    create.exited.then((code) => (code === 0 ? resolve() : reject(new Error(`cluster create failed:\n${create.output()}`))));
  });
  const cluster = {
    url: ports.map((p) => `redis://127.0.0.1:${p}`).join(','),
    ports,
    /** The ports of the primaries now (of the nodes that answer). */
    async primaries() {
      const roles = await Promise.all(ports.map((p) => redisCli(p, 'ROLE').catch(() => '')));
      return ports.filter((_, i) => roles[i].startsWith('master'));
    },
    /**
     * The port of the primary serving `slot`, as a live primary sees it; asked again for up to
     * 5 s while none does (just after a failover the primaries may not agree yet).
     */
    async ownerOf(slot) {
      const deadline = Date.now() + 5000;
      for (;;) {
        for (const p of await cluster.primaries()) {
          const slots = JSON.parse(await redisCli(p, '--json', 'CLUSTER', 'SLOTS').catch(() => '[]'));
          const range = slots.find(([start, end]) => start <= slot && slot <= end);
          if (range) return Number(range[2][1]);
        }
        if (Date.now() > deadline) throw new Error(`no primary serves slot ${slot}`);
        await sleepMs(200);
      }
    },
    async slotOf(key) {
      return Number(await redisCli(ports[0], 'CLUSTER', 'KEYSLOT', key));
    },
    /** Waits until every slot is served and every primary's replica is in sync. */
    async settled(ms = 20000) {
      const deadline = Date.now() + ms;
      for (;;) {
        const primaries = await cluster.primaries();
        const infos = await Promise.all(primaries.map((p) => redisCli(p, 'CLUSTER', 'INFO').catch(() => '')));
        const reps = await Promise.all(primaries.map((p) => redisCli(p, 'INFO', 'replication').catch(() => '')));
        if (primaries.length === 3 && infos.every((i) => i.includes('cluster_state:ok')) && reps.every((r) => r.includes('state=online'))) return;
        if (Date.now() > deadline) throw new Error('the cluster did not settle');
        await sleepMs(200);
      }
    },
    /** SIGKILLs the node on `port`. */
    async kill(port) {
      const node = nodes.get(port);
      node.proc.kill('SIGKILL');
      await node.exited;
    },
    /** Starts a killed node again: it rejoins as a replica of whoever took over its slots. */
    async restart(port) {
      launchNode(port);
      await waitForPort(port);
    },
    pause(port) {
      nodes.get(port).proc.kill('SIGSTOP');
    },
    resume(port) {
      nodes.get(port).proc.kill('SIGCONT');
    },
    /**
     * Moves `slot` to the primary on `toPort` the way redis-cli's resharding does, key by key
     * with a pause between keys (a slot migration under load): IMPORTING, MIGRATING, MIGRATE,
     * then the new owner told to every primary.
     */
    async migrate(slot, toPort, { pauseMs = 20 } = {}) {
      const fromPort = await cluster.ownerOf(slot);
      const id = async (p) => redisCli(p, 'CLUSTER', 'MYID');
      const [fromId, toId] = [await id(fromPort), await id(toPort)];
      await redisCli(toPort, 'CLUSTER', 'SETSLOT', slot, 'IMPORTING', fromId);
      await redisCli(fromPort, 'CLUSTER', 'SETSLOT', slot, 'MIGRATING', toId);
      for (;;) {
        const keys = (await redisCli(fromPort, 'CLUSTER', 'GETKEYSINSLOT', slot, 10)).split('\n').filter(Boolean);
        if (keys.length === 0) break;
        for (const key of keys) {
          await redisCli(fromPort, 'MIGRATE', '127.0.0.1', toPort, key, 0, 5000);
          await sleepMs(pauseMs);
        }
      }
      for (const p of [toPort, fromPort, ...(await cluster.primaries()).filter((p) => p !== toPort && p !== fromPort)]) {
        await redisCli(p, 'CLUSTER', 'SETSLOT', slot, 'NODE', toId);
      }
      return { fromPort, toPort };
    },
    async stop() {
      for (const node of nodes.values()) {
        node.proc.kill('SIGKILL');
        await node.exited;
      }
    },
  };
  await cluster.settled();
  return cluster;
}
