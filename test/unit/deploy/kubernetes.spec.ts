/**
 * deploy/kubernetes against the Kubernetes API schemas and the CLI they run:
 * - every document of every manifest (and the Secrets make-secrets.sh writes)
 *   validates against the Kubernetes OpenAPI schemas shipped in the
 *   `kubernetes-models` package (offline); a broken copy must fail;
 * - the StatefulSet's `serve` command: every flag a serve option, and for each
 *   pod (its name substituted for $(POD_NAME), --peers from the ConfigMap) the
 *   whole command passes resolveServeConfig with the pod name as member id;
 * - --peers names exactly the pods of `replicas` at their stable names on the
 *   headless Service (publishNotReadyAddresses) and its peer port, which is the
 *   container's --peer-listen port; probes GET /health over HTTPS on the
 *   gateway's port; TLS files and the API key come from the Secrets' mounts,
 *   data from the PVC; the PDB keeps a quorum; resources are requested; the
 *   preStop hands leadership over with CLI commands that exist;
 * - make-secrets.sh (run for real, with this repo's CLI) writes every file the
 *   pods mount, certificates naming each pod's member id and stable names, and
 *   no CA key.
 * kubernetes-models ignores unknown fields (a misspelt key is not caught by
 * the schemas); the checks below read every field the deployment relies on.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isAbsolute, join, relative } from 'node:path';
import { StatefulSet } from 'kubernetes-models/apps/v1/StatefulSet';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';
import { parseAllDocuments } from 'yaml';
import { SERVE_OPTIONS, SNAPSHOT_STORE_DIR, resolveServeConfig } from '../../../src/cli/config.js';
import { statusJson } from '../../../src/cli/client-commands.js';
import { jsonText } from '../../../src/cli/client-options.js';
import { Role, StatusResponse, roleToJSON } from '../../../src/gen/snapcoord/v1/cluster.js';
import { checkTlsFiles } from '../../../src/tls/index.js';
import { REPO_ROOT } from '../../harness/child.js';

const DIR = join(REPO_ROOT, 'deploy', 'kubernetes');

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Doc = any;

interface Validatable {
  validate(): void;
}

/** MODELS: the kinds the deployment uses, each with its schema-validating model. */
const MODELS: Record<string, (d: Doc) => Validatable> = {
  'v1/Service': (d) => new Service(d),
  'v1/ConfigMap': (d) => new ConfigMap(d),
  'v1/Secret': (d) => new Secret(d),
  'apps/v1/StatefulSet': (d) => new StatefulSet(d),
  'policy/v1/PodDisruptionBudget': (d) => new PodDisruptionBudget(d),
};

/** validateDoc validates one manifest document against its kind's schema; throws naming the kind and the schema's complaint. */
function validateDoc(d: Doc, where: string): void {
  const key = `${d?.apiVersion}/${d?.kind}`;
  const model = MODELS[key];
  assert.ok(model !== undefined, `${where}: ${key} is not a kind this test validates (${Object.keys(MODELS).join(', ')})`);
  try {
    model(d).validate();
  } catch (err) {
    throw new Error(`${where}: ${key} ${d?.metadata?.name}: ${(err as Error).message}`, { cause: err });
  }
}

function loadDocs(text: string, where: string): Doc[] {
  return parseAllDocuments(text).map((doc, i) => {
    assert.equal(doc.errors.length, 0, `${where} document ${i}: ${doc.errors.map((e) => e.message).join('; ')}`);
    return doc.toJS();
  });
}

