/**
 * docker-compose.yml and the Dockerfile against the CLI they run: every flag
 * in a node service's `command` is a `serve` option (SERVE_OPTIONS) and the
 * whole command passes resolveServeConfig; --peers names exactly the node
 * services, at their service names and PEER ports (the peer plane, apart from
 * the client gRPC port, not published); TLS on every plane with certificates a
 * one-shot `certs` service makes with `snapcoord certs` into a volume the nodes
 * mount read-only; published ports, volumes, data and snapshot dirs, the
 * health check and the image's EXPOSE / ENTRYPOINT line up; the image starts
 * node with the V8 flags and malloc environment of src/cli/node-runtime.ts.
 * The file is read with a tiny parser for its YAML subset (mini-yaml.ts); when
 * a full YAML parser happens to be installed, the two must agree.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { isAbsolute, join, relative } from 'node:path';
import { SERVE_OPTIONS, SNAPSHOT_STORE_DIR, resolveServeConfig, type ServeConfig } from '../../../src/cli/config.js';
import { envName } from '../../../src/cli/config-env.js';
import { NODE_MALLOC_ENV, NODE_V8_FLAGS } from '../../../src/cli/node-runtime.js';
import { REPO_ROOT } from '../../harness/child.js';
import { parseMiniYaml, type Yaml } from './mini-yaml.js';

type YamlMap = { [key: string]: Yaml };

function isMap(v: Yaml | undefined): v is YamlMap {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function map(v: Yaml | undefined, what: string): YamlMap {
  assert.ok(isMap(v), `${what} must be a mapping`);
  return v;
}

function str(v: Yaml | undefined, what: string): string {
  assert.equal(typeof v, 'string', `${what} must be a string`);
  return v as string;
}

function strList(v: Yaml | undefined, what: string): string[] {
  assert.ok(Array.isArray(v) && v.every((x) => typeof x === 'string'), `${what} must be a list of strings`);
  return v as string[];
}

function camel(flag: string): string {
  return flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

/** parseServeCommand turns `serve --flag value ...` into commander-style camelCase flags, refusing unknown flags. */
function parseServeCommand(command: string, where: string): Record<string, string | boolean> {
  const argv = command.trim().split(/\s+/);
  assert.equal(argv[0], 'serve', `${where}: command must start with "serve"`);
  const flags: Record<string, string | boolean> = {};
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i] ?? '';
    assert.ok(a.startsWith('--'), `${where}: "${a}" is not a --flag`);
    const name = a.slice(2);
    const o = SERVE_OPTIONS.find((x) => x.flag === name);
    assert.ok(o !== undefined, `${where}: --${name} is not an option of serve (known: ${SERVE_OPTIONS.map((x) => x.flag).join(', ')})`);
    assert.ok(!(camel(name) in flags), `${where}: --${name} given twice`);
    if (o.kind === 'bool') {
      flags[camel(name)] = true;
      continue;
    }
    const v = argv[++i];
    assert.ok(v !== undefined && !v.startsWith('--'), `${where}: --${name} needs a value`);
    flags[camel(name)] = v;
  }
  return flags;
}

function portOf(hostPort: string): number {
  const m = /:(\d+)$/.exec(hostPort);
  assert.ok(m !== null, `${hostPort} has no port`);
  return Number(m[1]);
}

function inside(dir: string, path: string): boolean {
  const r = relative(dir, path);
  return r === '' || (!r.startsWith('..') && !isAbsolute(r));
}

