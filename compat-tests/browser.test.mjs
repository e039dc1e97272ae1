// The unchanged twine-client-library in a real browser (Debian's Chromium, headless), through
// the demo page: real cookie rules, credentialed CORS, real transports and real network loss.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { startTwine } from '../js-fixtures/server.mjs';
import { launchBrowser, serveDemoElsewhere } from '../js-fixtures/browser.mjs';
import { connect, publish, subscribe, until } from '../js-fixtures/clients.mjs';

const fixtures = new URL('../js-fixtures', import.meta.url).pathname;
const artifacts = new URL('./artifacts/', import.meta.url).pathname;

let server;
let browser;
before(async () => {
  // Short heartbeats so a client notices a dead network within seconds.
  server = await startTwine({
    args: ['--demo', '--demo-dir', fixtures, '--ping-interval', '1s', '--ping-timeout', '1s'],
  });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

async function openDemo(context, url) {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(url);
  await page.waitForSelector('#status[data-state="live"]', { timeout: 10000 });
  page.errors = errors;
  return page;
}

const shown = (page) =>
  page.$$eval('li.message', (items) => items.map((li) => ({ ts: Number(li.dataset.ts), n: li.dataset.n })));

test('the page loads, gets an HttpOnly cookie, and a default socket starts on polling then upgrades', async () => {
  const context = await browser.newContext();
  try {
    const page = await openDemo(context, `${server.url}/demo/?room=first`);
    const cookies = await context.cookies(server.url);
    const twineid = cookies.find((c) => c.name === 'twineid');
    assert.ok(twineid, 'the twineid cookie is set');
    assert.equal(twineid.httpOnly, true);
    assert.equal(twineid.secure, true);
    assert.equal(twineid.sameSite, 'None');
    assert.ok(!(await page.evaluate(() => document.cookie)).includes('twineid'), 'not visible to scripts');

    const transports = await page.evaluate(async () => {
      const { io } = await import('./vendor/socket.io-client/socket.io.esm.min.js');
      const socket = io(location.origin, { withCredentials: true, forceNew: true });
      const seen = [];
      socket.io.on('open', () => {
        seen.push(socket.io.engine.transport.name);
        socket.io.engine.on('upgrade', (t) => seen.push(t.name));
      });
      for (let i = 0; i < 100 && seen.length < 2; i++) await new Promise((r) => setTimeout(r, 50));
      socket.close();
      return seen;
    });
    assert.deepEqual(transports, ['polling', 'websocket']);
    assert.deepEqual(page.errors, []);
  } finally {
    await context.close();
  }
});

test('from another origin: credentialed polling and publishing work when allowed, and are refused otherwise', async () => {
  const site = await serveDemoElsewhere();
  const allowed = await startTwine({ args: ['--cors-origins', site.url] });
  const refused = await startTwine({ args: ['--cors-origins', 'https://only.example'] });
  const context = await browser.newContext();
  try {
    const page = await openDemo(context, `${site.url}/demo/?room=cross&server=${allowed.url}`);
    const attempt = (target) =>
      page.evaluate(async (target) => {
        const { io } = await import('./vendor/socket.io-client/socket.io.esm.min.js');
        const socket = io(target, { withCredentials: true, transports: ['polling'], forceNew: true, reconnection: false });
        const connected = await new Promise((resolve) => {
          socket.on('connect', () => resolve(true));
          socket.on('connect_error', () => resolve(false));
          setTimeout(() => resolve(false), 4000);
        });
        socket.close();
        let status;
        try {
          const res = await fetch(`${target}/api/twine`, {
            method: 'POST',
            credentials: 'include',
            headers: { Authorization: 'test-key', 'Content-Type': 'application/json' },
            body: JSON.stringify({ room_id: 'cross', payload: { text: 'from the page' } }),
          });
          status = res.status;
        } catch (e) {
          status = `blocked: ${e.name}`;
        }
        return { connected, status };
      }, target);
    assert.deepEqual(await attempt(allowed.url), { connected: true, status: 201 });
    assert.deepEqual(await attempt(refused.url), { connected: false, status: 'blocked: TypeError' });
    await page.waitForSelector('li.message', { timeout: 5000 });
    assert.match(await page.textContent('li.message .text'), /from the page/);
  } finally {
    await context.close();
    await allowed.stop();
    await refused.stop();
    await site.stop();
  }
});

test('offline, 50 messages published, online again: all 50 shown once, in order, original timestamps', async () => {
  const room = 'offline';
  const truth = await connect(server.url);
  await subscribe(truth, room);
  const context = await browser.newContext();
  try {
    const page = await openDemo(context, `${server.url}/demo/?room=${room}`);
    await page.waitForFunction(() => document.body.textContent.includes('#offline'));
    await new Promise((r) => setTimeout(r, 300));
    for (let n = 0; n < 3; n++) await publish(server, room, { n, text: `before ${n}` });
    await page.waitForFunction(() => document.querySelectorAll('li.message').length === 3);

    await context.setOffline(true);
    await page.waitForSelector('#status[data-state="offline"]', { timeout: 15000 });
    for (let n = 3; n < 53; n++) assert.equal((await publish(server, room, { n, text: `while away ${n}` })).status, 201);
    await until(() => truth.messages.length === 53, 5000, 'observer');
    await context.setOffline(false);

    await page.waitForFunction(() => document.querySelectorAll('li.message').length >= 53, null, { timeout: 20000 });
    await new Promise((r) => setTimeout(r, 500));
    const seen = await shown(page);
    assert.equal(seen.length, 53, 'each once');
    assert.deepEqual(seen.map((m) => Number(m.n)), [...Array(53).keys()], 'in order');
    assert.deepEqual(seen.map((m) => m.ts), truth.messages.map((m) => m.timestamp), 'original timestamps');
    assert.deepEqual(page.errors, []);
  } finally {
    await context.close();
    truth.close();
  }
});

test('reloading the page recovers the session from the cookie; a screenshot is saved', async () => {
  const room = 'reload';
  const context = await browser.newContext();
  try {
    let page = await openDemo(context, `${server.url}/demo/?room=${room}`);
    await new Promise((r) => setTimeout(r, 300));
    await publish(server, room, { name: 'Ada', text: 'Morning! The deploy went out at 9:02.' });
    await page.waitForFunction(() => document.querySelectorAll('li.message').length === 1);
    await page.goto('about:blank');
    await new Promise((r) => setTimeout(r, 300));
    const away = [
      ['Grace', 'Dashboards look green.'],
      ['backend', 'Build #4821 passed.'],
      ['Linus', 'Shipping the docs next.'],
    ];
    for (const [name, text] of away) await publish(server, room, { name, text });

    page = await openDemo(context, `${server.url}/demo/?room=${room}`);
    await page.waitForFunction(() => document.querySelectorAll('li.message').length >= 3, null, { timeout: 10000 });
    await new Promise((r) => setTimeout(r, 300));
    const texts = await page.$$eval('li.message .text', (els) => els.map((e) => e.textContent));
    assert.deepEqual(texts, away.map(([, t]) => t), 'the messages published while away, recovered');

    await page.fill('#name', 'Margaret');
    await page.fill('#text', 'Posted from the demo form.');
    await page.click('button[type=submit]');
    await page.waitForFunction(() => document.querySelectorAll('li.message').length === 4);
    mkdirSync(artifacts, { recursive: true });
    await page.screenshot({ path: `${artifacts}demo.png` });
  } finally {
    await context.close();
  }
});
