// Floods against a node's backend hooks, each part in its own process so that neither the
// backend's answers nor hundreds of hostile sockets stall the test process, where a legitimate
// client's timings are taken:
//
//   startGatekeeper()  a backend (js-fixtures/backend.mjs) that answers every hook after a delay,
//                      allowing only the sessions it was told of (`allow(twineid)`) and refusing
//                      the rest; it counts calls and the size of every body it receives.
//   rawFlood()         many anonymous raw Socket.IO sockets, spread over loopback addresses, each
//                      sending one kind of traffic (subscribes, publishes, re-sent CONNECTs) for a
//                      fixed time; resolves to what they sent and what they were answered.
//   floodFrames()      one WebSocket sending frames as fast as its socket takes them (with at most
//                      a few MB buffered in this process), for a fixed time and count.
//
// As a program (how the two helpers above start it): `node js-fixtures/hook-flood.mjs backend
// '<json>'` or `node js-fixtures/hook-flood.mjs flood '<json>'`.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { startBackend, HOOKS } from './backend.mjs';

const self = fileURLToPath(import.meta.url);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Largest body a backend should ever be sent by a hook call, in bytes. */
export const HOOK_BODY_LIMIT = 64 * 1024;

/** Child processes still running, killed if this process exits first. */
const running = new Set();
process.on('exit', () => {
  for (const proc of running) proc.kill('SIGKILL');
});

