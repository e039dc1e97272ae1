// Recovery as apps on the unchanged twine-client-library see it, in headless Chromium: the page
// (served from an origin of its own) creates the client, calls listenOn right away and subscribes
// once connected, exactly as the library's README shows. A reload, a new tab or a restart must
// hand every missed message to the app's listenOn callback, once, in publish order, with its
// original timestamp, and mark nothing handled that the app did not get. An always-connected
// observer records the ground truth.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTwine } from '../js-fixtures/server.mjs';
import { launchBrowser, serveDemoElsewhere } from '../js-fixtures/browser.mjs';
import { startDelayingProxy } from '../js-fixtures/proxy.mjs';
import { connect, publish, subscribe, until, sleep } from '../js-fixtures/clients.mjs';

let server;
let site;
let browser;
before(async () => {
  site = await serveDemoElsewhere();
  server = await startTwine({ args: ['--cors-origins', site.url] });
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await server?.stop();
  await site?.stop();
});

const view = (m) => `${m.room}/${m.timestamp}/${m.n}`;

/** An always-connected observer of `rooms`. */
async function observer(rooms) {
  const socket = await connect(server.url);
  for (const room of rooms) await subscribe(socket, room);
  return socket;
}

/**
 * One visit of the app: opens it in `context` (the browser profile, which keeps the twineid
 * cookie), waits until it is ready for live messages, and returns
 * { page, received(), transport() }.
 */
async function visit(context, { listen = ['news'], subscribe: rooms, page: file = 'index.html', via = server } = {}) {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  const query = new URLSearchParams({ server: via.url, listen: listen.join(',') });
  if (rooms) query.set('subscribe', rooms.join(','));
  await page.goto(`${site.url}/app/${file}?${query}`);
  // Until the server has answered every subscribe (over a slow network a subscribe arrives well
  // after the page sent it, and what is published before it is not the page's to receive) and
  // the library listens.
  await page.waitForFunction(() => window.ready?.() === true, null, { timeout: 15000 });
  return {
    page,
    errors,
    received: () => page.evaluate(() => window.received.map((m) => ({ room: m.room, timestamp: m.timestamp, n: m.n }))),
    transport: () => page.evaluate(() => window.transport()),
  };
}

/** Waits until the visit's app received `count` messages, then a little longer for extras. */
async function receivedAll(v, count, ms = 15000) {
  const deadline = Date.now() + ms;
  let got = await v.received();
  while (got.length < count && Date.now() < deadline) {
    await sleep(50);
    got = await v.received();
  }
  await sleep(400);
  return v.received();
}

/** A first visit that gets one live message (n = 0), then the page is closed. */
async function firstVisit(context, room, options) {
  const v = await visit(context, options);
  assert.equal((await publish(server, room, { n: 0 })).status, 201);
  assert.equal((await receivedAll(v, 1)).length, 1, 'the live message reached the app');
  await v.page.close();
  await sleep(200); // its acknowledgements are stored as it goes
}

async function reloadWithTwentyMissed(options = {}) {
  const room = 'news';
  const truth = await observer([room]);
  const context = await browser.newContext();
  try {
    await firstVisit(context, room, options);
    for (let n = 1; n <= 20; n++) assert.equal((await publish(server, room, { n })).status, 201);
    await until(() => truth.messages.length === 21, 5000, 'observer');

    const second = await visit(context, options);
    const got = await receivedAll(second, 20);
    assert.deepEqual(got.map(view), truth.messages.slice(1).map(view), 'every missed message, once, in order, original timestamps');
    assert.deepEqual(second.errors, []);
    const transport = await second.transport();

    await publish(server, room, { n: 21 });
    assert.equal((await receivedAll(second, 21)).length, 21, 'live again, nothing repeated');
    await second.page.close();
    await sleep(200);

    const third = await visit(context, options);
    await sleep(1500);
    assert.deepEqual(await third.received(), [], 'nothing was left unacknowledged, nothing repeats');
    await third.page.close();
    return transport;
  } finally {
    await context.close();
    truth.close();
  }
}

