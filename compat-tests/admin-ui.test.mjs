// The Socket.IO Admin UI's own pages (`@socket.io/admin-ui` 0.5.1's `ui/dist`, served by the
// node at `/admin/` with `--admin-ui-dir`) in Chromium, on a fleet of two nodes sharing Redis:
// the login form, then the servers page with both nodes and the sockets and rooms pages listing
// the Twine clients of both (stock socket.io-client and twine-client-library) with their rooms.
// Screenshots land in compat-tests/artifacts/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startTwine } from '../js-fixtures/server.mjs';
import { startRedis } from '../js-fixtures/services.mjs';
import { launchBrowser } from '../js-fixtures/browser.mjs';
import { connect, fetchCookie, subscribe, until } from '../js-fixtures/clients.mjs';
import { connectAdmin, hashPassword } from '../js-fixtures/admin.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const uiDir = path.join(root, 'js-fixtures/node_modules/@socket.io/admin-ui/ui/dist');
const artifacts = path.join(root, 'compat-tests/artifacts');
const auth = { username: 'operator', password: 'a long passphrase' };
const requireFixture = createRequire(new URL('../js-fixtures/package.json', import.meta.url));
const load = async (name) => (await import(requireFixture.resolve(name))).default;

let redis;
let server;
let other;
let browser;
before(async () => {
  redis = await startRedis();
  const args = ['--redis-url', redis.url, '--redis-prefix', 'admin-ui', '--admin', 'on', '--admin-username', auth.username,
    '--admin-password-hash', hashPassword(auth.password), '--admin-ui-dir', uiDir, '--drain-delay', '0s'];
  [server, other] = await Promise.all([startTwine({ args }), startTwine({ args })]);
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await Promise.all([server?.stop(), other?.stop()]);
  await redis?.stop();
});

test('the Admin UI logs in and lists both nodes and their Twine clients with their rooms', async () => {
  const clients = [];
  let library;
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  try {
    for (const [node, room] of [[server, 'news'], [other, 'sports'], [server, 'news']]) {
      const client = await connect(node.url, { cookie: await fetchCookie(node.url) });
      await subscribe(client, room);
      clients.push(client);
    }
    // The published library, on the node the UI is not served by.
    const TwineClientLibrary = await load('twine-client-library');
    library = new TwineClientLibrary(other.url);
    await until(() => library.socket?.connected, 5000, 'the library connects');
    const joined = new Promise((r) => library.socket.once('roomJoined', r));
    // listenOn attaches its handler on a 100 ms timer once the socket exists.
    library.listenOn('library-room', () => {});
    await until(() => library.socket.listeners('message').length > 0, 3000, 'listenOn attached');
    library.subscribe('library-room');
    await joined;
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
    // The ids the UI knows the clients and the nodes by (pseudonyms, see the protocol test).
    const watcher = await connectAdmin(server, auth);
    const statsOf = () => watcher.received.filter((e) => e.event === 'server_stats').map((e) => e.args[0]);
    await until(() => watcher.received.some((e) => e.event === 'all_sockets'), 5000, 'all_sockets');
    await until(() => new Set(statsOf().map((s) => s.serverId)).size === 2, 10000, 'both nodes in server_stats');
    const sockets = watcher.received.find((e) => e.event === 'all_sockets').args[0];
    const servers = [...new Set(statsOf().map((s) => s.serverId))];
    watcher.close();
    assert.equal(sockets.length, 4, 'three stock clients and the library, over both nodes');
    assert.deepEqual(sockets.map((s) => s.rooms.join()).sort(), ['library-room', 'news', 'news', 'sports']);
    mkdirSync(artifacts, { recursive: true });
    await page.evaluate(() => (location.hash = '#/servers/'));
    for (const id of servers) await page.getByText(id).first().waitFor({ timeout: 10000 });
    await page.waitForTimeout(500); // the page's transition
    await page.screenshot({ path: path.join(artifacts, 'admin-ui-servers.png') });
    await page.evaluate(() => (location.hash = '#/sockets/'));
    for (const { id } of sockets) await page.getByText(id).first().waitFor({ timeout: 10000 });
    await page.waitForTimeout(500);
    await page.screenshot({ path: path.join(artifacts, 'admin-ui-sockets.png') });
    await page.evaluate(() => (location.hash = '#/rooms/'));
    for (const room of ['news', 'sports', 'library-room']) await page.getByText(room).first().waitFor({ timeout: 10000 });
    await page.waitForTimeout(500);
    await page.screenshot({ path: path.join(artifacts, 'admin-ui-rooms.png') });
    const shown = await page.content();
    for (const client of [...clients, library.socket]) assert.ok(!shown.includes(client.id), 'no Engine.IO session id shown');
    assert.deepEqual(errors, []);
  } finally {
    for (const c of clients) c.close();
    library?.disconnect();
    await context.close();
  }
});
