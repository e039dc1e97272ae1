// The Grafana dashboard in deploy/grafana/twine.json, checked without Grafana: it has the shape
// Grafana imports (a uid, a title, an __inputs datasource, panels with unique ids and places on the
// grid, every query a PromQL expression on the dashboard's Prometheus datasource variable), it
// covers every area an operator looks at, and every metric and every limit/route/op label value a
// query names is one a real node (with Redis, so the fleet and Redis figures are live, and a hook,
// so the hook figures are) exports on GET /metrics. A metric renamed in the server, or misspelt in
// the dashboard, fails here instead of showing an empty panel.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { startTwine } from '../js-fixtures/server.mjs';
import { startRedis } from '../js-fixtures/services.mjs';
import { startBackend } from '../js-fixtures/backend.mjs';
import { connect, fetchCookie, publish, subscribe, until, sleep } from '../js-fixtures/clients.mjs';

const file = new URL('../deploy/grafana/twine.json', import.meta.url);
const dashboard = JSON.parse(readFileSync(file, 'utf8'));

/** The variable every panel and query takes its datasource from. */
const DATASOURCE = '${datasource}';

/** Every metric the dashboard must chart, by area. */
const REQUIRED = {
  connections: ['twine_connections', 'twine_fleet_nodes', 'twine_fleet_sockets', 'twine_connections_opened_total'],
  messages: ['twine_messages_delivered_total', 'twine_messages_replayed_total', 'twine_messages_published_total'],
  latency: ['twine_delivery_seconds_bucket', 'twine_replay_seconds_bucket', 'twine_delivery_lag_seconds'],
  'publishes and limits': ['twine_limits_reached_total', 'twine_http_requests_total'],
  store: ['twine_store_seconds_bucket', 'twine_store_errors_total', 'twine_store_up', 'twine_archive_backlog'],
  redis: ['twine_redis_resubscribed_total', 'twine_redis_silent_total', 'twine_redis_messages_received_total', 'twine_feed_dropped_total'],
  hooks: ['twine_hook_calls_total', 'twine_hook_seconds_bucket'],
  drain: ['twine_draining', 'twine_drain_closed_total'],
  rebalancing: ['twine_rebalance_moved_total', 'twine_forwarded_requests_total'],
};

/** Label values a query may pin, checked against the node's series. */
const PINNED_LABELS = ['limit', 'route', 'op'];

const isRow = (p) => p.type === 'row';
/** Every panel, rows' folded panels included. */
const allPanels = (d) => d.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
const queries = (d) =>
  allPanels(d)
    .filter((p) => !isRow(p))
    .flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })))
    .concat(
      d.templating.list
        .filter((v) => v.type === 'query')
        .map((v) => ({ panel: `variable ${v.name}`, expr: v.definition ?? v.query?.query ?? v.query })),
    );

/** The twine_ metrics an expression names. */
const metricsIn = (expr) => [...new Set(expr.match(/\btwine_[A-Za-z0-9_:]*/g) ?? [])];

/** The values an expression pins `label` to (`=` or `=~` with alternatives). */
function pinnedValues(expr, label) {
  const values = [];
  for (const m of expr.matchAll(new RegExp(`\\b${label}\\s*(=~|!~|!=|=)\\s*"([^"]*)"`, 'g'))) {
    values.push(...(m[1].includes('~') ? m[2].split('|') : [m[2]]));
  }
  return values;
}

/** The labels an expression groups by (`by (...)`), `le` and Prometheus's own labels aside. */
const groupedBy = (expr) =>
  [...expr.matchAll(/\bby\s*\(([^)]*)\)/g)]
    .flatMap((m) => m[1].split(','))
    .map((l) => l.trim())
    .filter((l) => l && !['le', 'instance', 'job'].includes(l));

/**
 * The Prometheus text format, as { types: name → type, series: name → [labels], values: name →
 * the value of its unlabelled series }.
 */
function parseExposition(text) {
  const types = new Map();
  const series = new Map();
  const values = new Map();
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)/.exec(line);
    if (type) types.set(type[1], type[2]);
    if (!line || line.startsWith('#')) continue;
    const m = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    assert.ok(m, `a series line: ${line}`);
    const labels = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1], l[2]]));
    if (!series.has(m[1])) series.set(m[1], []);
    series.get(m[1]).push(labels);
    if (!m[2]) values.set(m[1], m[3]);
  }
  return { types, series, values };
}