test('reload with 20 missed (WebSocket, the library default): all 20 reach listenOn, once, in order', async () => {
  assert.equal(await reloadWithTwentyMissed(), 'websocket');
});

test('reload with 20 missed over long-polling only: all 20 reach listenOn, once, in order', async () => {
  assert.equal(await reloadWithTwentyMissed({ page: 'polling.html' }), 'polling');
});

test('reload through a 200 ms round-trip network: all 20 reach listenOn', async () => {
  const proxy = await startDelayingProxy(server.port, { rtt: 200 });
  try {
    await reloadWithTwentyMissed({ via: proxy });
  } finally {
    await proxy.stop();
  }
});

test('reload while publishes continue: no gap and no duplicate at the seam', async () => {
  const room = 'busy';
  const truth = await observer([room]);
  const context = await browser.newContext();
  try {
    const options = { listen: [room] };
    await firstVisit(context, room, options);
    let n = 1;
    for (; n <= 200; n++) await publish(server, room, { n });
    let publishing = true;
    const publisher = (async () => {
      while (publishing) {
        await publish(server, room, { n: n++ });
        await sleep(2);
      }
    })();
    await sleep(50);
    const second = await visit(context, options);
    await sleep(700);
    publishing = false;
    await publisher;
    await until(() => truth.messages.length === n, 5000, 'observer');
    const got = await receivedAll(second, n - 1);
    assert.deepEqual(got.map(view), truth.messages.slice(1).map(view), 'exactly what was missed, then live');
  } finally {
    await context.close();
    truth.close();
  }
});

test('three visits in a row: nothing lost, nothing repeated', async () => {
  const room = 'visits';
  const truth = await observer([room]);
  const context = await browser.newContext();
  const seen = [];
  try {
    const options = { listen: [room] };
    let n = 0;
    for (let visitNo = 0; visitNo < 3; visitNo++) {
      const v = await visit(context, options);
      const due = truth.messages.length - seen.length;
      const replayed = await receivedAll(v, due);
      assert.equal(replayed.length, due, `visit ${visitNo + 1} got what was missed`);
      await publish(server, room, { n: n++ });
      const live = await receivedAll(v, due + 1);
      seen.push(...live);
      await v.page.close();
      await sleep(200);
      for (let i = 0; i < 5; i++) await publish(server, room, { n: n++ });
      await until(() => truth.messages.length === n, 5000, 'observer');
    }
    const last = await visit(context, options);
    seen.push(...(await receivedAll(last, 5)));
    assert.deepEqual(seen.map(view), truth.messages.map(view), 'every message exactly once across the visits');
  } finally {
    await context.close();
    truth.close();
  }
});

test('several rooms, only some listened: the listened ones recover exactly, visit after visit', async () => {
  const rooms = ['alpha', 'beta', 'quiet'];
  const listen = ['alpha', 'beta'];
  const truth = await observer(rooms);
  const context = await browser.newContext();
  try {
    const options = { listen, subscribe: rooms };
    const v = await visit(context, options);
    await sleep(100);
    for (const room of rooms) await publish(server, room, { n: 0 });
    assert.equal((await receivedAll(v, 2)).length, 2);
    await v.page.close();
    await sleep(200);
    for (let n = 1; n <= 30; n++) await publish(server, rooms[n % 3], { n });
    await until(() => truth.messages.length === 33, 5000, 'observer');
    const missed = truth.messages.slice(3).filter((m) => listen.includes(m.room));

    const second = await visit(context, options);
    const got = await receivedAll(second, missed.length);
    // Timestamps are unique per room; messages of different rooms published in the same
    // millisecond are replayed in room-name order.
    const byTimestamp = [...missed].sort((a, b) => a.timestamp - b.timestamp || a.room.localeCompare(b.room));
    assert.deepEqual(got.map(view), byTimestamp.map(view), 'listened rooms: each missed message once, merged in publish order');
    await second.page.close();
    await sleep(200);
    const third = await visit(context, options);
    await sleep(1500);
    assert.deepEqual(await third.received(), [], 'nothing repeats on the next visit');
  } finally {
    await context.close();
    truth.close();
  }
});
