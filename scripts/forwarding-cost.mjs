// What forwarding costs: a long-polling session made on node A, its polls sent to A itself
// ("direct") or to node B, which forwards them to A ("forwarded"). Each round publishes one
// message and times its arrival in the waiting poll; node CPU is read from /proc over the run.
// Usage: node scripts/forwarding-cost.mjs [rounds]   (needs redis-server and a release build)
import { readFileSync } from 'node:fs';
import { startTwine } from '../js-fixtures/server.mjs';
import { startRedis } from '../js-fixtures/services.mjs';
import { publish, sleep } from '../js-fixtures/clients.mjs';

const rounds = Number(process.argv[2] ?? 1000);
const redis = await startRedis();
const a = await startTwine({ args: ['--redis-url', redis.url] });
const b = await startTwine({ args: ['--redis-url', redis.url] });
await sleep(2500);

const ticks = (node) => {
  const fields = readFileSync(`/proc/${node.proc.pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return Number(fields[11]) + Number(fields[12]);
};
const hz = 100;

async function session(target) {
  const open = await (await fetch(`${a.url}/socket.io/?EIO=4&transport=polling`)).text();
  const sid = JSON.parse(open.slice(1)).sid;
  const url = `${target.url}/socket.io/?EIO=4&transport=polling&sid=${sid}`;
  const post = (body) => fetch(url, { method: 'POST', body, headers: { 'Content-Type': 'text/plain;charset=UTF-8' } }).then((r) => r.text());
  await post('40');
  await (await fetch(url)).text();
  await post('42["subscribe","cost"]');
  await (await fetch(url)).text();
  return { url, post };
}

async function run(name, target) {
  const s = await session(target);
  const times = [];
  const before = [ticks(a), ticks(b)];
  for (let i = 0; i < rounds; i++) {
    const poll = fetch(s.url).then((r) => r.text());
    await sleep(1);
    const t0 = performance.now();
    await publish(a, 'cost', { i });
    let body = await poll;
    while (!body.includes('"message"')) body = await (await fetch(s.url)).text();
    times.push(performance.now() - t0);
  }
  const cpu = [ticks(a) - before[0], ticks(b) - before[1]].map((t) => ((t / hz) * 1e6) / rounds);
  times.sort((x, y) => x - y);
  const q = (p) => times[Math.floor(p * (times.length - 1))].toFixed(2);
  console.log(`${name}: publish→poll answered median ${q(0.5)} ms, p99 ${q(0.99)} ms; CPU per round: node A ${cpu[0].toFixed(0)} µs, node B ${cpu[1].toFixed(0)} µs`);
}

try {
  await run('direct   ', a);
  await run('forwarded', b);
  await run('direct   ', a);
  await run('forwarded', b);
} finally {
  await a.stop();
  await b.stop();
  await redis.stop();
}
