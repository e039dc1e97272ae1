// The Twine contract on Node.js and socket.io 4.8, shared by the benchmark peers: the same HTTP
// routes and Socket.IO events as the Rust server (`GET /`, `GET /ready`, `GET /set-cookie`,
// `POST /api/twine`, `subscribe` / `unsubscribe` with `roomJoined` / `roomLeft`, `message`). Each
// peer script (server.mjs, recovery.mjs, redis-adapter.mjs, redis-sharded.mjs, redis-streams.mjs)
// calls `startPeer` with what it adds.
//
// Environment: PORT (default 3006, 0 = a free port), TWINE_HOST (default 0.0.0.0),
// TWINE_API_KEY (default `test-key`), DRAIN_DELAY_MS (default 0: how long the peer stays up after
// SIGTERM, `GET /ready` answering 503, before it closes every connection, as a Kubernetes `preStop`
// sleep gives a load balancer time to stop sending it new ones). Prints `listening on
// <host>:<port>` once listening.
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { Server } from 'socket.io';

const PORT = Number(process.env.PORT ?? 3006);
const HOST = process.env.TWINE_HOST ?? '0.0.0.0';
const API_KEY = process.env.TWINE_API_KEY || 'test-key';
const MAX_BODY = 1_000_000;
const COOKIE_MAX_AGE = 86400;
const DRAIN_DELAY_MS = Number(process.env.DRAIN_DELAY_MS ?? 0);

let io;
/** Set on the signal to stop: `GET /ready` answers 503 from then on, as a load balancer expects. */
let stopping = false;
/** Prometheus text lines for `GET /metrics`, when the peer script has any. */
let metricsText;

/**
 * Starts the peer: `options` are extra socket.io server options (e.g. connectionStateRecovery),
 * `adapter` an adapter factory, `close` what to end on shutdown (Redis clients), `metrics` a
 * function returning Prometheus text for `GET /metrics` (404 without it).
 */
export function startPeer({ options = {}, adapter, close = async () => {}, metrics } = {}) {
  metricsText = metrics;
  const httpServer = http.createServer(handle);
  io = new Server(httpServer, {
    cors: { origin: true, credentials: true },
    maxHttpBufferSize: MAX_BODY,
    ...options,
    ...(adapter ? { adapter } : {}),
  });
  io.on('connection', onConnection);
  httpServer.listen(PORT, HOST, () => {
    console.log(`listening on ${HOST}:${httpServer.address().port}`);
  });
  const shutDown = () => {
    io.close();
    close().catch(() => {});
    httpServer.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.on(signal, () => {
      if (stopping) return shutDown();
      stopping = true;
      // Not ready from now on; connections stay until the delay is over (a second signal ends
      // it at once).
      setTimeout(shutDown, DRAIN_DELAY_MS);
    });
  }
  return io;
}

function onConnection(socket) {
  socket.on('subscribe', (room) => {
    if (!isRoom(room)) return;
    socket.join(room);
    socket.emit('roomJoined', `You have joined room: ${room}`);
  });
  socket.on('unsubscribe', (room) => {
    if (!isRoom(room)) return;
    socket.leave(room);
    socket.emit('roomLeft', `You have left room: ${room}`);
  });
  socket.on('updateSessionTS', () => {});
  socket.on('stateRecovery', () => {});
}

const isRoom = (room) => typeof room === 'string' && room.length > 0 && Buffer.byteLength(room) <= 256;

/** The HTTP routes beside Socket.IO (socket.io answers its own `/socket.io/` path first). */
function handle(req, res) {
  cors(req, res);
  const path = req.url.split('?')[0];
  if (req.method === 'OPTIONS') return reply(res, 204, '');
  if (req.method === 'GET' && path === '/') return reply(res, 201, 'ok');
  if (req.method === 'GET' && path === '/ready') {
    return stopping ? reply(res, 503, 'not ready: stopping') : reply(res, 200, 'ready');
  }
  if (req.method === 'GET' && path === '/metrics' && metricsText) return reply(res, 200, metricsText());
  if (req.method === 'GET' && path === '/set-cookie') return setCookie(req, res);
  if (req.method === 'POST' && path === '/api/twine') return publish(req, res);
  reply(res, 404, 'Not Found');
}

/** Credentialed CORS: the request's Origin is echoed, never `*`. */
function cors(req, res) {
  const origin = req.headers.origin;
  if (!origin) return;
  res.setHeader('Access-Control-Allow-Origin', origin);
  res.setHeader('Access-Control-Allow-Credentials', 'true');
  res.setHeader('Vary', 'Origin');
  if (req.method === 'OPTIONS') {
    res.setHeader('Access-Control-Allow-Methods', 'GET, POST, OPTIONS');
    const asked = req.headers['access-control-request-headers'];
    if (asked) res.setHeader('Access-Control-Allow-Headers', asked);
    res.setHeader('Access-Control-Max-Age', '600');
  }
}

function setCookie(req, res) {
  const has = (req.headers.cookie ?? '').split(';').some((pair) => {
    const [name, value] = pair.trim().split('=');
    return name === 'twineid' && value;
  });
  if (has) return reply(res, 200, 'Cookie already set');
  const expires = new Date(Date.now() + COOKIE_MAX_AGE * 1000).toUTCString();
  res.setHeader(
    'Set-Cookie',
    `twineid=${randomUUID()}; Max-Age=${COOKIE_MAX_AGE}; Path=/; Expires=${expires}; HttpOnly; Secure; SameSite=None`,
  );
  reply(res, 200, 'First cookie set');
}

/** POST /api/twine: key first (401), then the body in the original's order (400). */
function publish(req, res) {
  let given = (req.headers.authorization ?? '').trim();
  if (!given) return reply(res, 401, 'Missing API key: send it in the Authorization header.');
  if (/^bearer /i.test(given)) given = given.slice(7).trim();
  if (given !== API_KEY) return reply(res, 401, 'Invalid API Key.');

  const chunks = [];
  let size = 0;
  req.on('data', (chunk) => {
    size += chunk.length;
    if (size <= MAX_BODY) chunks.push(chunk);
  });
  req.on('end', () => {
    if (size > MAX_BODY) return reply(res, 413, `Payload Too Large: the request body is over ${MAX_BODY} bytes.`);
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      return malformed(res, 'The request body is not valid JSON.');
    }
    if (body === null || typeof body !== 'object' || Array.isArray(body)) {
      return malformed(res, 'The request body must be a JSON object.');
    }
    if (Object.keys(body).length > 2) return malformed(res, 'Extra parameters were included in request.');
    const { room_id: room, payload } = body;
    if (!room || !payload) return malformed(res, 'One or more required parameters is missing');
    if (typeof payload !== 'object' || Array.isArray(payload)) {
      return malformed(res, 'Payload is of an incorrect data type.');
    }
    if (typeof room !== 'string') return malformed(res, 'room_id is of an incorrect data type.');
    if (Buffer.byteLength(room) > 256) return malformed(res, 'room_id is longer than 256 bytes.');
    io.to(room).emit('message', { ...payload, timestamp: Date.now(), room });
    reply(res, 201, 'ok');
  });
}

const malformed = (res, why) => reply(res, 400, `Malformed Request: ${why}`);

function reply(res, status, text) {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}