/**
 * What the dashboard names that the node does not export: metrics (a histogram's `_bucket`,
 * `_sum` or `_count` must come with its `_bucket` series), pinned label values, and labels grouped
 * by. Empty when every query can show data.
 */
function unexported(d, { types, series }) {
  const problems = [];
  for (const { panel, expr } of queries(d)) {
    const named = metricsIn(expr);
    for (const name of named) {
      const base = name.replace(/_(bucket|sum|count)$/, '');
      if (base !== name && types.get(base) === 'histogram') {
        if (!series.has(`${base}_bucket`)) problems.push(`${panel}: histogram ${base} has no ${base}_bucket series`);
      }
      if (!series.has(name)) problems.push(`${panel}: ${name} is not exported`);
    }
    const labelSets = named.flatMap((n) => series.get(n) ?? []);
    for (const label of PINNED_LABELS) {
      for (const value of pinnedValues(expr, label)) {
        if (!labelSets.some((l) => l[label] === value)) problems.push(`${panel}: no series of ${named.join(', ')} has ${label}="${value}"`);
      }
    }
    for (const label of groupedBy(expr)) {
      if (!labelSets.some((l) => label in l)) problems.push(`${panel}: no series of ${named.join(', ')} has a ${label} label`);
    }
  }
  return problems;
}

test('the dashboard has the shape Grafana imports', () => {
  assert.equal(typeof dashboard.uid, 'string');
  assert.match(dashboard.uid, /^[A-Za-z0-9_-]{1,40}$/, 'uid');
  assert.ok(dashboard.title, 'title');
  assert.equal(dashboard.id, null, 'no id of some other Grafana');
  assert.ok(dashboard.schemaVersion >= 36 && dashboard.schemaVersion <= 41, `schemaVersion ${dashboard.schemaVersion}`);

  const inputs = dashboard.__inputs ?? [];
  assert.ok(inputs.some((i) => i.type === 'datasource' && i.pluginId === 'prometheus'), 'a Prometheus datasource input');
  const dsVariable = dashboard.templating.list.find((v) => v.name === 'datasource');
  assert.ok(dsVariable, 'a datasource variable');
  assert.equal(dsVariable.type, 'datasource');
  assert.equal(dsVariable.query, 'prometheus');
  // Import puts the chosen datasource wherever an input is named.
  for (const input of inputs) assert.ok(JSON.stringify(dashboard).includes(`\${${input.name}}`), `input ${input.name} is used`);

  const panels = allPanels(dashboard);
  assert.ok(panels.length > 0, 'panels');
  const ids = panels.map((p) => p.id);
  assert.ok(ids.every(Number.isInteger), 'every panel has an integer id');
  assert.equal(new Set(ids).size, ids.length, `panel ids unique: ${ids}`);
  const cells = new Map();
  for (const p of panels) {
    const g = p.gridPos;
    assert.ok(g && ['h', 'w', 'x', 'y'].every((k) => Number.isInteger(g[k]) && g[k] >= 0), `${p.title}: gridPos ${JSON.stringify(g)}`);
    assert.ok(g.w >= 1 && g.h >= 1 && g.x + g.w <= 24, `${p.title}: within the 24 columns`);
    for (let y = g.y; y < g.y + g.h; y++) {
      for (let x = g.x; x < g.x + g.w; x++) {
        const taken = cells.get(`${x},${y}`);
        assert.ok(!taken, `${p.title} overlaps ${taken}`);
        cells.set(`${x},${y}`, p.title);
      }
    }
    assert.ok(p.title, `panel ${p.id} has a title`);
    if (isRow(p)) continue;
    assert.ok(['timeseries', 'stat'].includes(p.type), `${p.title}: panel type ${p.type}`);
    assert.equal(p.datasource?.uid, DATASOURCE, `${p.title}: panel datasource`);
    assert.ok(p.targets?.length > 0, `${p.title}: has queries`);
    const refIds = p.targets.map((t) => t.refId);
    assert.equal(new Set(refIds).size, refIds.length, `${p.title}: refIds unique`);
    for (const t of p.targets) {
      assert.ok(typeof t.expr === 'string' && t.expr.trim(), `${p.title} ${t.refId}: an expr`);
      assert.equal(t.datasource?.type, 'prometheus', `${p.title} ${t.refId}: a Prometheus query`);
      assert.equal(t.datasource?.uid, DATASOURCE, `${p.title} ${t.refId}: refers to the datasource variable`);
      assert.ok(metricsIn(t.expr).length > 0, `${p.title} ${t.refId}: names a twine_ metric: ${t.expr}`);
      const open = [...t.expr].filter((c) => c === '(').length;
      const close = [...t.expr].filter((c) => c === ')').length;
      assert.equal(open, close, `${p.title} ${t.refId}: balanced parentheses: ${t.expr}`);
    }
  }
  for (const v of dashboard.templating.list.filter((v) => v.type === 'query')) {
    assert.equal(v.datasource?.uid, DATASOURCE, `variable ${v.name} uses the datasource variable`);
  }
});

