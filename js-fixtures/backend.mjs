// A real app backend for Twine's hooks (`--connect-hook-url`, `--subscribe-hook-url`,
// `--publish-hook-url`): a node:http server on 127.0.0.1 answering POST /connect, /subscribe and
// /publish. It checks the `Twine-Signature` of every call (`t=<unix seconds>,v1=<hex HMAC-SHA256
// of "<t>.<raw body>">` keyed by the hook secret), records every call, and answers each hook the
// way its mode says:
//
//   allow      {"allow": true}
//   refuse     {"allow": false, "reason": <reason>}
//   rooms      connect: {"allow": true, "rooms": <rooms>, "user": <user>}
//   transform  publish: {"allow": true, "payload": <the payload, `text` uppercased, checked: true>}
//   garbage    200 with a body that is not JSON
//   status     <status> (500 unless given) with a JSON body
//   slow       waits `delay` ms (1500 unless given), then answers as `then` (allow unless given)
//   (fn)       a function (body, call) => answer object, for anything else
//
// A backend that is down is `stop()` (or a URL on a closed port: `closedPortUrl()`).
//
// In tests: `const backend = await startBackend({ secret, modes: { connect: 'rooms' } })`, then
// `--connect-hook-url ${backend.url}/connect`. As a program, so a benchmark can run it on another
// core: `node js-fixtures/backend.mjs --port 0 --secret S [--connect MODE] [--subscribe MODE]
// [--publish MODE] [--delay MS] [--quiet]`; it prints `backend listening on 127.0.0.1:<port>`.
import http from 'node:http';
import net from 'node:net';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { fileURLToPath } from 'node:url';

export const HOOKS = ['connect', 'subscribe', 'publish'];

/** `t=<t>,v1=<hex>` as the server signs `body` with `secret` at `t` (unix seconds). */
export function sign(secret, body, t = Math.floor(Date.now() / 1000)) {
  return `t=${t},v1=${createHmac('sha256', secret).update(`${t}.`).update(body).digest('hex')}`;
}

/** Checks a `Twine-Signature` header against `raw` (a Buffer): { ok, t, skew, why }. */
export function verify(secret, header, raw) {
  if (typeof header !== 'string') return { ok: false, why: 'no Twine-Signature header' };
  const parts = Object.fromEntries(
    header.split(',').map((p) => {
      const i = p.indexOf('=');
      return [p.slice(0, i).trim(), p.slice(i + 1).trim()];
    }),
  );
  const t = Number(parts.t);
  if (!/^\d+$/.test(parts.t ?? '') || !/^[0-9a-f]{64}$/.test(parts.v1 ?? '')) {
    return { ok: false, t, why: `malformed Twine-Signature: ${header}` };
  }
  const expected = createHmac('sha256', secret).update(`${parts.t}.`).update(raw).digest();
  const given = Buffer.from(parts.v1, 'hex');
  const skew = Math.abs(Date.now() / 1000 - t);
  if (!timingSafeEqual(expected, given)) return { ok: false, t, skew, why: 'wrong HMAC' };
  return { ok: true, t, skew };
}

/** The publish transform: `text` uppercased (when a string) and `checked: true`. */
export function transform(payload) {
  const out = { ...payload, checked: true };
  if (typeof out.text === 'string') out.text = out.text.toUpperCase();
  return out;
}