/** A child process of this file: its stdout read line by line; `next(prefix)` awaits a line. */
function child(role, config) {
  const proc = spawn(process.execPath, [self, role, JSON.stringify(config)], { stdio: ['pipe', 'pipe', 'pipe'] });
  running.add(proc);
  const waiting = [];
  const lines = [];
  let stderr = '';
  proc.stderr.on('data', (c) => (stderr = (stderr + c).slice(-4000)));
  createInterface({ input: proc.stdout }).on('line', (line) => {
    const i = waiting.findIndex((w) => line.startsWith(w.prefix));
    if (i < 0) return lines.push(line);
    const [w] = waiting.splice(i, 1);
    w.resolve(line.slice(w.prefix.length));
  });
  const exited = new Promise((resolve) =>
    proc.on('exit', (code) => {
      running.delete(proc);
      resolve(code);
    }),
  );
  exited.then((code) => {
    for (const w of waiting.splice(0)) w.reject(new Error(`${role} process exited ${code}: ${stderr}`));
  });
  return {
    proc,
    exited,
    /** Resolves to the rest of the first line (printed already or to come) starting with `prefix`. */
    next(prefix, ms = 60000) {
      const i = lines.findIndex((l) => l.startsWith(prefix));
      if (i >= 0) return Promise.resolve(lines.splice(i, 1)[0].slice(prefix.length));
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${role} process: no "${prefix}" within ${ms} ms: ${stderr}`)), ms);
        waiting.push({
          prefix,
          resolve: (rest) => {
            clearTimeout(timer);
            resolve(rest);
          },
          reject: (e) => {
            clearTimeout(timer);
            reject(e);
          },
        });
      });
    },
    send: (line) => proc.stdin.write(`${line}\n`),
  };
}

/**
 * A backend in its own process answering every hook after `delay` ms (per hook: `{connect: 100,
 * ...}`, or one number for all): allowed for the twineids given to `allow(id)`, refused for every
 * other. Resolves to { url, allow(id), setDelay(hook, ms), stats(), reset(), stop() }; `stats()`
 * resolves to, per hook, { calls, allowed, refused, bytes, maxBody, overLimit (bodies over
 * HOOK_BODY_LIMIT), maxInFlight }.
 */
export async function startGatekeeper({ secret, delay = 100 }) {
  const delays = typeof delay === 'number' ? Object.fromEntries(HOOKS.map((h) => [h, delay])) : { ...delay };
  const c = child('backend', { secret, delays });
  const port = Number(await c.next('backend listening on 127.0.0.1:', 15000));
  let asked = 0;
  const ask = async (command) => {
    const id = `r${asked++}`;
    const answer = c.next(`${id} `);
    c.send(`${id} ${command}`);
    return JSON.parse(await answer);
  };
  return {
    url: `http://127.0.0.1:${port}`,
    allow: (twineid) => ask(`allow ${twineid}`),
    setDelay: (hook, ms) => ask(`delay ${hook} ${ms}`),
    stats: () => ask('stats'),
    reset: () => ask('reset'),
    async stop() {
      c.proc.kill('SIGTERM');
      await Promise.race([c.exited, sleep(3000)]);
      if (c.proc.exitCode === null) c.proc.kill('SIGKILL');
    },
  };
}

/**
 * `sockets` anonymous raw Socket.IO sockets to `port`, from loopback addresses 127.<net>.x.y
 * (one address each, or all from `address`), flooding for `ms` once all are open. `mode`:
 *   subscribe  `perTick` subscribes to rooms never asked before, every `tick` ms
 *   publish    `perTick` publishes of `bytes` bytes into `room`, every `tick` ms
 *   connect    only the Engine.IO handshake; then a CONNECT (with `auth`, when given, or an auth
 *              `{token}` of `authBytes` bytes), re-sent at once each time it is refused, `depth`
 *              of them sent at first
 * Returns { flooding, done }: `flooding` resolves to { opened, failed } when the flood starts,
 * `done` to { opened, failed, sent, refused (CONNECT errors), connected, errors (`error` events),
 * closed (sockets the node closed), perSocketMax, ms } once it is over.
 */
export function rawFlood(port, options) {
  const c = child('flood', { port, ...options });
  const flooding = c.next('flooding ', 60000).then(JSON.parse);
  const done = c.next('summary ', 60000 + (options.ms ?? 0)).then(JSON.parse);
  done.catch(() => {});
  flooding.catch(() => {});
  return { flooding, done };
}

/**
 * Sends `frameAt(i)` (a string or Buffer) on `ws` as fast as its socket takes them, keeping at
 * most `maxBuffered` bytes queued in this process, until `until` (ms since epoch) or `maxFrames`
 * frames. Resolves to { frames, bytes } written to the socket, `closed` if the server closed it
 * meanwhile, and `blockedMs`, how long it waited with `maxBuffered` queued (the server not
 * reading).
 */
export async function floodFrames(ws, frameAt, { until, maxFrames = 1_000_000, maxBuffered = 8 * 1024 * 1024 } = {}) {
  const result = { frames: 0, bytes: 0, closed: false, blockedMs: 0 };
  let i = 0;
  while (Date.now() < until && i < maxFrames) {
    if (ws.readyState !== WebSocket.OPEN) {
      result.closed = true;
      break;
    }
    if (ws.bufferedAmount >= maxBuffered) {
      const waited = Date.now();
      await sleep(2);
      result.blockedMs += Date.now() - waited;
      continue;
    }
    const frame = frameAt(i++);
    const size = typeof frame === 'string' ? Buffer.byteLength(frame) : frame.length;
    ws.send(frame, (err) => {
      if (!err) {
        result.frames += 1;
        result.bytes += size;
      }
    });
    // Let the socket's writes and this process's timers run between large frames.
    if (size > 64 * 1024 || i % 64 === 0) await new Promise((r) => setImmediate(r));
  }
  // What was handed to ws is written or failed by now, or soon.
  const settle = Date.now() + 2000;
  while (ws.bufferedAmount > 0 && ws.readyState === WebSocket.OPEN && Date.now() < settle) await sleep(10);
  if (ws.readyState !== WebSocket.OPEN) result.closed = true;
  return result;
}

// --- the child processes ----------------------------------------------------------------------

async function runBackend({ secret, delays }) {
  const allowed = new Set();
  const fresh = () =>
    Object.fromEntries(HOOKS.map((h) => [h, { calls: 0, allowed: 0, refused: 0, bytes: 0, maxBody: 0, overLimit: 0 }]));
  let stats = fresh();
  const decide = (hook) => async (body) => {
    if (delays[hook] > 0) await sleep(delays[hook]);
    const allow = typeof body.twineid === 'string' && allowed.has(body.twineid);
    stats[hook][allow ? 'allowed' : 'refused'] += 1;
    return allow ? { allow: true } : { allow: false, reason: `refused by the backend (${hook})` };
  };
  const backend = await startBackend({
    secret,
    modes: Object.fromEntries(HOOKS.map((h) => [h, decide(h)])),
  });
  // Every call's body is counted and let go: a flood of large bodies must not grow this process.
  const count = () => {
    for (const call of backend.calls.splice(0)) {
      const s = stats[call.hook];
      if (!s) continue;
      const size = Buffer.byteLength(call.raw);
      s.calls += 1;
      s.bytes += size;
      s.maxBody = Math.max(s.maxBody, size);
      if (size > HOOK_BODY_LIMIT) s.overLimit += 1;
    }
  };
  setInterval(count, 20);
  const commands = createInterface({ input: process.stdin });
  // The test that started it went away: so does it.
  commands.on('close', () => process.exit(0));
  commands.on('line', (line) => {
    const [id, command, ...args] = line.split(' ');
    let answer = { ok: true };
    if (command === 'allow') allowed.add(args[0]);
    else if (command === 'delay') delays[args[0]] = Number(args[1]);
    else if (command === 'reset') {
      count();
      stats = fresh();
      backend.resetPeaks();
    } else if (command === 'stats') {
      count();
      answer = Object.fromEntries(HOOKS.map((h) => [h, { ...stats[h], maxInFlight: backend.maxInFlight(h) }]));
    }
    process.stdout.write(`${id} ${JSON.stringify(answer)}\n`);
  });
  process.on('SIGTERM', async () => {
    await backend.stop();
    process.exit(0);
  });
  process.stdout.write(`backend listening on 127.0.0.1:${backend.port}\n`);
}

/**
 * One raw socket from `localAddress`: resolves to it once its Engine.IO handshake is done (and,
 * with `join`, it is in the default namespace), or to null if it could not be opened. Pings are
 * answered; other packets go to its `onPacket`.
 */
function rawSocket(port, localAddress, tally, { join = true } = {}) {
  return new Promise((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/socket.io/?EIO=4&transport=websocket`, {
      localAddress,
      maxPayload: 64 * 1024 * 1024,
    });
    ws.sent = 0;
    ws.onPacket = () => {};
    let settled = false;
    const settle = (value) => {
      if (!settled) {
        settled = true;
        resolve(value);
      }
    };
    ws.on('error', () => settle(null));
    ws.on('unexpected-response', (_, res) => {
      tally.failed[res.statusCode] = (tally.failed[res.statusCode] ?? 0) + 1;
      settle(null);
    });
    ws.on('close', () => {
      ws.closedAt = Date.now();
      settle(null);
    });
    ws.on('message', (data) => {
      const text = data.toString();
      if (text === '2') ws.send('3');
      else if (text.startsWith('0')) {
        if (join) ws.send('40');
        else settle(ws);
      } else if (text.startsWith('40') && join && !settled) settle(ws);
      else ws.onPacket(text);
    });
  });
}

async function runFlood({ port, mode, sockets = 300, ms = 5000, tick = 100, perTick = 10, room = 'chat', bytes = 1000, auth, authBytes, depth = 1, net = 2, address, batch = 50 }) {
  const tally = { opened: 0, failed: {}, sent: 0, refused: 0, connected: 0, errors: 0, closed: 0, perSocketMax: 0 };
  const open = [];
  for (let start = 0; start < sockets; start += batch) {
    const made = await Promise.all(
      Array.from({ length: Math.min(batch, sockets - start) }, (_, k) => {
        const n = start + k;
        return rawSocket(port, address ?? `127.${net}.${Math.floor(n / 250)}.${1 + (n % 250)}`, tally, { join: mode !== 'connect' });
      }),
    );
    open.push(...made.filter(Boolean));
  }
  tally.opened = open.length;
  const pad = 'p'.repeat(bytes);
  const started = Date.now();
  const deadline = started + ms;
  process.stdout.write(`flooding ${JSON.stringify({ opened: tally.opened, failed: tally.failed })}\n`);
  const send = (ws, packet) => {
    if (ws.readyState !== WebSocket.OPEN || Date.now() >= deadline) return false;
    ws.send(packet);
    ws.sent += 1;
    tally.sent += 1;
    return true;
  };
  for (const [s, ws] of open.entries()) {
    ws.onPacket = (text) => {
      if (text.startsWith('44')) {
        tally.refused += 1;
        if (mode === 'connect') send(ws, ws.connectPacket);
      } else if (text.startsWith('40')) tally.connected += 1;
      else if (text.startsWith('42["error"')) tally.errors += 1;
    };
    if (mode === 'connect') {
      const given = authBytes ? { token: 'a'.repeat(authBytes) } : auth;
      ws.connectPacket = given === undefined ? '40' : `40${JSON.stringify(given)}`;
      for (let d = 0; d < depth; d++) send(ws, ws.connectPacket);
    } else {
      let i = 0;
      const timer = setInterval(() => {
        if (Date.now() >= deadline || ws.readyState !== WebSocket.OPEN) return clearInterval(timer);
        for (let k = 0; k < perTick; k++, i++) {
          if (mode === 'subscribe') send(ws, `42${JSON.stringify(['subscribe', `flood-${s}-${i}`])}`);
          else send(ws, `42${JSON.stringify(['publish', { room_id: room, payload: { i, pad } }])}`);
        }
      }, tick);
    }
  }
  await sleep(Math.max(0, deadline - Date.now()) + 300);
  tally.closed = open.filter((ws) => ws.closedAt && ws.closedAt < deadline).length;
  tally.perSocketMax = Math.max(0, ...open.map((ws) => ws.sent));
  tally.ms = Date.now() - started;
  for (const ws of open) ws.terminate();
  process.stdout.write(`summary ${JSON.stringify(tally)}\n`);
  process.exit(0);
}

if (process.argv[1] === self) {
  const [role, config] = process.argv.slice(2);
  if (role === 'backend') await runBackend(JSON.parse(config));
  else if (role === 'flood') await runFlood(JSON.parse(config));
  else throw new Error(`unknown role ${role}`);
}
