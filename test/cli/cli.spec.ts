/**
 * The CLI as a user runs it: `node --import tsx src/cli/main.ts ...` as a
 * child process, against three real `snapcoord serve` processes (ports from
 * the OS, data in a temp dir, killed in after()). Checks output, exit codes
 * (0 ok, 1 failed, 2 usage) and one-line errors.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { copyFile, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SnapshotClient } from '../../src/client/snapshot-client.js';
import { createCa, issueNodeCert } from '../../src/tls/certs.js';
import { Child, describeRun, runCli, type CliResult } from '../harness/child.js';
import { freePorts } from '../harness/ports.js';
import { ServeCluster } from '../harness/serve-cluster.js';

/** oneLineError: stderr is exactly one line "snapcoord: ...", without a stack trace. */
function assertOneLineError(r: CliResult, args: readonly string[], pattern?: RegExp): void {
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `one line of stderr expected: ${describeRun(args, r)}`);
  assert.match(lines[0] ?? '', /^snapcoord: \S/, describeRun(args, r));
  assert.doesNotMatch(r.stderr, /^\s+at /m, describeRun(args, r));
  if (pattern !== undefined) assert.match(lines[0] ?? '', pattern, describeRun(args, r));
}

async function cli(args: readonly string[], expectCode: number, env: Record<string, string> = {}): Promise<CliResult> {
  const r = await runCli(args, { env });
  assert.equal(r.code, expectCode, describeRun(args, r));
  return r;
}

