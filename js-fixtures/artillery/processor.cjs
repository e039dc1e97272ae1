// Processor functions for the Twine Artillery scenarios (subscriber.yml, reconnect.yml).
//
// Artillery's Socket.IO engine opens each virtual user's socket before the first step runs, with
// options templated from the variables known at that moment, and it ignores `beforeScenario`. So a
// per-user `twineid` cookie cannot be in that first handshake: `joinTwine` fetches the cookie and
// reconnects the engine's own socket with it (the engine keeps using that socket object and
// disconnects it when the scenario ends).
//
// Metrics added to the report: counters `twine.published`, `twine.received`, `twine.recovered`,
// histograms `twine.publish_time` (POST round trip, ms), `twine.delivery_time` (from the start of
// the POST to the message's arrival on the socket, ms) and `twine.recovery_time` (from the start of
// the POST made while away to the replayed message's arrival, reconnection included, ms).
'use strict';

const { randomUUID } = require('node:crypto');

/** How long to wait for a connection or a message before failing the virtual user. */
const TIMEOUT_MS = Number(process.env.TWINE_SCENARIO_TIMEOUT_MS || 10000);

/** The engine's socket for the default namespace. */
const socketOf = (context) => context.sockets[''];

/** Fails the virtual user, with `reason` counted under `errors.` in the report. */
function fail(ee, reason) {
  ee.emit('error', reason);
  return new Error(reason);
}

/** Resolves with the first `event` on `socket` whose data passes `accept`; rejects after TIMEOUT_MS. */
function waitFor(socket, event, accept = () => true) {
  return new Promise((resolve, reject) => {
    const listener = (data) => {
      if (!accept(data)) return;
      clearTimeout(timer);
      socket.off(event, listener);
      resolve(data);
    };
    const timer = setTimeout(() => {
      socket.off(event, listener);
      reject(new Error(`no ${event} within ${TIMEOUT_MS} ms`));
    }, TIMEOUT_MS);
    socket.on(event, listener);
  });
}

/** (Re)connects `socket` with `cookie` in the handshake headers; resolves once connected. */
function connectWithCookie(socket, cookie) {
  socket.io.opts.extraHeaders = { ...socket.io.opts.extraHeaders, Cookie: cookie };
  const connected = new Promise((resolve, reject) => {
    const timer = setTimeout(() => done(new Error(`not connected within ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
    const onConnect = () => done();
    const onError = (err) => done(new Error(`connect_error: ${err.message}`));
    function done(err) {
      clearTimeout(timer);
      socket.off('connect', onConnect);
      socket.off('connect_error', onError);
      if (err) reject(err);
      else resolve();
    }
    socket.on('connect', onConnect);
    socket.on('connect_error', onError);
  });
  socket.connect();
  return connected;
}

/** A payload only this publish carries. */
const newPayload = (label) => ({ nonce: randomUUID(), label });

/** POST /api/twine of `payload` to the user's room; resolves with the time the POST started. */
async function publishOwn(context, ee, payload) {
  const started = Date.now();
  const res = await fetch(`${context.vars.target}/api/twine`, {
    method: 'POST',
    headers: { Authorization: process.env.TWINE_API_KEY ?? '', 'Content-Type': 'application/json' },
    body: JSON.stringify({ room_id: context.vars.room, payload }),
  });
  await res.text();
  if (res.status !== 201) throw fail(ee, `publish answered ${res.status}`);
  ee.emit('counter', 'twine.published', 1);
  ee.emit('histogram', 'twine.publish_time', Date.now() - started);
  return started;
}

/** A `message` of the user's room carrying `payload`'s nonce. */
const isOwn = (context, payload) => (m) =>
  m !== null && typeof m === 'object' && m.room === context.vars.room && m.nonce === payload.nonce;

/**
 * GET /set-cookie, keep the `twineid=<uuid>` pair in `cookie`, reconnect the engine's socket with
 * it, and pick a room of the user's own in `room`.
 */
async function joinTwine(context, ee) {
  const res = await fetch(`${context.vars.target}/set-cookie`);
  await res.text();
  const cookie = (res.headers.get('set-cookie') ?? '').split(';')[0];
  if (!cookie.startsWith('twineid=')) throw fail(ee, `no twineid cookie from /set-cookie (${res.status})`);
  context.vars.cookie = cookie;
  context.vars.room = `artillery-${randomUUID()}`;

  const socket = socketOf(context);
  socket.disconnect();
  try {
    await connectWithCookie(socket, cookie);
  } catch (err) {
    throw fail(ee, err.message);
  }
}

/**
 * Publishes a message to the user's room (already subscribed) and waits for it on the socket,
 * then acknowledges it with `updateSessionTS` as twine-client-library does. Keeps it in
 * `lastMessage`.
 */
async function publishAndReceive(context, ee) {
  const socket = socketOf(context);
  const payload = newPayload('live');
  // Listen before publishing: the message can arrive before the POST's answer.
  const received = waitFor(socket, 'message', isOwn(context, payload));
  received.catch(() => {}); // awaited below; a publish failure must not leave it unhandled
  const started = await publishOwn(context, ee, payload);
  let message;
  try {
    message = await received;
  } catch (err) {
    throw fail(ee, err.message);
  }
  ee.emit('counter', 'twine.received', 1);
  ee.emit('histogram', 'twine.delivery_time', Date.now() - started);
  socket.emit('updateSessionTS', message.timestamp);
  context.vars.lastMessage = message;
}

/**
 * Recovery: drops the connection, publishes while away, reconnects with the same cookie and
 * expects the server to rejoin the room and replay the missed message (timestamp after the handled
 * one), and not the message acknowledged before the drop.
 */
async function dropPublishRecover(context, ee) {
  const socket = socketOf(context);
  const handled = context.vars.lastMessage;
  if (!handled) throw fail(ee, 'dropPublishRecover needs publishAndReceive first');

  socket.disconnect();
  const missed = newPayload('missed');
  const started = await publishOwn(context, ee, missed);

  const events = [];
  const record = (event) => (data) => events.push({ event, data });
  const onMessage = record('message');
  const onJoined = record('roomJoined');
  socket.on('message', onMessage);
  socket.on('roomJoined', onJoined);
  try {
    const replayed = waitFor(socket, 'message', isOwn(context, missed));
    replayed.catch(() => {});
    await connectWithCookie(socket, context.vars.cookie);
    const message = await replayed;
    ee.emit('histogram', 'twine.recovery_time', Date.now() - started);

    const joined = `You have joined room: ${context.vars.room}`;
    const ownMessages = events.filter((e) => e.event === 'message' && e.data?.room === context.vars.room);
    if (!events.some((e) => e.event === 'roomJoined' && e.data === joined)) {
      throw new Error('no roomJoined for the room on reconnect');
    }
    if (ownMessages.some((e) => e.data.nonce === handled.nonce)) {
      throw new Error('the message acknowledged before the drop was replayed');
    }
    if (!(message.timestamp > handled.timestamp)) {
      throw new Error(`replayed timestamp ${message.timestamp} is not after ${handled.timestamp}`);
    }
    ee.emit('counter', 'twine.recovered', 1);
    socket.emit('updateSessionTS', message.timestamp);
    context.vars.lastMessage = message;
  } catch (err) {
    throw fail(ee, err.message);
  } finally {
    socket.off('message', onMessage);
    socket.off('roomJoined', onJoined);
  }
}

module.exports = { joinTwine, publishAndReceive, dropPublishRecover };
