/**
 * The chaos runner: `npm run chaos -- --seconds S --seed N --nodes 3|5 [--plaintext]`.
 *
 * Starts a ChaosCluster (TLS on by default: mutual TLS between peers, end to
 * end through the fault proxies, TLS and an API key for every client; with
 * --plaintext neither, for comparison), checks that TLS and the key are
 * really enforced (ChaosCluster.checkTrust), starts the Workload, then injects one fault per round
 * (SIGKILL, SIGSTOP, partitions, one-way cuts, delay, connection resets,
 * message drop/duplicate/corruption, and a follower cut off until the leader
 * compacts past it, which forces an InstallSnapshot), heals, and goes on
 * until S seconds have passed. Then it heals everything and checks:
 *  - a final write succeeds within FINAL_WRITE_MS;
 *  - all nodes reach the same applied index with the same state hash;
 *  - every acknowledged write-once key is on every node;
 *  - the whole history (with a final read of every key) is linearizable.
 * The run stops by itself; on failure the history is kept in the run's dir.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { sleep } from '../harness/until.js';
import { SeededRng } from '../harness/rng.js';
import { ChaosCluster, type ChaosNode } from './cluster.js';
import { checkHistory, type Verdict } from './linearizability.js';
import { Workload } from './workload.js';

const enc = new TextEncoder();

/** FINAL_WRITE_MS: after healing, a write must be acknowledged within this. */
export const FINAL_WRITE_MS = 15_000;
/** CONVERGE_MS: after the final write, every node must reach the same state hash within this. */
export const CONVERGE_MS = 30_000;

export type FaultKind =
  | 'kill'
  | 'kill-leader'
  | 'pause'
  | 'pause-leader'
  | 'partition'
  | 'isolate-leader'
  | 'one-way'
  | 'delay'
  | 'resets'
  | 'message-faults'
  | 'compaction-cutoff';

export const FAULT_KINDS: readonly FaultKind[] = [
  'kill',
  'kill-leader',
  'pause',
  'pause-leader',
  'partition',
  'isolate-leader',
  'one-way',
  'delay',
  'resets',
  'message-faults',
  'compaction-cutoff',
];

export interface ChaosOptions {
  readonly seconds: number;
  readonly seed: number;
  readonly nodes: number;
  readonly clients?: number;
  readonly keys?: number;
  /** faults: the kinds to draw from (default all). */
  readonly faults?: readonly FaultKind[];
  /** faultMs: how long one fault lasts (default 1500..4000 ms, drawn per round). */
  readonly faultMs?: readonly [number, number];
  /** sequence: inject each fault kind once, in order, instead of random ones for `seconds` (CI's bounded round). */
  readonly sequence?: boolean;
  /** dir: keep data and history here (default a temp dir, removed after a passing run). */
  readonly dir?: string;
  readonly log?: (line: string) => void;
  /** logLevel: the nodes' log level (default info; debug shows every transport event). */
  readonly logLevel?: string;
  /** tls (default true): run the cluster with TLS and an API key (see ChaosCluster); false: plaintext. */
  readonly tls?: boolean;
}

export interface ChaosReport {
  readonly ok: boolean;
  readonly seconds: number;
  readonly nodes: number;
  readonly seed: number;
  /** tls: whether the cluster ran with TLS and keys. */
  readonly tls: boolean;
  /** trust: what checkTrust found (one line per check; empty when plaintext). */
  readonly trust: string[];
  readonly rounds: number;
  readonly faults: Record<string, number>;
  readonly messageFaults: { dropped: number; duplicated: number; corrupted: number };
  readonly snapshotInstalls: number;
  readonly ops: Record<string, number>;
  readonly onceAcked: number;
  /** onceFailed: write-once puts not acknowledged, by what failed them. */
  readonly onceFailed: Readonly<Record<string, number>>;
  readonly verdict: Verdict;
  readonly finalWriteMs: number;
  readonly failures: string[];
  readonly dir: string;
}

