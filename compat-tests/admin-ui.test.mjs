// The Socket.IO Admin UI's own pages (`@socket.io/admin-ui` 0.5.1's `ui/dist`, served by the
// node at `/admin/` with `--admin-ui-dir`) in Chromium: the login form, then the sockets page
// listing Twine clients with their rooms. A screenshot lands in compat-tests/artifacts/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startTwine } from '../js-fixtures/server.mjs';
import { launchBrowser } from '../js-fixtures/browser.mjs';
import { connect, fetchCookie, subscribe, until } from '../js-fixtures/clients.mjs';
import { connectAdmin, hashPassword } from '../js-fixtures/admin.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const uiDir = path.join(root, 'js-fixtures/node_modules/@socket.io/admin-ui/ui/dist');
const artifacts = path.join(root, 'compat-tests/artifacts');
const auth = { username: 'operator', password: 'a long passphrase' };

let server;
let browser;
before(async () => {
  server = await startTwine({
    args: ['--admin', 'on', '--admin-username', auth.username, '--admin-password-hash', hashPassword(auth.password),
      '--admin-ui-dir', uiDir, '--drain-delay', '0s'],
  });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

test('the Admin UI logs in and lists the Twine clients with their rooms', async () => {
  const clients = [];
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  try {
    for (const room of ['news', 'sports', 'news']) {
      const client = await connect(server.url, { cookie: await fetchCookie(server.url) });
      await subscribe(client, room);
      clients.push(client);
    }
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${server.url}/admin/`, { waitUntil: 'domcontentloaded' });
    await page.getByLabel('Server URL').fill(server.url);
    await page.getByLabel('Username').fill(auth.username);
    await page.getByLabel('Password').fill('wrong password');
    await page.getByRole('button', { name: 'Connect' }).click();
    await page.getByText('Invalid credentials').waitFor({ timeout: 10000 });
    await page.getByLabel('Password').fill(auth.password);
    await page.getByRole('button', { name: 'Connect' }).click();
    await page.getByText('Connection', { exact: true }).waitFor({ state: 'hidden', timeout: 10000 });
    await page.evaluate(() => (location.hash = '#/sockets/'));
    // The ids the UI knows the clients by (pseudonyms, see the protocol test).
    const watcher = await connectAdmin(server, auth);
    await until(() => watcher.received.some((e) => e.event === 'all_sockets'), 5000, 'all_sockets');
    const ids = watcher.received.find((e) => e.event === 'all_sockets').args[0].map((s) => s.id);
    watcher.close();
    assert.equal(ids.length, 3);
    for (const id of ids) {
      await page.getByText(id).first().waitFor({ timeout: 10000 });
    }
    mkdirSync(artifacts, { recursive: true });
    await page.waitForTimeout(500); // the page's transition
    await page.screenshot({ path: path.join(artifacts, 'admin-ui-sockets.png') });
    await page.evaluate(() => (location.hash = '#/rooms/'));
    await page.getByText('sports').first().waitFor({ timeout: 10000 });
    await page.waitForTimeout(500);
    await page.screenshot({ path: path.join(artifacts, 'admin-ui-rooms.png') });
    const shown = await page.content();
    for (const client of clients) assert.ok(!shown.includes(client.id), 'no Engine.IO session id shown');
    assert.deepEqual(errors, []);
  } finally {
    for (const c of clients) c.close();
    await context.close();
  }
});
