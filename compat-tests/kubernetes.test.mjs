// The Kubernetes manifests in deploy/kubernetes/, checked without a cluster: every one is valid
// against the API schemas (kubernetes-validate, strict, so a misspelt field fails too), and the
// numbers a rolling deploy depends on agree with each other and with the server: the grace period
// outlasts the drain, the readiness probe takes the pod out within the drain delay, one pod drains
// at a time, the ports and selectors line up, the drain settings are the server's defaults, and
// every TWINE_* variable set is one the server knows (it refuses others).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const dir = path.join(root, 'deploy/kubernetes');
const twineBin = process.env.TWINE_BIN ?? path.join(root, 'target/release/twine');

const manifests = readdirSync(dir, { recursive: true })
  .filter((f) => /\.ya?ml$/.test(f))
  .map((f) => path.join(dir, f));

// The oldest and the newest Kubernetes versions whose schemas kubernetes-validate 1.37.0 bundles.
const kubernetesVersions = ['1.25.0', '1.37.0'];
const validate = (files, version) => {
  const run = spawnSync('python3', ['-m', 'kubernetes_validate', '--strict', '--quiet', '-k', version, ...files]);
  if (run.status !== 0) throw new Error(`Kubernetes ${version}: ${run.stdout}${run.stderr}`);
};

// PyYAML comes with kubernetes-validate.
const docs = JSON.parse(
  execFileSync('python3', [
    '-c',
    'import json, sys, yaml; print(json.dumps([d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d]))',
    ...manifests,
  ]).toString(),
);
const one = (kind) => {
  const found = docs.filter((d) => d.kind === kind);
  assert.equal(found.length, 1, `one ${kind}`);
  return found[0];
};
const deployment = one('Deployment');
const service = one('Service');
const pdb = one('PodDisruptionBudget');
const pod = deployment.spec.template.spec;
const container = pod.containers[0];
const env = Object.fromEntries(container.env.map((e) => [e.name, e]));

const seconds = (duration) => {
  const m = /^(\d+)(ms|s|m|h|d)$/.exec(duration);
  assert.ok(m, `duration ${duration}`);
  return Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 }[m[2]];
};
const drainDelay = seconds(env.TWINE_DRAIN_DELAY.value);
const drainPeriod = seconds(env.TWINE_DRAIN_PERIOD.value);
const containerPort = (port) =>
  typeof port === 'number' ? port : container.ports.find((p) => p.name === port)?.containerPort;
const selects = (selector, labels) => Object.entries(selector).every(([k, v]) => labels[k] === v);

// Each option of `twine --help` by its environment variable, with its default. Run with an empty
// environment: clap shows a variable's value when it is set, and the server refuses unknown ones.
let helpOptions;
const options = () => {
  helpOptions ??= new Map(
    execFileSync(twineBin, ['--help'], { env: { PATH: process.env.PATH } })
      .toString()
      .split(/\n(?= {1,6}-)/)
      .flatMap((block) => {
        const name = /\[env: ([A-Z0-9_]+)[=\]]/.exec(block)?.[1];
        return name ? [[name, /\[default: ([^\]]+)\]/.exec(block)?.[1]]] : [];
      }),
  );
  return helpOptions;
};

test('every manifest is valid against the Kubernetes API schemas', () => {
  assert.ok(manifests.length >= 4, `manifests: ${manifests.join(', ')}`);
  for (const version of kubernetesVersions) validate(manifests, version);
  // The validator itself rejects what it should: a misspelt field.
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'twine-k8s-'));
  try {
    const broken = path.join(tmp, 'deployment.yaml');
    writeFileSync(broken, readFileSync(path.join(dir, 'deployment.yaml'), 'utf8').replace('enableServiceLinks:', 'enableServiceLink:'));
    assert.throws(() => validate([broken], kubernetesVersions[1]), /enableServiceLink' was unexpected/);
  } finally {
    rmSync(tmp, { recursive: true });
  }
});

test('the grace period outlasts the drain, readiness drops the pod within the drain delay, drains do not overlap', () => {
  // Acknowledgements are flushed and the process exits within 5 s of the drain's end.
  assert.ok(
    pod.terminationGracePeriodSeconds > drainDelay + drainPeriod + 5,
    `terminationGracePeriodSeconds ${pod.terminationGracePeriodSeconds} > ${drainDelay} + ${drainPeriod} + 5`,
  );
  const readiness = container.readinessProbe;
  assert.equal(readiness.httpGet.path, '/ready');
  assert.equal(container.livenessProbe.httpGet.path, '/');
  const failureThreshold = readiness.failureThreshold ?? 3;
  assert.ok(
    (readiness.periodSeconds ?? 10) * failureThreshold < drainDelay,
    `readiness ${readiness.periodSeconds} s × ${failureThreshold} < drain delay ${drainDelay} s`,
  );
  assert.deepEqual(deployment.spec.strategy.rollingUpdate, { maxSurge: 1, maxUnavailable: 0 });
  // One pod drains at a time.
  assert.ok(deployment.spec.minReadySeconds >= drainDelay + drainPeriod, `minReadySeconds ${deployment.spec.minReadySeconds}`);
});

test('the container port, PORT, the probes and the Service target agree', () => {
  const port = Number(env.PORT.value);
  assert.equal(container.ports.length, 1);
  assert.equal(container.ports[0].containerPort, port);
  assert.equal(containerPort(service.spec.ports[0].targetPort), port, 'Service targetPort');
  assert.equal(containerPort(container.readinessProbe.httpGet.port), port, 'readiness port');
  assert.equal(containerPort(container.livenessProbe.httpGet.port), port, 'liveness port');
});

test('the Deployment, the Service and the PodDisruptionBudget select the same pods', () => {
  const labels = deployment.spec.template.metadata.labels;
  assert.ok(selects(deployment.spec.selector.matchLabels, labels), 'Deployment selector');
  assert.ok(selects(service.spec.selector, labels), 'Service selector');
  assert.ok(selects(pdb.spec.selector.matchLabels, labels), 'PodDisruptionBudget selector');
  assert.equal(pdb.spec.selector.matchExpressions, undefined);
});

test('the Secret example has every key the Deployment reads, and no Kubernetes TWINE_* links', () => {
  const secret = one('Secret');
  for (const { valueFrom } of container.env.filter((e) => e.valueFrom)) {
    assert.equal(valueFrom.secretKeyRef.name, secret.metadata.name);
    assert.ok(valueFrom.secretKeyRef.key in secret.stringData, `key ${valueFrom.secretKeyRef.key}`);
  }
  assert.ok(env.TWINE_API_KEY.valueFrom.secretKeyRef, 'TWINE_API_KEY from the Secret');
  assert.ok(env.REDIS_URL.valueFrom.secretKeyRef, 'REDIS_URL from the Secret');
  assert.equal(pod.enableServiceLinks, false);
});

test('every TWINE_* variable the manifests set is an option of the server', () => {
  const known = options();
  const unknown = Object.keys(env).filter((name) => name.startsWith('TWINE_') && !known.has(name));
  assert.deepEqual(unknown, [], 'not in `twine --help`');
});

test('the drain delay and period set are the server defaults', () => {
  const known = options();
  for (const name of ['TWINE_DRAIN_DELAY', 'TWINE_DRAIN_PERIOD']) {
    assert.ok(known.get(name), `${name} with a default in \`twine --help\``);
    assert.equal(seconds(env[name].value), seconds(known.get(name)), name);
  }
});
