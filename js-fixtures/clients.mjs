// Real clients the way Twine users run them: stock socket.io-client for frontends and plain
// fetch (or the published twine-server-library) for backends.
import { io } from 'socket.io-client';

export { io };

/** GET /set-cookie and return the `twineid=...` pair for later requests. */
export async function fetchCookie(url) {
  const res = await fetch(`${url}/set-cookie`);
  const setCookie = res.headers.get('set-cookie');
  if (!setCookie) throw new Error(`no Set-Cookie from ${url}/set-cookie (${res.status})`);
  return setCookie.split(';')[0];
}

/** POST /api/twine; resolves to the response. `idempotencyKey` makes retries safe. */
export function publish(server, room, payload, { key = server.apiKey, body, idempotencyKey } = {}) {
  const headers = { Authorization: key, 'Content-Type': 'application/json' };
  if (idempotencyKey) headers['Idempotency-Key'] = idempotencyKey;
  return fetch(`${server.url}/api/twine`, {
    method: 'POST',
    headers,
    body: body ?? JSON.stringify({ room_id: room, payload }),
  });
}

/**
 * Connects a socket.io-client and resolves once connected. `cookie` goes in the handshake;
 * every `message` is recorded in `socket.messages` (arrival times in `socket.arrivals`) and
 * acknowledged unless `ack` is false. `options` are further socket.io-client options (`auth`,
 * `reconnectionDelay`, ...).
 */
export function connect(url, { cookie, transports, ack = true, reconnection = false, options = {} } = {}) {
  const socket = io(url, {
    forceNew: true,
    reconnection,
    transports,
    extraHeaders: cookie ? { Cookie: cookie } : {},
    ...options,
  });
  socket.messages = [];
  socket.events = [];
  socket.arrivals = [];
  socket.on('message', (m) => {
    socket.arrivals.push(Date.now());
    socket.messages.push(m);
    if (ack) socket.emit('updateSessionTS', m.timestamp);
  });
  for (const event of ['roomJoined', 'roomLeft', 'error', 'recoveryTruncated']) {
    socket.on(event, (data) => socket.events.push({ event, data }));
  }
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', reject);
  });
}

/** Resolves when `predicate()` holds, polling every 10 ms; rejects after `ms`. */
export async function until(predicate, ms = 5000, what = 'condition') {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Waits for the event `name` with data `data` to be among `socket.events`. */
export function untilEvent(socket, name, data, ms) {
  return until(
    () => socket.events.some((e) => e.event === name && (data === undefined || e.data === data)),
    ms,
    `${name} ${data ?? ''}`,
  );
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Subscribes and waits for the matching roomJoined. */
export async function subscribe(socket, room) {
  socket.emit('subscribe', room);
  await untilEvent(socket, 'roomJoined', `You have joined room: ${room}`);
}

/** The fields a client compares messages by. */
export const key = (m) => `${m.room}@${m.timestamp}#${m.n}`;