/** A URL on 127.0.0.1 where nothing listens (a port taken and let go). */
export async function closedPortUrl() {
  const server = net.createServer();
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  await new Promise((r) => server.close(r));
  return `http://127.0.0.1:${port}`;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts a backend. `modes` maps each hook to its mode: a name above, or `{mode, reason, rooms,
 * user, delay, then, status}`, or a function (body, call) => answer. Unset hooks allow.
 * Resolves to { url, port, calls, inFlight(), maxInFlight(hook?), setMode(hook, mode, options),
 * resetPeaks(), callsOf(hook), badSignatures(), stop() }.
 */
export async function startBackend({ secret, port = 0, host = '127.0.0.1', modes = {}, log = false } = {}) {
  if (!secret) throw new Error('startBackend needs the hook secret');
  const settings = {};
  const calls = [];
  let inFlight = 0;
  let peak = 0;
  const peaks = Object.fromEntries(HOOKS.map((h) => [h, 0]));
  const flying = Object.fromEntries(HOOKS.map((h) => [h, 0]));

  const setMode = (hook, mode = 'allow', options = {}) => {
    if (!HOOKS.includes(hook)) throw new Error(`no hook ${hook}`);
    settings[hook] = typeof mode === 'object' && mode !== null ? { ...mode } : { mode, ...options };
  };
  for (const hook of HOOKS) setMode(hook, modes[hook] ?? 'allow');

  /** The answer `setting` gives `body`: { status, body (string) }. */
  async function answer(hook, setting, body, call) {
    const mode = setting.mode;
    if (typeof mode === 'function') return json(await mode(body, call));
    switch (mode) {
      case 'allow':
        return json({ allow: true });
      case 'refuse':
        return json({ allow: false, reason: setting.reason ?? `refused by the test backend (${hook})` });
      case 'rooms': {
        const user = typeof setting.user === 'function' ? setting.user(body) : (setting.user ?? 'user-1');
        return json({ allow: true, rooms: setting.rooms ?? ['welcome'], user });
      }
      case 'transform':
        if (hook !== 'publish') return json({ allow: true });
        return json({ allow: true, payload: transform(body.payload ?? {}) });
      case 'garbage':
        return { status: 200, body: 'this is <b>not</b> JSON', type: 'text/html' };
      case 'status':
        return { status: setting.status ?? 500, body: JSON.stringify({ allow: true }) };
      case 'slow':
        await sleep(setting.delay ?? 1500);
        return answer(hook, { ...setting, mode: setting.then ?? 'allow' }, body, call);
      default:
        throw new Error(`unknown mode ${mode} for ${hook}`);
    }
  }
  const json = (value) => ({ status: 200, body: JSON.stringify(value) });

  const server = http.createServer(async (req, res) => {
    const hook = req.url.replace(/^\//, '').split('?')[0];
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const raw = Buffer.concat(chunks);
    if (req.method !== 'POST' || !HOOKS.includes(hook)) {
      res.writeHead(404).end();
      return;
    }
    inFlight += 1;
    flying[hook] += 1;
    peak = Math.max(peak, inFlight);
    peaks[hook] = Math.max(peaks[hook], flying[hook]);
    const call = { hook, at: Date.now(), headers: req.headers, raw: raw.toString() };
    calls.push(call);
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      inFlight -= 1;
      flying[hook] -= 1;
      call.answeredAt = Date.now();
    };
    res.on('close', finish);
    try {
      call.signature = verify(secret, req.headers['twine-signature'], raw);
      if (!call.signature.ok) {
        call.badSignature = true;
        res.writeHead(401, { 'Content-Type': 'text/plain' }).end(call.signature.why);
        return;
      }
      try {
        call.body = JSON.parse(raw.toString());
      } catch {
        call.unreadable = true;
        res.writeHead(400).end('not JSON');
        return;
      }
      const out = await answer(hook, settings[hook], call.body, call);
      call.answer = out.body;
      call.status = out.status;
      if (log) console.log(`${hook} ${raw} -> ${out.status} ${out.body}`);
      res.writeHead(out.status, { 'Content-Type': out.type ?? 'application/json' }).end(out.body);
    } catch (e) {
      call.error = String(e);
      if (!res.headersSent) res.writeHead(500).end(String(e));
    } finally {
      if (res.writableEnded) finish();
    }
  });
  server.keepAliveTimeout = 30000;
  const sockets = new Set();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  const bound = server.address().port;
  return {
    url: `http://${host}:${bound}`,
    port: bound,
    calls,
    setMode,
    inFlight: () => inFlight,
    /** Most calls in flight at once (of `hook`, or of all) since the start or resetPeaks(). */
    maxInFlight: (hook) => (hook ? peaks[hook] : peak),
    resetPeaks() {
      peak = inFlight;
      for (const h of HOOKS) peaks[h] = flying[h];
    },
    callsOf: (hook) => calls.filter((c) => c.hook === hook),
    badSignatures: () => calls.filter((c) => c.badSignature),
    /** Stops listening and drops open connections: the backend is down. */
    stop() {
      return new Promise((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
    },
  };
}

// As a program.
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = process.argv.slice(2);
  const flag = (name, fallback) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? args[i + 1] : fallback;
  };
  const delay = Number(flag('delay', 1500));
  const modes = {};
  for (const hook of HOOKS) {
    const mode = flag(hook, 'allow');
    modes[hook] = { mode, delay, rooms: flag('rooms', 'welcome').split(','), user: flag('user', 'user-1') };
  }
  const backend = await startBackend({
    secret: flag('secret', process.env.HOOK_SECRET),
    port: Number(flag('port', 0)),
    host: flag('host', '127.0.0.1'),
    modes,
    log: !args.includes('--quiet'),
  });
  // Calls are only counted here: a long benchmark must not grow this process.
  const counts = Object.fromEntries(HOOKS.map((h) => [h, 0]));
  setInterval(() => {
    for (const call of backend.calls.splice(0)) counts[call.hook] += 1;
  }, 1000).unref();
  console.log(`backend listening on 127.0.0.1:${backend.port}`);
  const bye = async () => {
    for (const call of backend.calls.splice(0)) counts[call.hook] += 1;
    console.log(`calls ${JSON.stringify(counts)}, most in flight at once ${backend.maxInFlight()}`);
    await backend.stop();
    process.exit(0);
  };
  process.on('SIGTERM', bye);
  process.on('SIGINT', bye);
}
