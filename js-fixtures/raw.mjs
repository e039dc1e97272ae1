// Raw Engine.IO v4 / Socket.IO v5 over WebSocket, for tests that must behave like a hostile or
// broken client (stop reading, flood, send oversized frames), and what the server process uses,
// read from /proc.
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';

/**
 * Opens a WebSocket to `server` and joins the default namespace. Resolves to the WebSocket with
 * `handshake` (the Engine.IO OPEN packet), `sendEvent(event, ...args)`, `events` (decoded
 * Socket.IO events received) and `pong()`.
 */
export function connectRaw(server, { cookie, headers = {}, localAddress } = {}) {
  const url = `ws://127.0.0.1:${server.port}/socket.io/?EIO=4&transport=websocket`;
  const ws = new WebSocket(url, {
    headers: cookie ? { Cookie: cookie, ...headers } : headers,
    localAddress,
    maxPayload: 64 * 1024 * 1024,
  });
  ws.events = [];
  // Decoded events are kept while `keep` holds (a crowd of thousands turns it off).
  ws.keep = true;
  ws.sendEvent = (event, ...args) => ws.send(`42${JSON.stringify([event, ...args])}`);
  ws.pong = () => ws.readyState === WebSocket.OPEN && ws.send('3');
  return new Promise((resolve, reject) => {
    ws.on('error', reject);
    ws.on('unexpected-response', (_, res) => reject(new Error(`handshake answered ${res.statusCode}`)));
    ws.on('message', (data) => {
      const text = data.toString();
      if (text.startsWith('0')) {
        ws.handshake = JSON.parse(text.slice(1));
        ws.send('40');
      }
      else if (text === '2') ws.pong();
      else if (text.startsWith('40')) resolve(ws);
      else if (text.startsWith('42') && ws.keep) ws.events.push(JSON.parse(text.slice(2)));
    });
  });
}

/**
 * An Engine.IO session on long-polling, driven request by request: `open()` shakes hands and joins
 * the default namespace; `poll()` resolves to the packets of one GET; `post(...packets)` sends;
 * `upgrade()` takes the session to a WebSocket (probe, then upgrade). Every Socket.IO event
 * received, on either transport, lands in `events` in arrival order; pings are answered.
 */
export function pollingSession(server, { cookie } = {}) {
  const base = `${server.url}/socket.io/?EIO=4&transport=polling`;
  const headers = cookie ? { Cookie: cookie } : {};
  const session = { events: [], handshake: null, sid: null, ws: null };
  const take = (packet) => {
    if (packet === '2') session.post('3');
    else if (packet.startsWith('42')) session.events.push(JSON.parse(packet.slice(2)));
  };
  session.open = async () => {
    const res = await fetch(base, { headers });
    session.handshake = JSON.parse((await res.text()).slice(1));
    session.sid = session.handshake.sid;
    await session.post('40');
    return session;
  };
  session.post = async (...packets) => {
    const res = await fetch(`${base}&sid=${session.sid}`, {
      method: 'POST',
      headers: { ...headers, 'Content-Type': 'text/plain;charset=UTF-8' },
      body: packets.join('\x1e'),
    });
    await res.text();
    return res;
  };
  session.poll = async () => {
    const res = await fetch(`${base}&sid=${session.sid}`, { headers });
    const packets = (await res.text()).split('\x1e');
    for (const packet of packets) take(packet);
    return packets;
  };
  session.upgrade = () =>
    new Promise((resolve, reject) => {
      const url = `ws://127.0.0.1:${server.port}/socket.io/?EIO=4&transport=websocket&sid=${session.sid}`;
      const ws = new WebSocket(url, { headers, maxPayload: 64 * 1024 * 1024 });
      session.ws = ws;
      ws.on('error', reject);
      ws.on('open', () => ws.send('2probe'));
      ws.on('message', (data) => {
        const text = data.toString();
        if (text === '3probe') {
          ws.send('5');
          resolve(session);
        } else if (text === '2') ws.send('3');
        else take(text);
      });
    });
  session.close = () => session.ws?.close();
  return session;
}

/** Resolves when `ws` is closed (by either side). */
export function closed(ws) {
  return new Promise((resolve) => {
    if (ws.readyState === WebSocket.CLOSED) resolve();
    else ws.once('close', resolve);
  });
}

/** Resident memory of process `pid`, in MB. */
export function rssMB(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(status.match(/VmRSS:\s+(\d+) kB/)[1]) / 1024;
}

/** CPU seconds (user + system) process `pid` has used. */
export function cpuSeconds(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

export { WebSocket };

/**
 * `count` raw connections subscribed to `room`, spread over loopback source addresses (so no
 * per-address bound is what a test measures), connected `batch` at a time. Each keeps only a
 * count of what it received (`received`, `bytes`), so thousands stay cheap for the test process.
 */
export async function crowd(server, room, count, { batch = 200 } = {}) {
  const members = [];
  for (let start = 0; start < count; start += batch) {
    const made = await Promise.all(
      Array.from({ length: Math.min(batch, count - start) }, async (_, i) => {
        const n = start + i;
        const ws = await connectRaw(server, { localAddress: `127.0.${10 + Math.floor(n / 250)}.${1 + (n % 250)}` });
        ws.sendEvent('subscribe', room);
        return ws;
      }),
    );
    members.push(...made);
  }
  for (const ws of members) {
    ws.received = 0;
    ws.bytes = 0;
    ws.presence = 0;
    ws.on('message', (data) => {
      ws.received += 1;
      ws.bytes += data.length;
      if (data.subarray(0, 13).toString() === '42["presence"') ws.presence += 1;
    });
  }
  await until(() => members.every((ws) => ws.events.some(([event]) => event === 'roomJoined')), 30000, `${count} joined ${room}`);
  for (const ws of members) {
    ws.keep = false;
    ws.events.length = 0;
  }
  return members;
}

/** Resolves when `predicate()` holds, polling every 10 ms; rejects after `ms`. */
async function until(predicate, ms, what) {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