function camel(flag: string): string {
  return flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

/** parseServeArgs turns the container's args (after `serve`) into commander-style flags, refusing unknown or repeated flags. */
function parseServeArgs(args: readonly string[]): Record<string, string | boolean> {
  assert.equal(args[0], 'serve', 'the container runs `serve` (the image ENTRYPOINT is the CLI)');
  const flags: Record<string, string | boolean> = {};
  for (let i = 1; i < args.length; i++) {
    const a = args[i] ?? '';
    assert.ok(a.startsWith('--'), `"${a}" is not a --flag`);
    const name = a.slice(2);
    const o = SERVE_OPTIONS.find((x) => x.flag === name);
    assert.ok(o !== undefined, `--${name} is not an option of serve`);
    assert.ok(!(camel(name) in flags), `--${name} given twice`);
    if (o.kind === 'bool') {
      flags[camel(name)] = true;
      continue;
    }
    const v = args[++i];
    assert.ok(v !== undefined && !v.startsWith('--'), `--${name} needs a value`);
    flags[camel(name)] = v;
  }
  return flags;
}

function portOf(hostPort: string): number {
  const m = /:(\d+)$/.exec(hostPort);
  assert.ok(m !== null, `${hostPort} has no port`);
  return Number(m[1]);
}

describe('deploy/kubernetes', () => {
  const files = readdirSync(DIR).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml');
  const docs = files.flatMap((f) => loadDocs(readFileSync(join(DIR, f), 'utf8'), f).map((d) => ({ file: f, d })));
  const ofKind = (kind: string): Doc[] => docs.filter((x) => x.d.kind === kind).map((x) => x.d);
  const sts = ofKind('StatefulSet')[0];
  const pod = sts?.spec?.template?.spec;
  const container = pod?.containers?.[0];
  const replicas: number = sts?.spec?.replicas;
  const podNames = Array.from({ length: replicas }, (_, i) => `snapcoord-${i}`);
  const headless = ofKind('Service').find((s) => s.metadata.name === sts?.spec?.serviceName);
  const configMap = ofKind('ConfigMap')[0];
  const env = (name: string): Doc => container?.env?.find((e: Doc) => e.name === name);
  const mountOf = (path: string): Doc => container?.volumeMounts?.find((m: Doc) => path === m.mountPath || path.startsWith(`${m.mountPath}/`));
  const volume = (name: string): Doc => pod?.volumes?.find((v: Doc) => v.name === name);
  const containerPort = (name: string): number => container?.ports?.find((p: Doc) => p.name === name)?.containerPort;

  /** configFor: the serve configuration the container resolves to in pod `name`. */
  const configFor = (name: string): ReturnType<typeof resolveServeConfig> => {
    const args = (container.args as string[]).map((a) => a.replaceAll('$(POD_NAME)', name));
    assert.ok(!args.some((a) => a.includes('$(')), 'every $(VAR) in the args is POD_NAME');
    const peersRef = env('SNAPCOORD_PEERS')?.valueFrom?.configMapKeyRef;
    const peers = configMap?.data?.[peersRef?.key];
    assert.equal(typeof peers, 'string', 'SNAPCOORD_PEERS comes from the ConfigMap');
    return resolveServeConfig(parseServeArgs(args), { SNAPCOORD_PEERS: peers }, () => 'a-key-read-from-the-secret-0123456789\n');
  };

  it('every manifest document validates against the Kubernetes schemas (kubernetes-models, offline)', () => {
    assert.deepEqual(new Set(docs.map((x) => x.d.kind)), new Set(['Service', 'ConfigMap', 'StatefulSet', 'PodDisruptionBudget']));
    for (const { file, d } of docs) validateDoc(d, file);
  });

  it('the schema check rejects a broken copy (a port as a word, a StatefulSet without a selector)', () => {
    const broken = structuredClone(sts);
    broken.spec.template.spec.containers[0].ports[0].containerPort = 'grpc';
    assert.throws(() => validateDoc(broken, 'broken'), /containerPort must be integer/);
    const noSelector = structuredClone(sts);
    delete noSelector.spec.selector;
    assert.throws(() => validateDoc(noSelector, 'broken'), /selector/);
  });

  it('kustomization.yaml lists exactly the manifests', () => {
    const k = loadDocs(readFileSync(join(DIR, 'kustomization.yaml'), 'utf8'), 'kustomization.yaml')[0];
    assert.deepEqual([...k.resources].sort(), [...files].sort());
  });

  it('the StatefulSet runs serve with valid options in every pod: its name as member id, --peers the pods at their stable names', () => {
    assert.ok(Number.isInteger(replicas) && replicas >= 3 && replicas % 2 === 1, 'an odd number of members, at least 3');
    assert.equal(env('POD_NAME')?.valueFrom?.fieldRef?.fieldPath, 'metadata.name');
    for (const name of podNames) {
      const cfg = configFor(name);
      assert.equal(cfg.id, name);
      assert.deepEqual(Object.keys(cfg.peers), podNames, '--peers names exactly the pods of replicas');
      for (const p of podNames) assert.equal(cfg.peers[p], `${p}.${sts.spec.serviceName}:${portOf(cfg.peerListen)}`);
      assert.equal(cfg.advertiseClient, `${name}.${sts.spec.serviceName}:${portOf(cfg.grpcAddress)}`);
      assert.equal(cfg.dataDir, '/data');
    }
  });

  it('the headless Service gives stable names before readiness, on the ports serve listens on', () => {
    assert.ok(headless !== undefined, `spec.serviceName ${sts.spec.serviceName} is a Service`);
    assert.equal(headless.spec.clusterIP, 'None');
    assert.equal(headless.spec.publishNotReadyAddresses, true, 'peers must resolve each other before any pod is ready (ready = a leader is known)');
    assert.equal(sts.spec.podManagementPolicy, 'Parallel', 'the first members start together (none is ready before a quorum elects a leader)');
    const cfg = configFor('snapcoord-0');
    assert.equal(containerPort('peer'), portOf(cfg.peerListen));
    assert.equal(containerPort('grpc'), portOf(cfg.grpcAddress));
    assert.equal(containerPort('https'), portOf(cfg.httpAddress));
    const peerPort = headless.spec.ports.find((p: Doc) => p.name === 'peer');
    assert.equal(peerPort?.port, portOf(cfg.peerListen));
    const labels = sts.spec.template.metadata.labels;
    for (const s of ofKind('Service')) for (const [k, v] of Object.entries(s.spec.selector)) assert.equal(labels[k], v, `${s.metadata.name} selects the pods`);
    for (const [k, v] of Object.entries(sts.spec.selector.matchLabels)) assert.equal(labels[k], v);
    const clients = ofKind('Service').find((s) => s.metadata.name !== headless.metadata.name);
    assert.deepEqual(new Set(clients.spec.ports.map((p: Doc) => p.targetPort)), new Set(['grpc', 'https']), 'clients reach the gRPC API and the gateway, not the peer plane');
  });

  it('TLS on every plane from the snapcoord-tls Secret, the API key from snapcoord-api-key, data on a PVC', () => {
    const cfg = configFor('snapcoord-1');
    assert.ok(cfg.peerTls !== null && cfg.clientTls !== null && cfg.httpTls !== null, 'mutual TLS between peers, TLS on the client API and the gateway');
    assert.equal(cfg.insecurePlaintext, false);
    assert.equal(cfg.insecureNoAuth, false);
    assert.equal(cfg.apiKey, 'a-key-read-from-the-secret-0123456789');
    for (const f of [cfg.peerTls.certFile, cfg.peerTls.keyFile, cfg.peerTls.caFile, cfg.clientTls.certFile, cfg.clientTls.keyFile, cfg.httpTls.certFile, cfg.httpTls.keyFile]) {
      const m = mountOf(f);
      assert.ok(m !== undefined && m.readOnly === true, `${f} is on a read-only mount`);
      assert.equal(volume(m.name)?.secret?.secretName, 'snapcoord-tls', `${f} comes from the snapcoord-tls Secret`);
    }
    assert.equal(cfg.peerTls.certFile, '/tls/snapcoord-1.pem', 'each pod presents its own certificate');
    const keyMount = mountOf(cfg.apiKeyFile);
    assert.equal(volume(keyMount?.name)?.secret?.secretName, 'snapcoord-api-key');
    assert.ok(!container.args.includes('--api-key'), 'no key on the command line');
    const dataMount = mountOf(cfg.dataDir);
    assert.ok(sts.spec.volumeClaimTemplates.some((t: Doc) => t.metadata.name === dataMount?.name), 'the data dir is a PersistentVolumeClaim');
    assert.ok(mountOf(cfg.snapshotDir)?.name === dataMount.name, 'task snapshots land on the PVC');
    const store = join(cfg.dataDir, SNAPSHOT_STORE_DIR);
    const overlaps = (a: string, b: string): boolean => {
      const r = relative(a, b);
      return r === '' || (!r.startsWith('..') && !isAbsolute(r));
    };
    for (const d of [...cfg.snapshotRoots, cfg.snapshotDir]) {
      assert.ok(!overlaps(d, store) && !overlaps(store, d), `${d} overlaps the node's own snapshot store ${store} (exports would land among its files)`);
    }
    for (const name of ['tls', 'keys']) assert.equal(volume(name).secret.defaultMode, 0o440);
  });

  it('readiness and liveness probe GET /health over HTTPS on the gateway port; resources are requested', () => {
    for (const probe of ['readinessProbe', 'livenessProbe', 'startupProbe']) {
      const p = container[probe];
      assert.equal(p?.httpGet?.path, '/health', `${probe} asks /health`);
      assert.equal(p.httpGet.scheme, 'HTTPS', `${probe}: the gateway serves HTTPS (--http-cert)`);
      assert.equal(containerPort(p.httpGet.port), portOf(configFor('snapcoord-0').httpAddress), `${probe}: the gateway's port`);
    }
    // Liveness tolerates elections and short partitions (/health is 503 while no leader is known).
    const l = container.livenessProbe;
    assert.ok(l.periodSeconds * l.failureThreshold >= 60, 'liveness waits at least a minute without a leader before a restart');
    assert.ok(container.resources?.requests?.cpu !== undefined && container.resources?.requests?.memory !== undefined);
    assert.ok(container.resources?.limits?.memory !== undefined);
  });

  it('the PodDisruptionBudget keeps a quorum of the members', () => {
    const pdb = ofKind('PodDisruptionBudget')[0];
    const labels = sts.spec.template.metadata.labels;
    for (const [k, v] of Object.entries(pdb.spec.selector.matchLabels)) assert.equal(labels[k], v);
    const quorum = Math.floor(replicas / 2) + 1;
    const keeps = pdb.spec.maxUnavailable !== undefined ? replicas - pdb.spec.maxUnavailable : pdb.spec.minAvailable;
    assert.ok(Number.isInteger(keeps) && keeps >= quorum, `the PDB keeps ${keeps} of ${replicas}, quorum ${quorum}`);
  });

  it('preStop hands leadership over (only from the leader) with CLI commands that exist, within the grace period', () => {
    const cmd = container.lifecycle?.preStop?.exec?.command as string[];
    assert.ok(Array.isArray(cmd));
    const script = cmd.join(' ');
    assert.match(script, /cluster status --raw --json \|/);
    // It recognises the leader in what `cluster status --raw --json` prints (jsonText(statusJson(…)), indented JSON),
    // and only the leader: the test that follows the pipe, run by sh on that output (exit 0: hand over).
    const test = /cluster status --raw --json \| ([^;]+);/.exec(script)?.[1] ?? '';
    assert.match(test, /^grep /);
    const leads = (role: Role): boolean => {
      const st = StatusResponse.fromPartial({ id: 'snapcoord-0', role, term: 7n, leaderId: role === Role.ROLE_LEADER ? 'snapcoord-0' : 'snapcoord-1', commitIndex: 42n, appliedIndex: 42n });
      const r = spawnSync('sh', ['-c', test], { input: jsonText(statusJson(st)), encoding: 'utf8' });
      assert.ok(r.status === 0 || r.status === 1, `${test}: exit ${r.status} ${r.stderr}`);
      return r.status === 0;
    };
    assert.equal(leads(Role.ROLE_LEADER), true, `\`${test}\` finds ${roleToJSON(Role.ROLE_LEADER)} in \`cluster status --raw --json\``);
    for (const role of [Role.ROLE_FOLLOWER, Role.ROLE_CANDIDATE, Role.ROLE_PRE_CANDIDATE]) assert.equal(leads(role), false, roleToJSON(role));
    assert.match(script, /cluster transfer-leader/);
    assert.match(script, /SNAPCOORD_CACERT=\/tls\/ca\.pem/);
    assert.match(script, /\/keys\/api-key/);
    // The CLI has those commands and flags (the same program the image runs).
    const help = execFileSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'cluster', 'status', '--help'], { cwd: REPO_ROOT, encoding: 'utf8' });
    assert.match(help, /--raw/);
    assert.match(help, /--json/);
    assert.ok(sts.spec.template.spec.terminationGracePeriodSeconds >= 15, 'room for preStop, the handoff (2 s) and the stop');
  });

  it('make-secrets.sh writes valid Secrets holding every file the pods mount, certificates naming each pod, no CA key', function () {
    this.timeout(180_000);
    const work = mkdtempSync(join(tmpdir(), 'snapcoord-k8s-'));
    try {
      const tlsDir = join(work, 'tls');
      const out = execFileSync('sh', [join(DIR, 'make-secrets.sh'), String(replicas), 'prod'], {
        cwd: REPO_ROOT,
        encoding: 'utf8',
        env: { ...process.env, SNAPCOORD: `${process.execPath} --import tsx src/cli/main.ts`, SNAPCOORD_TLS_DIR: tlsDir },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const secrets = loadDocs(out, 'make-secrets.sh output');
      for (const s of secrets) validateDoc(s, 'make-secrets.sh output');
      const tls = secrets.find((s) => s.metadata.name === volume('tls').secret.secretName);
      const keys = secrets.find((s) => s.metadata.name === volume('keys').secret.secretName);
      assert.ok(tls !== undefined && keys !== undefined);
      assert.ok(!Object.keys(tls.data).some((k) => k.includes('ca-key')), 'no pod gets the CA key');
      const got = join(work, 'got');
      execFileSync('mkdir', ['-p', got]);
      for (const [k, v] of Object.entries(tls.data as Record<string, string>)) writeFileSync(join(got, k), Buffer.from(v, 'base64'));
      for (const name of podNames) {
        const cfg = configFor(name);
        assert.ok(cfg.peerTls !== null);
        for (const f of [cfg.peerTls.certFile, cfg.peerTls.keyFile, cfg.peerTls.caFile]) assert.ok(f.replace('/tls/', '') in tls.data, `${f} is in the Secret`);
        const info = checkTlsFiles({ certFile: join(got, `${name}.pem`), keyFile: join(got, `${name}-key.pem`), caFile: join(got, 'ca.pem') });
        assert.equal(info.memberId, name);
        const host = (a: string): string => a.replace(/:\d+$/, '');
        assert.ok(info.identities.includes(`DNS:${host(cfg.peers[name] ?? '')}`), `${name}'s certificate names its peer address`);
        assert.ok(info.identities.includes(`DNS:${host(cfg.advertiseClient)}`), `${name}'s certificate names its client address`);
        assert.ok(info.identities.includes('IP:127.0.0.1'), 'the preStop CLI call reaches 127.0.0.1');
      }
      const key = Buffer.from(keys.data['api-key'] ?? '', 'base64').toString();
      assert.match(key, /^[0-9a-f]{48}$/);
      assert.equal(configFor('snapcoord-0').apiKeyFile.replace(/^\/keys\//, ''), 'api-key');
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
});