export async function runChaos(opts: ChaosOptions): Promise<ChaosReport> {
  const log = opts.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), 'snapcoord-chaos-')));
  const rng = new SeededRng(opts.seed);
  const kinds = opts.faults ?? FAULT_KINDS;
  const [faultMin, faultMax] = opts.faultMs ?? [1_500, 4_000];
  const faults: Record<string, number> = {};
  const failures: string[] = [];
  const started = performance.now();
  const elapsed = (): string => `${((performance.now() - started) / 1000).toFixed(1)}s`;

  const tls = opts.tls ?? true;
  log(`chaos: ${opts.nodes} nodes, seed ${opts.seed}, ${opts.seconds} s of faults, ${tls ? 'TLS on' : 'plaintext'}, dir ${dir}`);
  const cluster = await ChaosCluster.start({ nodes: opts.nodes, dir, seed: opts.seed, tls, extra: ['--log-level', opts.logLevel ?? 'info'] });
  let trust: string[] = [];
  let workload: Workload | null = null;
  let rounds = 0;
  let snapshotInstalls = 0;
  let finalWriteMs = -1;
  let verdict: Verdict = { ok: false, verdict: 'unknown', keys: [], ops: 0 };
  try {
    await cluster.waitForLeader(20_000);
    if (tls) {
      const probed = await cluster.checkTrust(cluster.nodes[0]?.id ?? 'n1');
      trust = probed.checks;
      for (const p of probed.problems) failures.push(`TLS not enforced: ${p}`);
      log(`[${elapsed()}] TLS and keys enforced on ${cluster.nodes[0]?.id ?? 'n1'}: ${probed.problems.length === 0 ? 'yes' : 'NO'} (${probed.checks.length} checks)`);
    }
    workload = new Workload({ targets: cluster.nodes, clients: opts.clients ?? 6, keys: opts.keys ?? 4, seed: opts.seed });
    workload.start();

    const end = performance.now() + opts.seconds * 1000;
    while (opts.sequence === true ? rounds < kinds.length : performance.now() < end) {
      const kind = opts.sequence === true ? (kinds[rounds] as FaultKind) : rng.pick(kinds);
      rounds++;
      const ms = rng.range(faultMin, faultMax);
      faults[kind] = (faults[kind] ?? 0) + 1;
      const what = await inject(cluster, kind, rng);
      log(`[${elapsed()}] round ${rounds}: ${kind} (${what}) for ${ms} ms`);
      if (kind === 'compaction-cutoff') {
        snapshotInstalls += await cutOffUntilCompacted(cluster, what, Math.max(ms, 10_000), log);
      } else {
        await sleep(ms);
      }
      await cluster.healAll();
      await sleep(rng.range(500, 1_500));
    }

    log(`[${elapsed()}] healing; waiting for a leader`);
    await cluster.healAll();
    await cluster.waitForLeader(30_000);
    await workload.stop();

    // A final write, through any node, acknowledged within the bound.
    const t0 = performance.now();
    const final = await finalWrite(workload, cluster.nodes, FINAL_WRITE_MS);
    finalWriteMs = Math.round(performance.now() - t0);
    if (!final) failures.push(`no write was acknowledged within ${FINAL_WRITE_MS} ms of healing`);
    log(`[${elapsed()}] final write ${final ? `acknowledged in ${finalWriteMs} ms` : 'FAILED'}`);

    // Same applied index and state hash everywhere.
    const converged = await converge(cluster, CONVERGE_MS);
    if (converged !== null) failures.push(converged);
    else log(`[${elapsed()}] all ${opts.nodes} nodes have the same state hash`);

    // Every acknowledged write-once key on every node (serializable reads: each node's own state).
    for (const n of cluster.nodes) {
      const missing: string[] = [];
      for (const key of workload.onceAcked) {
        const res = await n.kv.get({ key: enc.encode(key), serializable: true }, { deadlineMs: 5_000 });
        if (!res.found) missing.push(key);
      }
      if (missing.length > 0) failures.push(`${n.id} lacks ${missing.length} acknowledged writes: ${missing.slice(0, 5).join(', ')}`);
    }

    // A final linearizable read of every key joins the history.
    const leader = await cluster.waitForLeader(10_000);
    for (let k = 0; k < (opts.keys ?? 4); k++) {
      const op = await workload.record(-1, 'get', `k${k}`, undefined, leader);
      if (op.outcome !== 'ok') failures.push(`the final read of k${k} through ${leader.id} failed`);
    }
    verdict = checkHistory(workload.history);
    if (!verdict.ok) {
      failures.push(`history ${verdict.verdict}: ${verdict.keys.filter((k) => k.verdict !== 'ok').map((k) => `${k.key} ${k.verdict}\n${k.explanation ?? ''}`).join('\n')}`);
    }
  } catch (err) {
    failures.push(`run aborted: ${(err as Error).stack ?? String(err)}`);
  } finally {
    await workload?.stop().catch(() => undefined);
    const injected = cluster.injectedMessageFaults();
    await cluster.stop();
    const report: ChaosReport = {
      ok: failures.length === 0,
      seconds: opts.seconds,
      nodes: opts.nodes,
      seed: opts.seed,
      tls,
      trust,
      rounds,
      faults,
      messageFaults: injected,
      snapshotInstalls,
      ops: workload?.counts() ?? {},
      onceAcked: workload?.onceAcked.length ?? 0,
      onceFailed: Object.fromEntries(workload?.onceFailed ?? []),
      verdict,
      finalWriteMs,
      failures,
      dir,
    };
    if (report.ok && opts.dir === undefined) {
      await rm(dir, { recursive: true, force: true });
    } else {
      await writeFile(join(dir, 'history.json'), JSON.stringify(workload?.history ?? []));
      // Every node process's output is in <dir>/<id>.log already (ChaosCluster: logsDir).
    }
    // eslint-disable-next-line no-unsafe-finally
    return report;
  }
}

