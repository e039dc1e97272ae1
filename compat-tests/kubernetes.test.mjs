// The Kubernetes manifests in deploy/kubernetes/, checked without a cluster: every one is valid
// against the API schemas (kubernetes-validate, strict, so a misspelt field fails too), and the
// numbers a rolling deploy depends on agree with each other and with the server: the grace period
// outlasts the drain, the readiness probe takes the pod out within the drain delay, one pod drains
// at a time, the ports and selectors line up, the drain settings are the server's defaults, and
// every TWINE_* variable set is one the server knows (it refuses others). The autoscaler scales
// that Deployment on CPU and on a pods metric that the prometheus-adapter rule serves from a gauge
// the server really exports, never below what the PodDisruptionBudget needs, and scales down no
// faster than pods drain.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startTwine } from '../js-fixtures/server.mjs';

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
const hpa = one('HorizontalPodAutoscaler');
const adapterConfig = one('ConfigMap');
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
const parseYaml = (text) =>
  JSON.parse(execFileSync('python3', ['-c', 'import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))'], { input: text }).toString());
/** A Kubernetes quantity as a number: "2000", "2k", "1500m". */
const quantity = (q) => {
  const m = /^(\d+(?:\.\d+)?)(m|k|M|G)?$/.exec(String(q));
  assert.ok(m, `quantity ${q}`);
  return Number(m[1]) * (m[2] ? { m: 0.001, k: 1e3, M: 1e6, G: 1e9 }[m[2]] : 1);
};
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

// ---- autoscaling ---------------------------------------------------------------------------------

// The adapter's rule for the HPA's pods metric, and the name it serves it under (prometheus-adapter
// expands `as` from the `matches` groups of the series name; empty means the whole name).
const rules = parseYaml(adapterConfig.data['config.yaml']).rules;
const seriesName = (rule) => {
  const m = /^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{/.exec(rule.seriesQuery) ?? /__name__\s*=\s*"([^"]+)"/.exec(rule.seriesQuery);
  assert.ok(m, `one metric named in seriesQuery ${rule.seriesQuery}`);
  return m[1];
};
const exposedName = (rule) => {
  const series = seriesName(rule);
  const m = new RegExp(rule.name?.matches || '^(.*)$').exec(series);
  assert.ok(m, `name.matches ${rule.name?.matches} matches ${series}`);
  return (rule.name?.as || (m.length > 1 ? '$1' : '$0')).replace(/\$(\d+)/g, (_, i) => m[i]);
};
const drain = drainDelay + drainPeriod;
const podsMetrics = hpa.spec.metrics.filter((m) => m.type === 'Pods');

test('the HorizontalPodAutoscaler scales the Deployment, which leaves its replicas to it and requests CPU', () => {
  assert.equal(hpa.apiVersion, 'autoscaling/v2');
  assert.deepEqual(hpa.spec.scaleTargetRef, { apiVersion: deployment.apiVersion, kind: 'Deployment', name: deployment.metadata.name });
  assert.equal(hpa.metadata.namespace, deployment.metadata.namespace, 'same namespace');
  // A replicas value would be applied over the autoscaler's at every `kubectl apply`.
  assert.equal(deployment.spec.replicas, undefined, 'the Deployment sets no replicas');
  // CPU utilisation is a share of the request.
  assert.ok(quantity(container.resources.requests.cpu) > 0, 'CPU request');
  assert.ok(hpa.spec.maxReplicas > hpa.spec.minReplicas, `maxReplicas ${hpa.spec.maxReplicas} > minReplicas ${hpa.spec.minReplicas}`);
});

test('at its fewest pods the fleet can still lose one to an eviction and keep serving', () => {
  const min = hpa.spec.minReplicas;
  assert.ok(min >= 2, `minReplicas ${min} >= 2`);
  // Pods the budget keeps up at minReplicas; percentages round up, as Kubernetes rounds them.
  const count = (v) => (typeof v === 'string' && v.endsWith('%') ? Math.ceil((min * parseInt(v, 10)) / 100) : v);
  const kept = pdb.spec.minAvailable !== undefined ? count(pdb.spec.minAvailable) : min - count(pdb.spec.maxUnavailable);
  assert.ok(kept >= 1, `the PodDisruptionBudget keeps ${kept} of ${min} pods up`);
  assert.ok(kept < min, `the PodDisruptionBudget lets one of ${min} pods be evicted (it keeps ${kept})`);
});

