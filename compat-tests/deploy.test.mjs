// The deployment files, validated as far as this machine allows (no Docker engine runs here;
// the image itself is built elsewhere): the compose file parses with every service the local
// trial needs, the compose nginx configuration passes `nginx -t`, and the Dockerfile copies every
// workspace member it must compile.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const read = (file) => readFileSync(path.join(root, file), 'utf8');

test('docker-compose.yml parses and wires Redis, DynamoDB, two nodes and nginx', () => {
  const config = execFileSync('docker-compose', ['-f', path.join(root, 'docker-compose.yml'), 'config'], {
    env: { ...process.env, TWINE_API_KEY: 'k' },
  }).toString();
  for (const service of ['redis:', 'dynamodb:', 'twine-1:', 'twine-2:', 'nginx:']) {
    assert.ok(config.includes(`\n  ${service}`), `service ${service}`);
  }
  for (const setting of ['REDIS_URL: redis://redis:6379', 'TWINE_DYNAMODB_TABLE: twine_rooms', 'AWS_ENDPOINT_URL_DYNAMODB: http://dynamodb:8000']) {
    assert.ok(config.includes(setting), setting);
  }
});

test('the compose nginx configuration is valid nginx', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'twine-nginx-t-'));
  mkdirSync(path.join(dir, 'temp'));
  // Compose's service names do not resolve here; the rules are what is checked.
  const site = read('deploy/nginx.conf').replaceAll(/twine-\d:3005/g, '127.0.0.1:3005').replace('listen 80;', 'listen 127.0.0.1:1;');
  writeFileSync(
    path.join(dir, 'nginx.conf'),
    `pid ${dir}/nginx.pid; error_log ${dir}/error.log; events {} http { client_body_temp_path ${dir}/temp; ${site} }`,
  );
  execFileSync('nginx', ['-t', '-p', dir, '-c', path.join(dir, 'nginx.conf')], { stdio: 'pipe' });
});

test('the Dockerfile copies every workspace member and runs as a non-root user with a health check', () => {
  const dockerfile = read('Dockerfile');
  const members = read('Cargo.toml').match(/members = \[([^\]]*)\]/)[1].match(/"([^"]+)"/g).map((m) => m.slice(1, -1));
  for (const member of members.filter((m) => m !== '.')) {
    const top = member.split('/')[0];
    assert.match(dockerfile, new RegExp(`^COPY ${top} \\./${top}$`, 'm'), `COPY ${top}`);
  }
  assert.match(dockerfile, /^USER twine$/m);
  assert.match(dockerfile, /^HEALTHCHECK /m);
  assert.match(dockerfile, /^EXPOSE 3005$/m);
});