/** inject starts one fault; returns what it hit (for the log, and the cut-off node for compaction-cutoff). */
async function inject(cluster: ChaosCluster, kind: FaultKind, rng: SeededRng): Promise<string> {
  const ids = cluster.nodes.map((n) => n.id);
  const leaderId = async (): Promise<string> => (await cluster.leader())?.id ?? rng.pick(ids);
  switch (kind) {
    case 'kill':
    case 'kill-leader': {
      const id = kind === 'kill' ? rng.pick(ids) : await leaderId();
      await cluster.kill(id);
      return id;
    }
    case 'pause':
    case 'pause-leader': {
      const id = kind === 'pause' ? rng.pick(ids) : await leaderId();
      cluster.pause(id);
      return id;
    }
    case 'partition': {
      const shuffled = rng.shuffle(ids);
      const minority = shuffled.slice(0, Math.max(1, Math.floor((ids.length - 1) / 2)));
      cluster.mesh.partition([minority]);
      return `${minority.join(',')} | ${ids.filter((i) => !minority.includes(i)).join(',')}`;
    }
    case 'isolate-leader': {
      const id = await leaderId();
      cluster.mesh.isolate(id);
      return id;
    }
    case 'one-way': {
      const from = await leaderId();
      const to = rng.pick(ids.filter((i) => i !== from));
      cluster.mesh.oneWay(from, to);
      return `${from} -/-> ${to}`;
    }
    case 'delay': {
      const d = rng.range(5, 65);
      cluster.mesh.delayAll(d, Math.round(d / 2));
      return `${d} ms ± ${Math.round(d / 2)}`;
    }
    case 'resets': {
      const p = 0.002 + rng.nextFloat() * 0.02;
      cluster.mesh.setAll({ kind: 'reset', probability: p });
      return `p=${p.toFixed(3)} per chunk`;
    }
    case 'message-faults': {
      const rates = { drop: rng.nextFloat() * 0.1, duplicate: rng.nextFloat() * 0.1, corrupt: rng.nextFloat() * 0.05, seed: rng.nextInt(1e9) };
      await cluster.setMessageFaults(rates);
      return `drop ${rates.drop.toFixed(3)} duplicate ${rates.duplicate.toFixed(3)} corrupt ${rates.corrupt.toFixed(3)}`;
    }
    case 'compaction-cutoff': {
      const leader = await leaderId();
      const id = rng.pick(ids.filter((i) => i !== leader));
      cluster.mesh.isolate(id);
      return id;
    }
  }
}