test('it scales on CPU utilisation and on sockets per pod, below a pod\'s capacity', () => {
  const cpu = hpa.spec.metrics.find((m) => m.type === 'Resource' && m.resource.name === 'cpu');
  assert.ok(cpu, 'a CPU metric');
  assert.equal(cpu.resource.target.type, 'Utilization');
  assert.ok(cpu.resource.target.averageUtilization > 0 && cpu.resource.target.averageUtilization < 100, 'CPU target below 100 %');
  assert.equal(podsMetrics.length, 1, 'one Pods metric');
  const target = podsMetrics[0].pods.target;
  assert.equal(target.type, 'AverageValue');
  const sockets = quantity(target.averageValue);
  assert.ok(sockets >= 1, `sockets per pod ${target.averageValue}`);
  // When the Deployment states a pod's capacity (TWINE_MAX_SOCKETS), the target stays below it.
  if (env.TWINE_MAX_SOCKETS) {
    assert.ok(sockets < Number(env.TWINE_MAX_SOCKETS.value), `target ${sockets} < TWINE_MAX_SOCKETS ${env.TWINE_MAX_SOCKETS.value}`);
  }
});

test('the pods metric is the one the prometheus-adapter rule serves, per pod', () => {
  assert.ok(adapterConfig.data['config.yaml'], 'the ConfigMap holds the adapter\'s config.yaml');
  const name = podsMetrics[0].pods.metric.name;
  const serving = rules.filter((r) => exposedName(r) === name);
  assert.equal(serving.length, 1, `one rule serves ${name} (the rules serve ${rules.map(exposedName).join(', ')})`);
  const [rule] = serving;
  // Tied to pods, so the HPA can average it over the Deployment's pods.
  const overrides = rule.resources.overrides ?? {};
  const template = rule.resources.template;
  assert.ok(overrides.pod?.resource === 'pod' || template === '<<.Resource>>', 'the pod label is the pod resource');
  assert.ok(overrides.namespace?.resource === 'namespace' || template === '<<.Resource>>', 'the namespace label is the namespace resource');
  assert.match(rule.seriesQuery, /pod!=""/);
  assert.match(rule.metricsQuery, /<<\.Series>>\{<<\.LabelMatchers>>\}/);
  assert.match(rule.metricsQuery, /by \(<<\.GroupBy>>\)/);
  assert.doesNotMatch(rule.metricsQuery, /rate\(/, 'a gauge is taken as it is');
});

test('the metric the adapter rule reads is a gauge the server exports', async () => {
  const series = rules.map(seriesName);
  const node = await startTwine();
  try {
    const res = await fetch(`${node.url}/metrics`);
    assert.equal(res.status, 200);
    const text = await res.text();
    for (const name of series) {
      assert.match(text, new RegExp(`^# TYPE ${name} gauge$`, 'm'), `${name} is a gauge in /metrics`);
      assert.match(text, new RegExp(`^${name} \\d+$`, 'm'), `${name} has a sample without labels`);
    }
  } finally {
    await node.stop('SIGKILL');
  }
});

test('it scales up at once and down slowly, one pod per drain', () => {
  const { scaleUp = {}, scaleDown = {} } = hpa.spec.behavior;
  // Every pod removed drains its sockets onto the others: a dip in demand shorter than a drain
  // must not remove one.
  assert.ok(
    scaleDown.stabilizationWindowSeconds >= drain,
    `scale-down stabilization ${scaleDown.stabilizationWindowSeconds} s >= drain delay + drain period ${drain} s`,
  );
  assert.ok((scaleUp.stabilizationWindowSeconds ?? 0) < scaleDown.stabilizationWindowSeconds, 'scale-up reacts sooner than scale-down');
  assert.notEqual(scaleUp.selectPolicy, 'Disabled');
  // At most one pod per drain, so drains do not overlap (as in a rolling deploy): with
  // selectPolicy Min one such policy binds, otherwise every policy must be one.
  const onePerDrain = (p) => p.type === 'Pods' && p.value === 1 && p.periodSeconds >= drain;
  assert.ok(scaleDown.policies?.length, 'scale-down policies');
  assert.ok(
    scaleDown.selectPolicy === 'Min' ? scaleDown.policies.some(onePerDrain) : scaleDown.policies.every(onePerDrain),
    `one pod per ${drain} s at most: ${JSON.stringify(scaleDown)}`,
  );
});

test('the Prometheus scrape annotations name the container\'s port and /metrics', () => {
  const annotations = deployment.spec.template.metadata.annotations ?? {};
  if (annotations['prometheus.io/scrape'] !== 'true') return;
  assert.equal(Number(annotations['prometheus.io/port']), Number(env.PORT.value));
  assert.equal(annotations['prometheus.io/path'] ?? '/metrics', '/metrics');
});