describe('docker-compose.yml and Dockerfile', () => {
  const source = readFileSync(join(REPO_ROOT, 'docker-compose.yml'), 'utf8');
  const doc = map(parseMiniYaml(source), 'the file');
  const services = map(doc['services'], 'services');
  /** names: the node services, those whose command is `serve ...`; the others (certs) only prepare. */
  const names = Object.keys(services).filter((n) => {
    const c = map(services[n], `services.${n}`)['command'];
    return typeof c === 'string' && /^\s*serve\b/.test(c);
  });
  const helpers = Object.keys(services).filter((n) => !names.includes(n));
  const dockerfile = readFileSync(join(REPO_ROOT, 'Dockerfile'), 'utf8');

  interface Svc {
    readonly name: string;
    readonly def: YamlMap;
    readonly cfg: ServeConfig;
  }
  let svcs: Svc[] = [];

  // Every other test needs the commands parsed: a bad flag fails here, by name.
  before(() => {
    svcs = names.map((name) => {
      const def = map(services[name], `services.${name}`);
      const flags = parseServeCommand(str(def['command'], `${name}.command`), `services.${name}.command`);
      const env = Object.fromEntries(Object.keys(map(def['environment'] ?? {}, `${name}.environment`)).map((k) => [k, 'compose-test-value']));
      return { name, def, cfg: resolveServeConfig(flags, env) };
    });
  });

  it('agrees with a full YAML parser when one is installed', async function () {
    const spec = 'js-yaml';
    let mod: { load?: (s: string) => unknown } | null;
    try {
      mod = (await import(spec)) as { load?: (s: string) => unknown };
    } catch {
      mod = null;
    }
    if (mod === null || typeof mod.load !== 'function') this.skip();
    // The mini parser keeps every scalar a string (retries: 6 -> "6").
    const asStrings = (v: unknown): unknown =>
      typeof v === 'number' || typeof v === 'boolean'
        ? String(v)
        : Array.isArray(v)
          ? v.map(asStrings)
          : typeof v === 'object' && v !== null
            ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, asStrings(x)]))
            : v;
    assert.deepEqual(parseMiniYaml(source), asStrings(mod.load(source)));
  });

  it('runs three node services n1 n2 n3 and a certs service, each built from the Dockerfile', () => {
    assert.deepEqual(names, ['n1', 'n2', 'n3']);
    assert.deepEqual(helpers, ['certs']);
    for (const name of [...names, ...helpers]) {
      const build = map(services[name], name)['build'];
      const context = isMap(build) ? str(build['context'], `${name}.build.context`) : str(build, `${name}.build`);
      assert.ok(existsSync(join(REPO_ROOT, context, 'Dockerfile')), `${name}: no Dockerfile in ${context}`);
    }
  });

  /** mountsOf: a service's volume mounts, "name:target[:mode]". */
  const mountsOf = (def: YamlMap, what: string): { name: string; target: string; mode: string }[] =>
    strList(def['volumes'], `${what}.volumes`).map((v) => {
      const [name = '', target = '', mode = 'rw'] = v.split(':');
      return { name, target, mode };
    });

  it('TLS on every plane, never --insecure-plaintext: the certs service makes the CA and each node\'s certificate; a node mounts read-only only its own', () => {
    const certs = map(services['certs'], 'services.certs');
    const script = strList(certs['command'], 'certs.command').join(' ');
    const certsMounts = mountsOf(certs, 'certs');
    for (const m of certsMounts) assert.equal(m.mode, 'rw', `certs writes ${m.name}`);
    const caMount = certsMounts.find((m) => new RegExp(`certs init --dir ${m.target}(;|\\s|$)`).test(script));
    assert.ok(caMount !== undefined, `the certs service makes its CA in one of its volumes: ${script}`);
    assert.match(script, new RegExp(`certs issue \\S+ --dir ${caMount.target} `), script);
    assert.equal(certs['restart'], 'no', 'certs runs once');
    for (const s of svcs) {
      assert.equal(s.cfg.insecurePlaintext, false, `${s.name}: --insecure-plaintext`);
      assert.ok(s.cfg.peerTls !== null && s.cfg.clientTls !== null && s.cfg.httpTls !== null, `${s.name}: TLS on the peer, client and HTTP planes`);
      // Each certificate is issued for the node's service name (the name its peers and the health check dial).
      assert.match(script, new RegExp(`\\b${s.name}\\b`), `${s.name}: the certs service issues no certificate for it`);
      const mounts = mountsOf(s.def, s.name);
      assert.ok(!mounts.some((m) => m.name === caMount.name), `${s.name} must not mount the CA volume ${caMount.name} (the CA key)`);
      const tlsMounts = mounts.filter((m) => certsMounts.some((c) => c.name === m.name));
      assert.equal(tlsMounts.length, 1, `${s.name}: one certificate volume`);
      const mine = tlsMounts[0]!;
      assert.equal(mine.mode, 'ro', `${s.name}: mounts ${mine.name} read-only`);
      for (const other of svcs) {
        if (other !== s) assert.ok(!mountsOf(other.def, other.name).some((m) => m.name === mine.name), `${other.name} must not mount ${s.name}'s key volume`);
      }
      const written = certsMounts.find((c) => c.name === mine.name)!;
      assert.match(script, new RegExp(`cp \\S*ca\\.pem \\S*\\.pem \\S*-key\\.pem ${written.target.replace(/n\d$/, '\\$\\$n')}/`), `${s.name}: the certs service copies ca.pem and the node's pair into ${written.target}`);
      const files = [s.cfg.peerTls.certFile, s.cfg.peerTls.keyFile, s.cfg.peerTls.caFile, s.cfg.clientTls.certFile, s.cfg.clientTls.keyFile, s.cfg.httpTls.certFile, s.cfg.httpTls.keyFile];
      for (const f of files) assert.ok(inside(mine.target, f), `${s.name}: ${f} is outside the ${mine.name} volume (${mine.target})`);
      assert.equal(s.cfg.peerTls.certFile, join(mine.target, `${s.name}.pem`), `${s.name}: its own certificate`);
      const dep = map(map(s.def['depends_on'], `${s.name}.depends_on`)['certs'], `${s.name}.depends_on.certs`);
      assert.equal(dep['condition'], 'service_completed_successfully', `${s.name}: starts once the certificates exist`);
    }
  });

  it('every command passes resolveServeConfig, with the service name as node id', () => {
    for (const s of svcs) assert.equal(s.cfg.id, s.name);
  });

  it('--peers names every service, at its service name and peer port, identically everywhere', () => {
    const first = svcs[0]!.cfg.peers;
    for (const s of svcs) {
      assert.deepEqual(Object.keys(s.cfg.peers), names, `${s.name}: peers`);
      assert.deepEqual(s.cfg.peers, first, `${s.name}: peers differ from ${svcs[0]!.name}'s`);
    }
    for (const s of svcs) {
      const addr = first[s.name] ?? '';
      assert.equal(addr.replace(/:\d+$/, ''), s.name, `${s.name} is reached by its service name`);
      // Members are named by their peer-plane addresses: the node's peer listener must be there.
      assert.equal(portOf(addr), portOf(s.cfg.peerListen), `${s.name}: its port in --peers = its --peer-listen port`);
      assert.ok(s.cfg.peerListen === addr || /^0\.0\.0\.0:/.test(s.cfg.peerListen), `${s.name}: peers must reach ${addr} (--peer-listen ${s.cfg.peerListen})`);
      assert.notEqual(portOf(s.cfg.peerListen), portOf(s.cfg.grpcAddress), `${s.name}: the peer and client planes need separate ports`);
      assert.match(s.cfg.grpcAddress, /^0\.0\.0\.0:/, `${s.name}: gRPC must listen on every interface`);
      assert.match(s.cfg.httpAddress, /^0\.0\.0\.0:/, `${s.name}: HTTP must listen on every interface`);
    }
  });

  it('takes the API key from the environment (required, no default) and sets only known env twins', () => {
    const twins = new Set(SERVE_OPTIONS.map((o) => o.env));
    for (const s of svcs) {
      const env = map(s.def['environment'], `${s.name}.environment`);
      for (const k of Object.keys(env)) assert.ok(twins.has(k), `${s.name}: ${k} is not the env twin of a serve option`);
      assert.equal(env[envName('api-key')], '${SNAPCOORD_API_KEY:?set SNAPCOORD_API_KEY}');
    }
  });

  it('publishes gRPC on 7001-7003 and HTTP on 8108-8110, onto the ports the nodes listen on', () => {
    const seen = new Set<string>();
    svcs.forEach((s, i) => {
      const ports = strList(s.def['ports'], `${s.name}.ports`).map((p) => {
        const m = /^(\d+):(\d+)$/.exec(p);
        assert.ok(m !== null, `${s.name}: port "${p}" is not HOST:CONTAINER`);
        assert.ok(!seen.has(m[1]!), `host port ${m[1]} published twice`);
        seen.add(m[1]!);
        return { host: Number(m[1]), container: Number(m[2]) };
      });
      const grpcPort = portOf(s.cfg.grpcAddress);
      const httpPort = portOf(s.cfg.httpAddress);
      assert.deepEqual(
        ports.sort((a, b) => a.container - b.container),
        [
          { host: 7001 + i, container: grpcPort },
          { host: 8108 + i, container: httpPort },
        ].sort((a, b) => a.container - b.container),
        `${s.name}: ports`,
      );
    });
  });

  it('keeps each data dir, snapshot dir and snapshot root in the service\'s own named volume', () => {
    const declared = map(doc['volumes'], 'volumes');
    const used = new Set<string>();
    const shared = new Set<string>();
    for (const name of helpers) for (const m of mountsOf(map(services[name], name), name)) shared.add(m.name);
    for (const s of svcs) {
      const mounts = mountsOf(s.def, s.name);
      for (const m of mounts) if (m.target !== s.cfg.dataDir) assert.equal(m.mode, 'ro', `${s.name}: ${m.name} is shared, so read-only`);
      const data = mounts.find((m) => m.target === s.cfg.dataDir);
      assert.ok(data !== undefined, `${s.name}: the data dir ${s.cfg.dataDir} is not a volume`);
      assert.ok(Object.hasOwn(declared, data.name), `${s.name}: volume ${data.name} is not declared under volumes:`);
      assert.ok(!used.has(data.name), `volume ${data.name} is shared`);
      used.add(data.name);
      assert.ok(inside(s.cfg.dataDir, s.cfg.snapshotDir), `${s.name}: snapshot dir ${s.cfg.snapshotDir} is outside ${s.cfg.dataDir}`);
      for (const r of s.cfg.snapshotRoots) assert.ok(inside(s.cfg.dataDir, r), `${s.name}: snapshot root ${r} is outside ${s.cfg.dataDir}`);
      assert.ok(s.cfg.snapshotRoots.some((r) => inside(r, s.cfg.snapshotDir)), `${s.name}: the snapshot dir is under no snapshot root`);
      const store = join(s.cfg.dataDir, SNAPSHOT_STORE_DIR);
      for (const d of [...s.cfg.snapshotRoots, s.cfg.snapshotDir]) {
        assert.ok(!inside(d, store) && !inside(store, d), `${s.name}: ${d} overlaps the node's own snapshot store ${store} (exports would land among its files)`);
      }
    }
    for (const v of used) assert.ok(!shared.has(v), `data volume ${v} is mounted by ${helpers.join(', ')} too`);
    assert.deepEqual(Object.keys(declared).sort(), [...used, ...shared].sort(), 'every declared volume is used');
  });

  it('health-checks GET /health on the node\'s HTTP port with node (no curl in node:20-slim), over HTTPS trusting the cluster CA', () => {
    for (const s of svcs) {
      const test = strList(map(s.def['healthcheck'], `${s.name}.healthcheck`)['test'], `${s.name}.healthcheck.test`);
      assert.deepEqual(test.slice(0, 3), ['CMD', 'node', '-e'], `${s.name}: healthcheck`);
      const script = test[3] ?? '';
      if (s.cfg.httpTls === null) {
        assert.ok(script.includes(`fetch('http://127.0.0.1:${portOf(s.cfg.httpAddress)}/health')`), script);
        assert.match(script, /process\.exit\(r\.ok\?0:1\)/);
        assert.match(script, /\.catch\(\(\)=>process\.exit\(1\)\)/);
      } else {
        // fetch cannot be given a CA: https.get with the CA the node's certificate chains to.
        assert.match(script, /require\('https'\)\.get\(/, script);
        assert.ok(script.includes(`host:'127.0.0.1',port:${portOf(s.cfg.httpAddress)},path:'/health'`), script);
        assert.ok(script.includes(`ca:require('fs').readFileSync('${s.cfg.peerTls?.caFile ?? '(no --peer-ca)'}')`), script);
        assert.match(script, /process\.exit\(r\.statusCode===200\?0:1\)/);
        assert.match(script, /\.on\('error',\(\)=>process\.exit\(1\)\)/);
      }
      // The script must run as written.
      assert.doesNotThrow(() => new Function(script), script);
    }
  });

  it('the image exposes those ports and runs the compiled CLI', () => {
    assert.match(dockerfile, /^FROM node:20-slim\b/m);
    const expose = /^EXPOSE\s+(.+)$/m.exec(dockerfile);
    assert.ok(expose !== null, 'EXPOSE');
    const exposed = expose[1]!.trim().split(/\s+/).map(Number);
    for (const s of svcs) {
      assert.ok(exposed.includes(portOf(s.cfg.grpcAddress)), `EXPOSE ${portOf(s.cfg.grpcAddress)}`);
      assert.ok(exposed.includes(portOf(s.cfg.peerListen)), `EXPOSE ${portOf(s.cfg.peerListen)}`);
      assert.ok(exposed.includes(portOf(s.cfg.httpAddress)), `EXPOSE ${portOf(s.cfg.httpAddress)}`);
    }
    // The image starts its nodes as every launcher does (src/cli/node-runtime.ts): V8 flags before the entry, malloc settings in ENV.
    // The entry by its absolute path in the final stage's WORKDIR: a container run with another working directory
    // (the README's `docker run … -v $PWD:/w -w /w snapcoord` for make-secrets.sh) runs the image's CLI, not ./dist of -w.
    const workdir = [...dockerfile.matchAll(/^WORKDIR\s+(\S+)$/gm)].at(-1)?.[1] ?? '';
    assert.ok(workdir.startsWith('/'), `the final stage's WORKDIR (${workdir}) is absolute`);
    const entrypoint = `ENTRYPOINT ${JSON.stringify(['node', ...NODE_V8_FLAGS, `${workdir}/dist/src/cli/main.js`])}`.replaceAll(',', ', ');
    assert.ok(dockerfile.split('\n').includes(entrypoint), `${entrypoint}: node with NODE_V8_FLAGS and the CLI's absolute path`);
    assert.match(readFileSync(join(REPO_ROOT, 'README.md'), 'utf8'), /docker run [^\n]*-w \/w snapcoord/, 'the README runs the image with -w');
    const env = dockerfile.split('\n').filter((l) => l.startsWith('ENV ')).flatMap((l) => l.slice(4).trim().split(/\s+/));
    for (const [k, v] of Object.entries(NODE_MALLOC_ENV)) assert.ok(env.includes(`${k}=${v}`), `the Dockerfile sets ENV ${k}=${v}`);
    assert.ok(existsSync(join(REPO_ROOT, 'src', 'cli', 'main.ts')), 'dist/src/cli/main.js is compiled from src/cli/main.ts');
    // `npm run build` in the build stage runs scripts of the repo's (the client commands' bundle): they are copied in first.
    const build = (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts['build'] ?? '';
    const copied = dockerfile.split('\n').filter((l) => l.startsWith('COPY ') && !l.includes('--from=')).map((l) => l.trim().split(/\s+/)[1]);
    for (const dir of new Set([...build.matchAll(/\b(scripts|src|bench|test)\//g)].map((m) => m[1]))) assert.ok(copied.includes(dir), `npm run build uses ${dir}/: the Dockerfile copies it before building`);
    // The client commands' code cache is made under the ENTRYPOINT's V8 flags (V8 rejects one made under others).
    assert.ok(dockerfile.includes(`RUN BUNDLE_CLI_NODE_FLAGS="${NODE_V8_FLAGS.join(' ')}" npm run build`), 'the build makes the code cache under NODE_V8_FLAGS');
    assert.match(dockerfile, /^VOLUME \["\/data"\]$/m);
    for (const s of svcs) assert.equal(s.cfg.dataDir, '/data');
  });
});