/**
 * cutOffUntilCompacted keeps `id` isolated until the leader's newest snapshot
 * is past everything `id` has, then heals and waits (bounded) for `id` to
 * install a snapshot at least that new. Returns 1 when it did, else 0.
 */
async function cutOffUntilCompacted(cluster: ChaosCluster, id: string, maxMs: number, log: (l: string) => void): Promise<number> {
  const node = cluster.node(id);
  let had = -1;
  for (let i = 0; i < 10 && had < 0; i++) {
    const st = await node.cluster.status({ deadlineMs: 1_000 }).catch(() => null);
    if (st !== null) had = Number(st.appliedIndex);
    else await sleep(100);
  }
  if (had < 0) {
    cluster.mesh.heal();
    log(`  compaction-cutoff: ${id} did not answer Status; healed`);
    return 0;
  }
  const deadline = performance.now() + maxMs * 3;
  let target = 0;
  let filler = 0;
  while (performance.now() < deadline) {
    const leader = await cluster.leader();
    if (leader !== undefined && leader.id !== id) {
      const st = await leader.cluster.status({ deadlineMs: 1_000 }).catch(() => null);
      // The leader's log now starts after `had` (it keeps trailing entries behind its snapshot: wait past those too).
      if (st !== null && Number(st.snapshotIndex) > had + 60) {
        target = Number(st.snapshotIndex);
        break;
      }
      // Drive the log forward (keys outside the checked ones): 32 writes at a time.
      await Promise.all(
        Array.from({ length: 32 }, () => leader.kv.put({ key: enc.encode(`fill/${filler++ % 64}`), value: enc.encode('x') }, { deadlineMs: 2_000 }).catch(() => undefined)),
      );
      continue;
    }
    await sleep(200);
  }
  cluster.mesh.heal();
  if (target === 0) {
    log(`  compaction-cutoff: the leader did not compact past ${id}'s index ${had} in time; healed`);
    return 0;
  }
  const t0 = performance.now();
  const until = t0 + 20_000;
  let last = '';
  while (performance.now() < until) {
    const st = await node.cluster.status({ deadlineMs: 1_000 }).catch(() => null);
    if (st !== null && Number(st.snapshotIndex) >= target) {
      log(`  compaction-cutoff: ${id} had index ${had}, the leader compacted to ${target}; ${id} installed snapshot ${st.snapshotIndex} in ${Math.round(performance.now() - t0)} ms`);
      return 1;
    }
    if (st !== null) last = `applied ${st.appliedIndex}, snapshot ${st.snapshotIndex}, leader ${st.leaderId || 'none'}, term ${st.term}`;
    await sleep(100);
  }
  log(`  compaction-cutoff: ${id} did not install snapshot ${target} within 20 s (${last})`);
  return 0;
}

/** finalWrite puts `final` through each node in turn until one acknowledges, within timeoutMs; records it in the history. */
async function finalWrite(workload: Workload, nodes: readonly ChaosNode[], timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  for (let i = 0; performance.now() < deadline; i++) {
    const op = await workload.record(-2, 'put', 'k0', `final-${i}`, nodes[i % nodes.length] as ChaosNode);
    if (op.outcome === 'ok') return true;
    await sleep(100);
  }
  return false;
}

/** converge waits until every node answers the same applied index and state hash; returns null, or what differed. */
async function converge(cluster: ChaosCluster, timeoutMs: number): Promise<string | null> {
  const deadline = performance.now() + timeoutMs;
  let last = '';
  while (performance.now() < deadline) {
    try {
      const hs = await Promise.all(cluster.nodes.map(async (n) => ({ id: n.id, ...(await n.cluster.hashState({ deadlineMs: 2_000 })) })));
      const first = hs[0];
      if (first !== undefined && hs.every((h) => h.sha256 === first.sha256)) return null;
      last = hs.map((h) => `${h.id}@${h.appliedIndex}:${h.sha256.slice(0, 12)}`).join(' ');
    } catch (err) {
      last = (err as Error).message;
    }
    await sleep(200);
  }
  return `state hashes differ after ${timeoutMs} ms: ${last}`;
}