test('the dashboard covers every area', () => {
  const named = new Set(queries(dashboard).flatMap(({ expr }) => metricsIn(expr)));
  for (const [area, metrics] of Object.entries(REQUIRED)) {
    for (const metric of metrics) assert.ok(named.has(metric), `${area}: no query charts ${metric}`);
  }
  const quantiles = queries(dashboard).filter(({ expr }) => expr.includes('histogram_quantile'));
  for (const histogram of ['twine_delivery_seconds', 'twine_replay_seconds', 'twine_store_seconds', 'twine_hook_seconds']) {
    assert.ok(quantiles.some(({ expr }) => expr.includes(`${histogram}_bucket`)), `a quantile of ${histogram}`);
  }
  // Refused publishes are counted by the bounds that refuse them.
  const limits = new Set(queries(dashboard).flatMap(({ expr }) => pinnedValues(expr, 'limit')));
  for (const limit of ['publish_rate', 'client_publish_rate', 'delivery_lag']) assert.ok(limits.has(limit), `publishes refused by ${limit}`);
});

let exposition;
const cleanup = [];

before(async () => {
  const secret = 'grafana-test-secret';
  const redis = await startRedis();
  cleanup.push(() => redis.stop());
  const backend = await startBackend({ secret });
  cleanup.push(() => backend.stop());
  const server = await startTwine({
    args: [
      '--redis-url', redis.url,
      '--hook-secret', secret,
      '--connect-hook-url', `${backend.url}/connect`,
      '--drain-delay', '0s',
      '--drain-period', '0s',
    ],
  });
  cleanup.unshift(() => server.stop());
  const scrape = async () => parseExposition(await (await fetch(`${server.url}/metrics`)).text());

  // Traffic, so the figures labelled as they happen exist: a connection (through the connect
  // hook), a subscription, a publish delivered live (the store's calls, Redis pub/sub).
  const socket = await connect(server.url, { cookie: await fetchCookie(server.url) });
  await subscribe(socket, 'dashboard');
  const res = await publish(server, 'dashboard', { n: 1 });
  assert.equal(res.status, 201);
  await until(() => socket.messages.length === 1, 5000, 'the message delivered');
  socket.close();

  // A store call that fails, so the errors are labelled too: a publish while Redis is down.
  await redis.stop();
  const refused = await publish(server, 'dashboard', { n: 2 });
  assert.ok(refused.status >= 500, `a publish with the store down is refused (${refused.status})`);
  await redis.start();

  // The node announces itself to the fleet every second, and finds its store back.
  const deadline = Date.now() + 10000;
  for (;;) {
    exposition = await scrape();
    const nodes = Number(exposition.values.get('twine_fleet_nodes'));
    const up = Number(exposition.values.get('twine_store_up'));
    if (nodes >= 1 && up === 1) break;
    assert.ok(Date.now() < deadline, `the node sees itself in the fleet (twine_fleet_nodes ${nodes}) and its store (twine_store_up ${up})`);
    await sleep(200);
  }
});

after(async () => {
  for (const stop of cleanup) await stop();
});

test('every metric and label value the dashboard names is exported by a node', () => {
  assert.deepEqual(unexported(dashboard, exposition), []);
  // And the check is not vacuous: it looked at every one of the required metrics.
  const named = new Set(queries(dashboard).flatMap(({ expr }) => metricsIn(expr)));
  assert.ok(named.size >= Object.values(REQUIRED).flat().length, `${named.size} metrics named`);
});

test('a query naming what the node does not export is caught', () => {
  const tampered = structuredClone(dashboard);
  const target = allPanels(tampered).find((p) => !isRow(p)).targets[0];
  target.expr = 'sum(rate(twine_messages_lost_total[5m])) + sum(twine_limits_reached_total{limit="no_such_limit"})';
  const problems = unexported(tampered, exposition);
  assert.ok(problems.some((p) => p.includes('twine_messages_lost_total is not exported')), problems.join('\n'));
  assert.ok(problems.some((p) => p.includes('limit="no_such_limit"')), problems.join('\n'));
});