describe('cli: usage and errors (no cluster)', function () {
  this.timeout(60_000);

  it('--help lists every command, exit 0', async () => {
    const r = await cli(['--help'], 0);
    for (const c of ['serve', 'gateway', 'local', 'kv', 'cluster', 'snapshot', 'tasks']) assert.match(r.stdout, new RegExp(`^\\s+${c}\\b`, 'm'), c);
    const s = await cli(['snapshot', '--help'], 0);
    for (const c of ['save', 'restore', 'inspect', 'ls']) assert.match(s.stdout, new RegExp(`^\\s+${c}\\b`, 'm'), c);
    const t = await cli(['tasks', '--help'], 0);
    for (const c of ['ls', 'get', 'wait']) assert.match(t.stdout, new RegExp(`^\\s+${c}\\b`, 'm'), c);
    const k = await cli(['cluster', '--help'], 0);
    for (const c of ['status', 'vote', 'transfer-leader', 'add', 'remove']) assert.match(k.stdout, new RegExp(`^\\s+${c}\\b`, 'm'), c);
    const save = await cli(['snapshot', 'save', '--help'], 0);
    assert.match(save.stdout, /--endpoint/);
    assert.match(save.stdout, /--stale/);
  });

  it('an unknown command, a missing argument or a bad option value: one line, exit 2', async () => {
    for (const args of [
      ['bogus'],
      ['kv', 'get'],
      ['snapshot', 'save'],
      ['cluster', 'add', 'n4'],
      ['tasks', 'get', 'abc'],
      ['tasks', 'ls', '--status', 'sleeping'],
      ['tasks', 'ls', '--limit', 'lots'],
      ['kv', 'get', 'k', '--endpoint', 'not-an-address'],
      ['snapshot', 'save', '--frobnicate', 'x.snap'],
    ]) {
      const r = await cli(args, 2);
      assertOneLineError(r, args);
    }
  });

  it('an unreachable endpoint: one line, exit 1, no stack; --debug adds the stack', async () => {
    const [port] = await freePorts(1);
    const endpoint = `127.0.0.1:${port}`;
    for (const args of [
      ['kv', 'get', 'k', '--endpoint', endpoint],
      ['cluster', 'status'],
      ['snapshot', 'ls'],
      ['tasks', 'ls'],
    ]) {
      const r = await cli(args, 1, { SNAPCOORD_ENDPOINT: endpoint });
      assertOneLineError(r, args, /UNAVAILABLE/);
    }
    const dir = await import('node:os').then((os) => os.tmpdir());
    const file = join(dir, `snapcoord-cli-unreachable-${process.pid}.snap`);
    const save = await cli(['snapshot', 'save', file, '--endpoint', endpoint], 1);
    assertOneLineError(save, ['snapshot', 'save'], /UNAVAILABLE/);
    await assert.rejects(stat(file), 'no file after a failed save');
    await assert.rejects(stat(`${file}.tmp`), 'no FILE.tmp after a failed save');
    const dbg = await cli(['kv', 'get', 'k', '--endpoint', endpoint, '--debug'], 1);
    assert.match(dbg.stderr, /^snapcoord: UNAVAILABLE/);
    assert.match(dbg.stderr, /^\s+at /m, 'a stack trace with --debug');
  });

  it('inspect of a missing or non-archive file: exit 1', async () => {
    const r = await cli(['snapshot', 'inspect', '/nonexistent/x.snap'], 1);
    assertOneLineError(r, ['snapshot', 'inspect'], /ENOENT/);
    const dir = tmpdir();
    const junk = join(dir, `snapcoord-cli-junk-${process.pid}.snap`);
    await writeFile(junk, 'not a snapshot');
    try {
      const j = await cli(['snapshot', 'inspect', '--json', junk], 1);
      const parsed = JSON.parse(j.stdout) as { ok: boolean; problems: string[] };
      assert.equal(parsed.ok, false);
      assert.ok(parsed.problems.length > 0);
    } finally {
      await rm(junk, { force: true });
    }
  });

  it('gateway: keys never cross the network in the clear unless --insecure-plaintext (exit 2); HTTPS with --http-cert/--http-key', async () => {
    const key = ['--api-key', 'gateway-key-0123456789'];
    // A non-loopback listener without HTTPS, a non-loopback target without --cacert: refused before anything starts
    // (without the check the gateway ran: killed after 20 s, no exit code).
    for (const args of [
      ['gateway', '--target', '127.0.0.1:1', '--http', '0.0.0.0:0', ...key],
      ['gateway', '--target', '192.0.2.1:7001', '--http', '127.0.0.1:0', ...key],
    ]) {
      const r = await runCli(args, { timeoutMs: 20_000 });
      assert.equal(r.code, 2, describeRun(args, r));
      assertOneLineError(r, args, /refusing to .*(--http-cert|--cacert).*--insecure-plaintext/);
    }
    const half = ['gateway', '--target', '127.0.0.1:1', '--http', '127.0.0.1:0', '--http-cert', '/nonexistent/c.pem', ...key];
    assertOneLineError(await cli(half, 2), half, /http-cert and http-key go together/);
    // With a certificate it serves HTTPS on a wildcard address.
    const dir = await mkdtemp(join(tmpdir(), 'snapcoord-cli-gw-'));
    const authority = await createCa();
    const cert = await issueNodeCert(authority, { id: 'gw', dns: ['localhost'], ips: ['127.0.0.1'] });
    await writeFile(join(dir, 'gw.pem'), cert.certPem);
    await writeFile(join(dir, 'gw-key.pem'), cert.keyPem, { mode: 0o600 });
    const g = new Child(['gateway', '--target', '127.0.0.1:1', '--http', '0.0.0.0:0', '--http-cert', join(dir, 'gw.pem'), '--http-key', join(dir, 'gw-key.pem'), ...key]);
    try {
      const port = Number((await g.waitFor(/gateway listening on http \S+:(\d+)/))[1]);
      const code = await new Promise<number>((resolve, reject) => {
        const req = httpsRequest({ host: '127.0.0.1', port, path: '/openapi.json', ca: authority.certPem, servername: 'localhost', agent: false }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        });
        req.on('error', reject);
        req.end();
      });
      assert.equal(code, 200);
    } finally {
      await g.kill('SIGTERM');
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('cli: against three serve processes', function () {
  this.timeout(180_000);

  let cluster: ServeCluster;
  let env: Record<string, string>;
  const keys: Record<string, string> = { 'app/a': 'alpha', 'app/b': 'beta', 'app/c': 'gamma', other: 'x' };

  before(async () => {
    cluster = await ServeCluster.start({ snapshotDirs: true });
    // Talk to a follower: writes and snapshot downloads are forwarded to the leader.
    env = { SNAPCOORD_ENDPOINT: (await cluster.follower()).grpc };
  });

  after(async () => {
    await cluster?.stop();
  });

  const listKeys = async (): Promise<Record<string, string>> => {
    const r = await cli(['kv', 'ls', '--json'], 0, env);
    return Object.fromEntries((JSON.parse(r.stdout) as { key: string; value: string }[]).map((p) => [p.key, p.value]));
  };

  it('kv put / get / ls / del', async () => {
    for (const [k, v] of Object.entries(keys)) {
      const r = await cli(['kv', 'put', k, v], 0, env);
      assert.match(r.stdout, /^OK/);
    }
    assert.equal((await cli(['kv', 'get', 'app/b'], 0, env)).stdout, 'beta\n');
    const ls = await cli(['kv', 'ls', 'app/'], 0, env);
    assert.equal(ls.stdout, 'app/a\talpha\napp/b\tbeta\napp/c\tgamma\n');
    assert.deepEqual(await listKeys(), keys);
    const missing = await cli(['kv', 'get', 'nope'], 1, env);
    assertOneLineError(missing, ['kv', 'get', 'nope'], /not found/);
    await cli(['kv', 'put', 'tmp', '1'], 0, env);
    assert.equal((await cli(['kv', 'del', 'tmp'], 0, env)).stdout, '1\n');
  });

  it('cluster status --json: three reachable members, exactly one leader', async () => {
    const r = await cli(['cluster', 'status', '--json'], 0, env);
    const v = JSON.parse(r.stdout) as {
      leader: { id: string; address: string } | null;
      commitIndex: number;
      members: { id: string; address: string; peerAddress: string; role: string; reachable: boolean; matchIndex: number | null; lag: number | null }[];
    };
    assert.equal(v.members.length, 3, r.stdout);
    assert.deepEqual(v.members.map((m) => m.id).sort(), ['n1', 'n2', 'n3']);
    // Each member: its client API (what --endpoint takes) and its peer address (the membership's).
    for (const m of v.members) {
      assert.equal(m.address, cluster.node(m.id).grpc, r.stdout);
      assert.equal(m.peerAddress, cluster.node(m.id).peer, r.stdout);
    }
    assert.ok(v.members.every((m) => m.reachable), r.stdout);
    const leaders = v.members.filter((m) => m.role === 'leader');
    assert.equal(leaders.length, 1, r.stdout);
    assert.equal(v.leader?.id, leaders[0]?.id);
    assert.equal(v.leader?.address, cluster.node(leaders[0]?.id ?? '').grpc, 'the leader at its client address');
    for (const m of v.members) {
      assert.equal(typeof m.matchIndex, 'number', r.stdout);
      assert.ok(m.lag !== null && m.lag >= 0 && m.lag <= v.commitIndex, r.stdout);
    }
    const text = await cli(['cluster', 'status'], 0, env);
    assert.match(text.stdout, new RegExp(`^leader: ${leaders[0]?.id} at ${cluster.node(leaders[0]?.id ?? '').grpc}, `, 'm'));
    assert.match(text.stdout, /^ID\s+ADDRESS\s+ROLE\s+SUFFRAGE\s+TERM\s+COMMIT\s+APPLIED\s+MATCH\s+LAG\s+PEER$/m);
  });

  it('cluster add --learner / remove; a member that does not answer shows as unreachable', async () => {
    const [port] = await freePorts(1);
    // A member is added at its peer address; its client address is known once it talks to the cluster (never, here).
    const add = await cli(['cluster', 'add', 'n4', `127.0.0.1:${port}`, '--learner', '--json'], 0, env);
    const added = JSON.parse(add.stdout) as { members: { id: string; peerAddress: string; suffrage: string }[]; peers: string };
    assert.deepEqual(added.members.find((m) => m.id === 'n4'), { id: 'n4', address: '', peerAddress: `127.0.0.1:${port}`, suffrage: 'learner' });
    // The --peers to start the new member with: every member at its peer address (etcd's `member add` prints its --initial-cluster).
    assert.equal(added.peers, added.members.map((m) => `${m.id}=${m.peerAddress}`).join(','));
    assert.ok(added.peers.includes(`n4=127.0.0.1:${port}`) && added.members.length === 4, add.stdout);
    const st = JSON.parse((await cli(['cluster', 'status', '--json'], 0, env)).stdout) as { members: { id: string; role: string; reachable: boolean }[] };
    assert.equal(st.members.length, 4);
    assert.deepEqual(
      st.members.filter((m) => !m.reachable).map((m) => [m.id, m.role]),
      [['n4', 'unreachable']],
    );
    // Promoting that learner is no new member: no "start n4 (an empty --data-dir)" (which would wipe a running one).
    const promoted = await cli(['cluster', 'add', 'n4', `127.0.0.1:${port}`], 0, env);
    assert.match(promoted.stdout, /^n4 was a learner, now a voter: it keeps running on its data dir, nothing to restart$/m, promoted.stdout);
    assert.doesNotMatch(promoted.stdout, /empty --data-dir/, promoted.stdout);
    await cli(['cluster', 'remove', 'n4'], 0, env);
    const again = await cli(['cluster', 'add', 'n4', `127.0.0.1:${port}`, '--learner'], 0, env);
    assert.match(again.stdout, new RegExp(`^start n4 \\(an empty --data-dir\\) with: --id n4 --peers ${added.peers.replace(/\./g, '\\.')}$`, 'm'));
    const rm = await cli(['cluster', 'remove', 'n4'], 0, env);
    assert.doesNotMatch(rm.stdout, /\bn4\b/);
    assert.match(rm.stdout, /^ID\s+ADDRESS\s+SUFFRAGE\s+PEER$/m);
    // A member that missed the removal still takes n4's certificate for a member's: revoke it (--peer-crl).
    assert.match(rm.stderr, /^next: revoke n4's certificate \(`snapcoord certs revoke n4`, or `openssl ca -revoke n4\.pem`.*give every member the CRL with --peer-crl/m, rm.stderr);
    const bad = await cli(['cluster', 'add', 'n5', 'no-port'], 2, env);
    assertOneLineError(bad, ['cluster', 'add'], /not host:port/);
  });

  it('cluster vote on a follower makes it the leader; on the leader it changes nothing', async () => {
    const f = await cluster.follower();
    const r = await cli(['cluster', 'vote', '--endpoint', f.grpc], 0);
    assert.match(r.stdout, new RegExp(`^${f.id} is now the leader`), describeRun(['cluster', 'vote'], r));
    assert.equal((await cluster.leader()).id, f.id);
    const again = await cli(['cluster', 'vote', '--json', '--endpoint', f.grpc], 0);
    assert.equal((JSON.parse(again.stdout) as { success: boolean }).success, false);
    const other = cluster.nodes.find((n) => n.id !== f.id)!;
    const t = await cli(['cluster', 'transfer-leader', other.id], 0, env);
    assert.equal(t.stdout, `leader: ${other.id}\n`);
    assert.equal((await cluster.leader()).id, other.id);
    env = { SNAPCOORD_ENDPOINT: (await cluster.follower()).grpc };
  });

  describe('snapshots', () => {
    let file = '';
    let saved: { index: number; term: number; sizeBytes: number; digest: string; file: string };

    before(() => {
      file = join(cluster.dir, 'backup.snap');
    });

    it('save writes FILE (0600), with the SHA-256 the node announced, and no FILE.tmp', async () => {
      const r = await cli(['snapshot', 'save', '--json', file], 0, env);
      saved = JSON.parse(r.stdout) as typeof saved;
      const bytes = await readFile(file);
      assert.equal(saved.sizeBytes, bytes.length);
      assert.equal(saved.digest, createHash('sha256').update(bytes).digest('hex'));
      assert.ok(saved.index > 0 && saved.term > 0, r.stdout);
      assert.equal((await stat(file)).mode & 0o777, 0o600);
      assert.deepEqual((await readdir(cluster.dir)).filter((n) => n.endsWith('.tmp')), []);
      // Not a TTY: a quick save prints no progress at all.
      assert.equal(r.stderr, '');
    });

    it('save prints index, term, size and digest as text', async () => {
      const other = join(cluster.dir, 'backup-text.snap');
      const r = await cli(['snapshot', 'save', '--stale', other], 0, env);
      assert.match(r.stdout, /^Snapshot saved to /);
      for (const w of ['index', 'term', 'size', 'sha256']) assert.match(r.stdout, new RegExp(`^\\s+${w}\\s+\\S`, 'm'));
    });

    it('save refuses to overwrite an existing FILE: exit 1, one line, file untouched', async () => {
      const before = await readFile(file);
      const r = await cli(['snapshot', 'save', file], 1, env);
      assertOneLineError(r, ['snapshot', 'save', file], /already exists/);
      assert.deepEqual(await readFile(file), before);
      assert.deepEqual((await readdir(cluster.dir)).filter((n) => n.endsWith('.tmp')), []);
    });

    it('inspect --json: ok, with the right key count and the saved index', async () => {
      const r = await cli(['snapshot', 'inspect', '--json', file], 0);
      const v = JSON.parse(r.stdout) as {
        ok: boolean;
        keys: number;
        reservedRecords: number;
        sessionRecords: number;
        stateKeys: number;
        index: number;
        term: number;
        digest: string;
        membership: { voters: string[] };
      };
      assert.equal(v.ok, true, r.stdout);
      assert.equal(v.keys, Object.keys(keys).length);
      // state.bin also holds the store's own records, counted apart: a revision record per live key, and the
      // client sessions of the idempotent kv writes (at least one).
      assert.equal(v.stateKeys, Object.keys(keys).length + v.reservedRecords);
      assert.ok(v.sessionRecords >= 1, r.stdout);
      assert.equal(v.reservedRecords, Object.keys(keys).length + v.sessionRecords, r.stdout);
      assert.equal(v.index, saved.index);
      assert.equal(v.digest, saved.digest);
      assert.deepEqual([...v.membership.voters].sort(), ['n1', 'n2', 'n3']);
      const text = await cli(['snapshot', 'inspect', file], 0);
      for (const label of ['ID', 'Size', 'Index', 'Term', 'Format version', 'Created', 'snapcoord version', 'Keys', 'Membership', 'Hashes']) {
        assert.match(text.stdout, new RegExp(`^${label}\\s+\\S`, 'm'), label);
      }
      assert.match(text.stdout, /^Hashes\s+ok/m);
    });

    it('restore brings the saved state back', async () => {
      await cli(['kv', 'put', 'app/a', 'changed'], 0, env);
      await cli(['kv', 'put', 'new', 'key'], 0, env);
      await cli(['kv', 'del', 'other'], 0, env);
      assert.notDeepEqual(await listKeys(), keys);
      const r = await cli(['snapshot', 'restore', '--json', file], 0, env);
      const v = JSON.parse(r.stdout) as { restoredIndex: number; archive: { digest: string } };
      assert.ok(v.restoredIndex > saved.index, r.stdout);
      assert.equal(v.archive.digest, saved.digest);
      assert.deepEqual(await listKeys(), keys);
    });

    it('restore of a corrupted copy is refused, its upload canceled; the state is unchanged', async () => {
      await cli(['kv', 'put', 'after-restore', 'yes'], 0, env);
      const state = await listKeys();
      const bad = join(cluster.dir, 'corrupt.snap');
      await copyFile(file, bad);
      const bytes = await readFile(bad);
      bytes[Math.floor(bytes.length / 2)]! ^= 0xff;
      await writeFile(bad, bytes);
      const restoresApplied = (): number => cluster.nodes.reduce((n, node) => n + (node.proc?.output ?? '').split('"restore applied"').length - 1, 0);
      const appliedBefore = restoresApplied();
      assert.ok(appliedBefore >= 3, 'the earlier restore was applied on every node');
      const r = await cli(['snapshot', 'restore', bad], 1, env);
      assertOneLineError(r, ['snapshot', 'restore', bad], /not a valid snapshot archive; the upload was canceled and nothing changed: /);
      assert.deepEqual(await listKeys(), state);
      assert.equal(restoresApplied(), appliedBefore, 'no node applied a restore');
      const i = await cli(['snapshot', 'inspect', '--json', bad], 1);
      assert.equal((JSON.parse(i.stdout) as { ok: boolean }).ok, false);
      assert.match(i.stderr, /^snapcoord: .*does not check out/);
    });

    it('ls lists the kept snapshots of the endpoint node', async () => {
      const leader = await cluster.leader();
      const r = await cli(['snapshot', 'ls', '--json', '--endpoint', leader.grpc], 0);
      const list = JSON.parse(r.stdout) as { id: string; index: number; digest: string }[];
      assert.ok(Array.isArray(list));
      for (const s of list) assert.ok(typeof s.id === 'string' && s.index > 0 && /^[0-9a-f]{64}$/.test(s.digest), r.stdout);
    });
  });

  describe('tasks', () => {
    let uid = 0;
    let node = '';

    before(async () => {
      node = cluster.nodes[0]!.grpc;
      const c = new SnapshotClient(node);
      try {
        const res = await c.createSnapshot({ task: true });
        assert.ok(res.task !== undefined, 'a task');
        uid = Number(res.task.uid);
      } finally {
        c.close();
      }
    });

    it('tasks wait returns once the snapshot task succeeded (exit 0)', async () => {
      const r = await cli(['tasks', 'wait', String(uid), '--timeout-ms', '30000', '--endpoint', node], 0);
      assert.match(r.stdout, new RegExp(`^task ${uid} succeeded`));
    });

    it('tasks get --json shows the Meilisearch task object', async () => {
      const r = await cli(['tasks', 'get', String(uid), '--json', '--endpoint', node], 0);
      const t = JSON.parse(r.stdout) as Record<string, unknown>;
      assert.equal(t['uid'], uid);
      assert.equal(t['type'], 'snapshotCreation');
      assert.equal(t['status'], 'succeeded');
      assert.equal(t['indexUid'], null);
      assert.equal(t['error'], null);
      for (const k of ['batchUid', 'canceledBy', 'details', 'duration', 'enqueuedAt', 'startedAt', 'finishedAt']) assert.ok(k in t, k);
      const text = await cli(['tasks', 'get', String(uid), '--endpoint', node], 0);
      assert.match(text.stdout, /^status\s+succeeded$/m);
    });

    it('tasks ls filters by status and type', async () => {
      const all = JSON.parse((await cli(['tasks', 'ls', '--json', '--type', 'snapshotCreation', '--endpoint', node], 0)).stdout) as {
        results: { uid: number }[];
        total: number;
      };
      assert.ok(all.results.some((t) => t.uid === uid));
      const failed = JSON.parse((await cli(['tasks', 'ls', '--json', '--status', 'failed,canceled', '--endpoint', node], 0)).stdout) as {
        results: { uid: number }[];
      };
      assert.ok(!failed.results.some((t) => t.uid === uid));
      const one = JSON.parse((await cli(['tasks', 'ls', '--json', '--limit', '1', '--endpoint', node], 0)).stdout) as { results: unknown[]; limit: number };
      assert.equal(one.results.length, 1);
      assert.equal(one.limit, 1);
      const text = await cli(['tasks', 'ls', '--endpoint', node], 0);
      assert.match(text.stdout, /^UID\s+TYPE\s+STATUS/);
      assert.match(text.stdout, new RegExp(`^${uid}\\s+snapshotCreation\\s+succeeded`, 'm'));
    });

    it('an unknown task: exit 1, one line', async () => {
      const r = await cli(['tasks', 'get', '987654', '--endpoint', node], 1);
      assertOneLineError(r, ['tasks', 'get'], /NOT_FOUND/);
      const w = await cli(['tasks', 'wait', '987654', '--endpoint', node], 1);
      assertOneLineError(w, ['tasks', 'wait'], /NOT_FOUND/);
    });
  });
});
