// The HTTP contract: health, the twineid cookie, publishing and its refusals, and CORS, checked
// against the real binary the way a backend or a browser would see it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTwine, runTwine } from '../js-fixtures/server.mjs';
import { publish } from '../js-fixtures/clients.mjs';

let server;
before(async () => {
  server = await startTwine({ args: ['--max-payload', '2000'] });
});
after(() => server?.stop());

test('GET / answers 201 ok for load-balancer health checks', async () => {
  const res = await fetch(`${server.url}/`);
  assert.equal(res.status, 201);
  assert.equal(await res.text(), 'ok');
});

test('GET /set-cookie sets an HttpOnly, Secure, SameSite=None twineid once', async () => {
  const res = await fetch(`${server.url}/set-cookie`);
  assert.equal(res.status, 200);
  assert.equal(await res.text(), 'First cookie set');
  const cookie = res.headers.get('set-cookie');
  assert.match(cookie, /^twineid=[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12};/);
  for (const attr of ['Max-Age=86400', 'Path=/', 'HttpOnly', 'Secure', 'SameSite=None']) {
    assert.ok(cookie.split('; ').includes(attr), `${attr} in ${cookie}`);
  }
  const expires = new Date(cookie.match(/Expires=([^;]+)/)[1]);
  assert.ok(Math.abs(expires - Date.now() - 86400e3) < 5000, 'expires in a day');
  assert.doesNotMatch(cookie, /Domain=/);

  const again = await fetch(`${server.url}/set-cookie`, {
    headers: { Cookie: cookie.split(';')[0] },
  });
  assert.equal(again.status, 200);
  assert.equal(await again.text(), 'Cookie already set');
  assert.equal(again.headers.get('set-cookie'), null, 'an existing cookie is not refreshed');
});

test('POST /api/twine accepts the Twine body with a raw or Bearer key', async () => {
  let res = await publish(server, 'http-room', { a: 1 });
  assert.equal(res.status, 201);
  assert.equal(await res.text(), 'ok');
  res = await publish(server, 'http-room', { a: 2 }, { key: 'Bearer test-key' });
  assert.equal(res.status, 201);
});

test('POST /api/twine refuses a missing or wrong key with 401 before reading the body', async () => {
  let res = await fetch(`${server.url}/api/twine`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ room_id: 'r', payload: {} }),
  });
  assert.equal(res.status, 401);
  assert.match(await res.text(), /API key/i);
  res = await publish(server, 'r', { a: 1 }, { key: 'wrong-key' });
  assert.equal(res.status, 401);
  assert.equal(await res.text(), 'Invalid API Key.');
  res = await publish(server, 'r', null, { key: 'wrong', body: 'not json at all' });
  assert.equal(res.status, 401, 'key checked first');
});

test('POST /api/twine refuses malformed bodies with the original 400 texts', async () => {
  const cases = [
    [{ room_id: 'r', payload: {}, extra: 1 }, 'Malformed Request: Extra parameters were included in request.'],
    [{ room_id: 'r' }, 'Malformed Request: One or more required parameters is missing'],
    [{ room_id: '', payload: { a: 1 } }, 'Malformed Request: One or more required parameters is missing'],
    [{ payload: { a: 1 } }, 'Malformed Request: One or more required parameters is missing'],
    [{ room_id: 'r', payload: 'text' }, /^Malformed Request: .*incorrect data type\.$/],
    [{ room_id: 'r', payload: [1, 2] }, /^Malformed Request: .*incorrect data type\.$/],
    [{ room_id: 7, payload: { a: 1 } }, /^Malformed Request: .*incorrect data type\.$/],
    [{ room_id: 'x'.repeat(300), payload: { a: 1 } }, /^Malformed Request: .*256/],
  ];
  for (const [body, expected] of cases) {
    const res = await publish(server, null, null, { body: JSON.stringify(body) });
    assert.equal(res.status, 400, JSON.stringify(body));
    const text = await res.text();
    if (expected instanceof RegExp) assert.match(text, expected);
    else assert.equal(text, expected);
  }
  const res = await publish(server, null, null, { body: '{"room_id": "r", "payload": {' });
  assert.equal(res.status, 400);
  assert.match(await res.text(), /not valid JSON/);
});

test('POST /api/twine refuses a body over --max-payload with 413', async () => {
  const res = await publish(server, 'r', { big: 'x'.repeat(5000) });
  assert.equal(res.status, 413);
  assert.match(await res.text(), /over 2000 bytes/);
});