/** formatReport: the run's summary, a few lines. */
export function formatReport(r: ChaosReport): string {
  const lines = [
    `chaos ${r.ok ? 'PASSED' : 'FAILED'}: ${r.nodes} nodes, seed ${r.seed}, ${r.seconds} s, ${r.rounds} fault rounds, ${r.tls ? 'TLS on (peers: mutual TLS through the proxies; clients: TLS + API key)' : 'plaintext'}`,
    `  faults: ${Object.entries(r.faults).map(([k, v]) => `${k} ${v}`).join(', ')}`,
    `  message faults injected: dropped ${r.messageFaults.dropped}, duplicated ${r.messageFaults.duplicated}, corrupted ${r.messageFaults.corrupted}; snapshots installed after a cut-off: ${r.snapshotInstalls}`,
    `  operations: ${Object.entries(r.ops).sort().map(([k, v]) => `${k} ${v}`).join(', ')}; write-once keys acknowledged: ${r.onceAcked}${Object.keys(r.onceFailed).length > 0 ? ` (not: ${Object.entries(r.onceFailed).map(([k, v]) => `${k} ${v}`).join(', ')})` : ''}`,
    `  linearizability: ${r.verdict.verdict} (${r.verdict.ops} ops checked over ${r.verdict.keys.length} keys, ${r.verdict.keys.reduce((s, k) => s + k.steps, 0)} search steps); final write ${r.finalWriteMs} ms`,
  ];
  if (r.tls) lines.push(`  TLS enforced on n1 before the faults: ${r.trust.join('; ')}`);
  for (const f of r.failures) lines.push(`  FAILURE: ${f}`);
  if (!r.ok) lines.push(`  history and logs kept in ${r.dir}`);
  return lines.join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string', default: '60' },
      seed: { type: 'string', default: String(Date.now() % 1_000_000) },
      nodes: { type: 'string', default: '3' },
      clients: { type: 'string', default: '6' },
      keys: { type: 'string', default: '4' },
      faults: { type: 'string' },
      dir: { type: 'string' },
      'log-level': { type: 'string' },
      plaintext: { type: 'boolean', default: false },
    },
  });
  const int = (name: string, v: string | undefined, min: number, max: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${name}: ${v} is not an integer in ${min}..${max}`);
    return n;
  };
  const faults = values.faults?.split(',').map((f) => f.trim()) as FaultKind[] | undefined;
  for (const f of faults ?? []) if (!FAULT_KINDS.includes(f)) throw new Error(`--faults: unknown fault ${f} (known: ${FAULT_KINDS.join(', ')})`);
  const report = await runChaos({
    seconds: int('seconds', values.seconds, 1, 24 * 3600),
    seed: int('seed', values.seed, 0, 2 ** 31),
    nodes: int('nodes', values.nodes, 1, 9),
    clients: int('clients', values.clients, 1, 64),
    keys: int('keys', values.keys, 1, 100),
    ...(faults !== undefined ? { faults } : {}),
    ...(values.dir !== undefined ? { dir: values.dir } : {}),
    ...(values['log-level'] !== undefined ? { logLevel: values['log-level'] } : {}),
    tls: values.plaintext !== true,
  });
  process.stdout.write(`${formatReport(report)}\n`);
  process.exitCode = report.ok ? 0 : 1;
}

if (process.argv[1] !== undefined && import.meta.url.endsWith(process.argv[1].replace(/\\/g, '/'))) {
  // grpc-js sets the TLS server name to the target's IP (the IP SAN is what is checked); Node warns once (DEP0123), as the CLI silences it.
  const emitWarning = process.emitWarning.bind(process) as (...args: unknown[]) => void;
  process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
    const code = typeof rest[0] === 'object' && rest[0] !== null ? (rest[0] as { code?: unknown }).code : rest[1];
    if (code !== 'DEP0123') emitWarning(warning, ...rest);
  }) as typeof process.emitWarning;
  main().catch((err: unknown) => {
    process.stderr.write(`chaos: ${(err as Error).message}\n`);
    process.exitCode = 2;
  });
}