test('CORS echoes the Origin with credentials on routes, preflights and Engine.IO polling', async () => {
  const origin = 'http://app.example.test';
  let res = await fetch(`${server.url}/set-cookie`, { headers: { Origin: origin } });
  assert.equal(res.headers.get('access-control-allow-origin'), origin);
  assert.equal(res.headers.get('access-control-allow-credentials'), 'true');

  res = await fetch(`${server.url}/api/twine`, {
    method: 'OPTIONS',
    headers: {
      Origin: origin,
      'Access-Control-Request-Method': 'POST',
      'Access-Control-Request-Headers': 'authorization,content-type',
    },
  });
  assert.ok(res.status < 300, `preflight status ${res.status}`);
  assert.equal(res.headers.get('access-control-allow-origin'), origin);
  assert.match(res.headers.get('access-control-allow-headers'), /authorization/i);

  res = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling`, { headers: { Origin: origin } });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('access-control-allow-origin'), origin);
  assert.equal(res.headers.get('access-control-allow-credentials'), 'true');
  assert.match(await res.text(), /^0\{"sid":/);
});

test('with --cors-origins only listed origins are echoed, never *', async () => {
  const strict = await startTwine({ args: ['--cors-origins', 'http://good.test,http://also.test'] });
  try {
    let res = await fetch(`${strict.url}/`, { headers: { Origin: 'http://also.test' } });
    assert.equal(res.headers.get('access-control-allow-origin'), 'http://also.test');
    res = await fetch(`${strict.url}/socket.io/?EIO=4&transport=polling`, {
      headers: { Origin: 'http://evil.test' },
    });
    assert.equal(res.headers.get('access-control-allow-origin'), null);
    res = await fetch(`${strict.url}/api/twine`, {
      method: 'OPTIONS',
      headers: { Origin: 'http://evil.test', 'Access-Control-Request-Method': 'POST' },
    });
    assert.notEqual(res.headers.get('access-control-allow-origin'), '*');
    assert.equal(res.headers.get('access-control-allow-origin'), null);
  } finally {
    await strict.stop();
  }
});

test('the server is still healthy after the bad requests', async () => {
  const res = await fetch(`${server.url}/`);
  assert.equal(res.status, 201);
  assert.equal((await publish(server, 'after', { ok: true })).status, 201);
});

test('invalid or unknown settings fail at start with a clear message', async () => {
  let run = await runTwine(['--ping-interval', '25000']);
  assert.notEqual(run.code, 0);
  assert.match(run.output, /no unit/);
  run = await runTwine([], { TWINE_RECOVERY_WINDOWS: '1h' });
  assert.notEqual(run.code, 0);
  assert.match(run.output, /unknown setting TWINE_RECOVERY_WINDOWS/);
  run = await runTwine(['--port', 'eighty']);
  assert.notEqual(run.code, 0);
  assert.match(run.output, /invalid value 'eighty'/);
});

test('without an API key one is generated and logged once', async () => {
  const s = await startTwine({ apiKey: '' });
  try {
    const key = s.logs().match(/api_key="?([0-9a-f]{32})/)?.[1];
    assert.ok(key, `generated key in logs:\n${s.logs()}`);
    assert.equal((await publish(s, 'r', { a: 1 }, { key })).status, 201);
  } finally {
    await s.stop();
  }
});

test('ENV_PORT from the original is honoured when PORT is unset', async () => {
  const net = await import('node:net');
  const port = await new Promise((resolve) => {
    const srv = net.createServer().listen(0, '127.0.0.1', () => {
      const p = srv.address().port;
      srv.close(() => resolve(p));
    });
  });
  const { spawn } = await import('node:child_process');
  const { twineBin } = await import('../js-fixtures/server.mjs');
  const proc = spawn(twineBin, ['--host', '127.0.0.1'], {
    env: { PATH: process.env.PATH, ENV_PORT: String(port), TWINE_API_KEY: 'k' },
    stdio: 'ignore',
  });
  try {
    let status;
    for (let i = 0; i < 100 && status === undefined; i++) {
      status = await fetch(`http://127.0.0.1:${port}/`).then((r) => r.status, () => undefined);
      if (status === undefined) await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(status, 201);
  } finally {
    proc.kill('SIGKILL');
  }
});
