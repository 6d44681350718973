/**
 * bench:write — committed writes per second on a 3-node loopback cluster, the
 * longest write pause while the leader restarts as planned (SIGTERM: it hands
 * leadership over first; then started again on its data dir), and failover
 * time after SIGKILL of the leader.
 *
 *   npm run bench:write -- [--clients 64] [--seconds 15] [--value-bytes 100] [--no-etcd] [--etcd-tuned] [--tls on|off|compare] [--rounds 1]
 *                          [--etcd-tls on|off] [--warmup-seconds 2] [--no-planned-restart] [--no-failover]
 *                          [--op put|cas] [--keys 16] [--spread on|off] [--serve-flags "..."] [--no-node-runtime] [--members-from dist|tsx]
 *
 * The planned restart's writers (4, each put through the next member in turn with a 250 ms deadline, retried at
 * once) also count their failed writes from the SIGTERM on, by phase (handoff: until the old leader's process
 * exited; return: until a second after it answers again) and by kind (`phase: CODE: details`, digits masked):
 * a member down answers `No connection established`, one booting `is starting`, a refusal of the server names
 * itself (RESOURCE_EXHAUSTED ...), a write slower than the deadline DEADLINE_EXCEEDED (its outcome unknown).
 *
 * The members start as their launchers start them (the V8 flags and malloc
 * environment of src/cli/node-runtime.ts) unless --no-node-runtime, from
 * dist/ (what an installed snapcoord runs), built from this tree at the
 * bench's start (bench/lib/dist.ts), unless --members-from tsx: a member
 * restarted under tsx compiles its modules again as it loads them (1.5 s of
 * CPU to its port against 0.77 s from dist/, Dec 8), which the planned
 * restart's return pause then measures as well on a 2-core machine.
 * SNAPCOORD_BENCH_NODE_FLAGS (space-separated) adds node flags to every member
 * after those (a later V8 flag wins), e.g. "--trace-gc" or "--max-semi-space-size=8".
 * SNAPCOORD_BENCH_LOGS=DIR keeps each member's output in DIR (e.g. with --serve-flags "--log-level info").
 *
 * --spread on: snapcoord's clients spread over the three members as etcd3's
 * do (slot i talks to member i mod 3, over --channels channels to each); a
 * follower hands its writes to the leader in batches over the peer plane
 * (RaftService.Propose) and answers with the leader's apply result. off (the
 * default): every client talks to the leader. On this 2-core shared machine
 * (load 9-18), on made 0.14-0.82x the writes/s of off in 6 alternating
 * pairs, median 0.5x (server CPU per write 1.2-2.8x): a forwarded write
 * costs two more process wake-ups (client -> follower -> leader and back),
 * and with every core busy, spreading gains no CPU. Where the leader's one
 * thread is the limit and cores are idle, on spreads the client plane over
 * three processes.
 *
 * --op put (the default): each client puts unique keys. --op cas: each client
 * runs compare-and-swap transactions on `--keys` shared keys (contended): a
 * Txn whose compare is "the value is the one this client last saw" (or "the
 * key is absent", version 0), then put a new value, else get the current one
 * (which the client's next swap of that key expects) — on snapcoord
 * KVService.Txn, on etcd its Txn, the same logic. Every transaction counts as
 * a write (both branches go through consensus); the swapped share is printed.
 *
 * --tls on (the default, as `npm start` runs): mutual TLS between peers, TLS and
 * an API key on the client plane; off: plaintext, no key; compare: both in the
 * same run, then the ratio TLS on / TLS off. With --rounds N, compare runs N
 * rounds in alternating order (on, off, off, on, ...: drift of a shared
 * machine's load falls on both), prints each round's ratios (the two runs of
 * a round are next to each other in time) and their median. Without compare,
 * --rounds N alternates snapcoord and etcd the same way (snapcoord, etcd, etcd,
 * snapcoord, ...), prints each round's ratios to etcd, their median, and in how
 * many rounds both writes/s >= 1.0x and p99 <= 1.0x etcd's.
 *
 * Besides writes/s, each run (snapcoord and etcd) prints the CPU time (user +
 * system, from /proc/<pid>/stat) its three server processes used during the
 * load, per committed write: on a machine whose cores are shared, throughput
 * moves with other load, CPU per write much less. It is printed per member too,
 * busiest first (the leader, when the clients all talk to it). A run whose
 * highest term moved during the load says LEADER CHANGED: its figures are of
 * another set-up (writes lost in flight, ABORTED; then a follower forwarding
 * every write). On 2 shared cores at load 8-13 this happened in 5 of 16
 * of snapcoord's runs (Dec 2026): a follower heard nothing from its leader for its
 * election timeout (150-300 ms by default; etcd's is 1,000 ms), over pauses
 * such as a 60-115 ms mark-compact with CPU-starved marking steps of up to
 * 114 ms (--trace-gc through SNAPCOORD_BENCH_NODE_FLAGS).
 *
 * Runs snapcoord, then (when Debian's etcd-server is installed: /usr/bin/etcd)
 * a 3-member etcd on loopback with the same load, in the same run, and prints
 * snapcoord/etcd ratios. Figures only: nothing here passes or fails on time.
 * What is the same on both sides: 3 members on 127.0.0.1 and one disk, 64
 * closed-loop clients in this one Node.js process over @grpc/grpc-js (etcd3
 * uses it too), the value size, a synced log write before a write is
 * acknowledged (etcd: its WAL fsynced per Ready; snapcoord: one synced
 * RocksDB write per Ready), and the transport security (--etcd-tls follows
 * --tls unless given). What is not: snapcoord's clients all talk to the
 * leader over 4 channels unless --spread on, etcd3 spreads its calls over the
 * three members (a follower forwarding to its leader); snapcoord checks an
 * API key per call (etcd runs without auth).
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Command } from 'commander';
import { Etcd3 } from 'etcd3';

import { CompareResult, CompareTarget, TxnOpType, type Compare } from '../src/gen/snapcoord/v1/kv.js';
import { Role, type StatusResponse } from '../src/gen/snapcoord/v1/cluster.js';
import { ClusterClient } from '../src/client/cluster-client.js';
import { dialWithCa, type ClientDial } from '../src/client/dial.js';
import { KvClient } from '../src/client/kv-client.js';
import { caFiles, nodeCertFiles, writeCa, writeNodeCert } from '../src/tls/index.js';
import { ClosedLoop } from '../src/cli/bench/closed-loop.js';
import { readProc } from '../src/cli/bench/resources.js';
import { NODE_MALLOC_ENV, NODE_V8_FLAGS } from '../src/cli/node-runtime.js';
import { type Child, startProgram } from '../test/harness/child.js';
import { DIST_CLI, buildDist } from './lib/dist.js';
import { freePorts, startOnFreshPorts } from '../test/harness/ports.js';
import { serveListening } from '../test/harness/serve-process.js';
import { sleep, until } from '../test/harness/until.js';

interface LoadResult {
  /** swapped: with --op cas, the transactions whose compare held (NaN for puts). */
  readonly swapped: number;
  readonly writes: number;
  readonly errors: number;
  /** errorsByCode: the failures counted by gRPC status name (Recorder.errorsByCode). */
  readonly errorsByCode: ReadonlyMap<string, number>;
  readonly seconds: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
}

interface Target {
  readonly name: string;
  /** put writes one key through client slot `slot` (0..clients-1). */
  put(slot: number, key: string, value: Buffer): Promise<void>;
  /**
   * cas: one compare-and-swap transaction through client slot `slot`: when `key`
   * holds `expected` (absent: `expected` undefined) put `value`; else read it.
   * Answers whether it swapped and the key's value after the transaction.
   */
  cas(slot: number, key: string, expected: Buffer | undefined, value: Buffer): Promise<CasOutcome>;
  /** cpuSeconds: user + system CPU seconds each of the target's server processes has used so far (undefined: not measured). */
  cpuSeconds?(): number[];
  /** term: the highest Raft term any member reports now (a leader change during the load moves it). */
  term(): Promise<number>;
  /** killLeader SIGKILLs the current leader and returns a put that tries the survivors. */
  killLeader(): Promise<(key: string, value: Buffer) => Promise<void>>;
  /** anyPut: one put through a member that answers within 250 ms (each call goes to the next member in turn). */
  anyPut(key: string, value: Buffer): Promise<void>;
  /**
   * restartLeader: a planned restart of the current leader: SIGTERM (it hands leadership over first), then, once it
   * exited (onExited is called), the same member started again on its data dir and addresses; resolves when it answers again.
   */
  restartLeader(onExited: () => void): Promise<void>;
  stop(): Promise<void>;
}

interface CasOutcome {
  readonly swapped: boolean;
  readonly current: Buffer | undefined;
}

type Op = 'put' | 'cas';

/**
 * runLoad: `clients` closed loops of puts for `seconds`, measured by the same
 * ClosedLoop, Recorder and HDR histogram as `snapcoord bench write`.
 */
async function runLoad(t: Target, clients: number, seconds: number, valueBytes: number, op: Op, keys: number): Promise<LoadResult> {
  const value = Buffer.alloc(valueBytes, 0x61);
  let swapped = 0;
  // cas: per client, the value it last saw of each key (absent: it expects the key absent).
  const seen = Array.from({ length: clients }, () => new Map<number, Buffer>());
  const casOnce = async (c: number, i: number): Promise<void> => {
    const k = Math.floor(Math.random() * keys);
    const mine = seen[c] as Map<number, Buffer>;
    // A value no other client writes: the client slot and its sequence number, padded to the value size.
    const next = Buffer.alloc(valueBytes, 0x61);
    next.write(`${c}/${i}/`, 0, 'latin1');
    const r = await t.cas(c, `cas/${k}`, mine.get(k), next);
    if (r.swapped) swapped++;
    if (r.current === undefined) mine.delete(k);
    else mine.set(k, r.current);
  };
  const loop = new ClosedLoop({ workers: clients }, (c, i) => (op === 'cas' ? casOnce(c, i) : t.put(c, `bench/${c}/${i}`, value)));
  await sleep(seconds * 1000);
  await loop.stop();
  const f = loop.recorder;
  f.stop();
  const l = f.latency.summary();
  return { writes: f.ops, swapped: op === 'cas' ? swapped : NaN, errors: f.errors, errorsByCode: f.errorsByCode, seconds: f.elapsedSec(), p50Ms: l.p50Ms, p99Ms: l.p99Ms };
}

/** PlannedRestart: the longest times no write was acknowledged around a planned restart of the leader (ms). */
interface PlannedRestart {
  /** quietPauseMs: over the second before the SIGTERM (the steady state's). */
  readonly quietPauseMs: number;
  /** handoffPauseMs: from the SIGTERM until the old leader's process exited (its handoff and stop). */
  readonly handoffPauseMs: number;
  /** returnPauseMs: from then until a second after the member, started again, answers (its start and catch-up). */
  readonly returnPauseMs: number;
  /** failed: the writes that failed (each writer retries at once, through the next member), by phase, and by `phase: CODE: details` (digits masked). */
  readonly failed: { readonly handoff: number; readonly return: number; readonly kinds: ReadonlyMap<string, number> };
}

/** failureKind: a failed write's gRPC code name and details, digits and addresses masked (one kind per cause, not per port or index). */
function failureKind(err: unknown): string {
  const e = err as { code?: unknown; details?: unknown; message?: unknown };
  const code = typeof e.code === 'number' ? (grpcStatusNames[e.code] ?? String(e.code)) : 'ERROR';
  const details = String(e.details ?? e.message ?? err);
  return `${code}: ${details.replace(/\d+/g, '#').slice(0, 160)}`;
}

const grpcStatusNames: readonly string[] = ['OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND', 'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED'];

function formatFailed(f: PlannedRestart['failed'], kindsMax: number): string {
  const kinds = [...f.kinds].sort((a, b) => b[1] - a[1]).slice(0, kindsMax);
  return `failed writes: handoff ${f.handoff}, return ${f.return}${kinds.length > 0 ? ` (${kinds.map(([k, n]) => `${n}x ${k}`).join('; ')})` : ''}`;
}

/**
 * warmUp: `clients` closed loops of puts (keys warmup/…) for `seconds`, not measured: the client process, the
 * members and their connections warm up before the measured load (the first system run in a process would
 * otherwise pay the client's JIT warm-up in its p99, the second not).
 */
async function warmUp(t: Target, clients: number, seconds: number, valueBytes: number): Promise<void> {
  if (seconds <= 0) return;
  const value = Buffer.alloc(valueBytes, 0x77);
  const loop = new ClosedLoop({ workers: clients }, (c, i) => t.put(c, `warmup/${c}/${i}`, value));
  await sleep(seconds * 1000);
  await loop.stop();
}

/**
 * measurePlannedRestart: 4 writers put through whichever member answers, without pause, while the leader is restarted
 * as planned (restartLeader); the longest time no write was acknowledged in each phase.
 */
async function measurePlannedRestart(t: Target): Promise<PlannedRestart> {
  const value = Buffer.alloc(100, 0x63);
  let lastAck = performance.now();
  let pause = 0;
  let stop = false;
  // Failed writes: counted from the SIGTERM on, in the phase they failed in (none count in the steady second before).
  let phase: 'steady' | 'handoff' | 'return' = 'steady';
  const failed = { handoff: 0, return: 0, kinds: new Map<string, number>() };
  const writer = async (w: number): Promise<void> => {
    for (let i = 0; !stop; i++) {
      try {
        await t.anyPut(`planned/${w}/${i}`, value);
        const now = performance.now();
        pause = Math.max(pause, now - lastAck);
        lastAck = now;
      } catch (err) {
        if (phase !== 'steady') {
          failed[phase]++;
          const k = `${phase}: ${failureKind(err)}`;
          if (failed.kinds.has(k) || failed.kinds.size < 50) failed.kinds.set(k, (failed.kinds.get(k) ?? 0) + 1);
        }
        await sleep(2);
      }
    }
  };
  const writers = [0, 1, 2, 3].map(writer);
  await sleep(1_000);
  const quietPauseMs = pause;
  pause = 0;
  let handoffPauseMs = NaN;
  phase = 'handoff';
  try {
    await t.restartLeader(() => {
      // The pause under way counts for the phase it ends in.
      handoffPauseMs = Math.max(pause, performance.now() - lastAck);
      pause = 0;
      phase = 'return';
    });
    await sleep(1_000);
  } finally {
    stop = true;
    await Promise.all(writers);
  }
  return { quietPauseMs, handoffPauseMs, returnPauseMs: pause, failed };
}

async function measureFailover(t: Target): Promise<number> {
  const put = await t.killLeader();
  const killedAt = performance.now();
  const value = Buffer.alloc(100, 0x62);
  for (let i = 0; performance.now() - killedAt < 30_000; i++) {
    try {
      await put(`failover/${i}`, value);
      return performance.now() - killedAt;
    } catch {
      await sleep(5);
    }
  }
  return NaN;
}

/** processCpuSeconds: utime + stime of a live process (all its threads), read as `snapcoord bench` reads processes; 0 once it is gone. */
function processCpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    return readProc(pid).cpuSeconds;
  } catch {
    return 0;
  }
}

// ------------------------------------------------------------------ snapcoord

/** Sec: how the bench reaches a snapcoord cluster (TLS credentials and key, or plaintext). */
interface Sec {
  readonly dial: ClientDial;
  readonly serveFlags: (id: string) => string[];
}

const BENCH_KEY = 'bench-admin-key-0123456789abcdef';

async function security(dir: string, ids: readonly string[], tls: boolean): Promise<Sec> {
  if (!tls) return { dial: {}, serveFlags: () => ['--insecure-no-auth'] };
  const certDir = join(dir, 'tls');
  await writeCa(certDir);
  for (const id of ids) await writeNodeCert(certDir, id, { ips: ['127.0.0.1'] });
  const ca = caFiles(certDir).caFile;
  return {
    dial: dialWithCa(ca, BENCH_KEY),
    serveFlags: (id) => {
      const f = nodeCertFiles(certDir, id);
      return ['--api-key', BENCH_KEY, '--peer-cert', f.certFile, '--peer-key', f.keyFile, '--peer-ca', ca, '--cert', f.certFile, '--key', f.keyFile];
    },
  };
}

function statusOf(addr: string, sec: Sec): Promise<StatusResponse> {
  const c = new ClusterClient(addr, sec.dial);
  return c.status({ deadlineMs: 500 }).finally(() => c.close());
}

async function kvPut(c: KvClient, key: string, value: Buffer, deadlineMs: number): Promise<void> {
  await c.put({ key: Buffer.from(key), value }, { deadlineMs });
}

async function kvCas(c: KvClient, key: string, expected: Buffer | undefined, value: Buffer, deadlineMs: number): Promise<CasOutcome> {
  const k = Buffer.from(key);
  const empty = new Uint8Array(0);
  const zero = { key: k, value: empty, version: 0n, createRevision: 0n, modRevision: 0n, result: CompareResult.COMPARE_RESULT_EQUAL };
  const compare: Compare =
    expected === undefined ? { ...zero, target: CompareTarget.COMPARE_TARGET_VERSION } : { ...zero, target: CompareTarget.COMPARE_TARGET_VALUE, value: expected };
  const req = {
    compare: [compare],
    success: [{ type: TxnOpType.TXN_OP_TYPE_PUT, key: k, value, prevKv: false }],
    failure: [{ type: TxnOpType.TXN_OP_TYPE_GET, key: k, value: empty, prevKv: false }],
  };
  const res = await c.txn(req, { deadlineMs });
  if (res.succeeded) return { swapped: true, current: value };
  const found = res.responses[0];
  return { swapped: false, current: found?.found === true && found.kv !== undefined ? Buffer.from(found.kv.value) : undefined };
}

/** SnapcoordRun: how the bench starts snapcoord's members: extra serve flags, and whether as their launchers do (cli/node-runtime.ts). */
interface SnapcoordRun {
  readonly serveFlags: readonly string[];
  readonly nodeRuntime: boolean;
  /** entry: how a member runs the server: dist/'s main.js, or src/cli/main.ts under tsx. */
  readonly entry: readonly string[];
}

/** startSnapcoord: three members on new ports, in `dir`; a start that found a port taken is made again on new ones (startOnFreshPorts). */
function startSnapcoord(dir: string, channels: number, tls: boolean, spread: boolean, run: SnapcoordRun): Promise<Target> {
  return startOnFreshPorts('starting the snapcoord members', () => startSnapcoordOnce(dir, channels, tls, spread, run));
}

async function startSnapcoordOnce(dir: string, channels: number, tls: boolean, spread: boolean, run: SnapcoordRun): Promise<Target> {
  const ports = await freePorts(9);
  const ids = ['n1', 'n2', 'n3'];
  const sec = await security(dir, ids, tls);
  // Client plane (KV, Status) on grpcAddr, peer plane (Raft) on peerAddr: members are named by their peer addresses.
  const grpcAddr = (i: number): string => `127.0.0.1:${ports[i] ?? 0}`;
  const peerAddr = (i: number): string => `127.0.0.1:${ports[i + 6] ?? 0}`;
  const peers = ids.map((id, i) => `${id}=${peerAddr(i)}`).join(',');
  const children = new Map<string, Child>();
  const spawn = (id: string, i: number): Child =>
    startProgram(id, process.execPath, [
      ...(run.nodeRuntime ? NODE_V8_FLAGS : []),
      ...(process.env.SNAPCOORD_BENCH_NODE_FLAGS?.split(' ').filter((f) => f !== '') ?? []),
      ...(process.env.SNAPCOORD_BENCH_PROF !== undefined ? ['--cpu-prof', `--cpu-prof-dir=${process.env.SNAPCOORD_BENCH_PROF}`] : []),
      ...run.entry, 'serve',
      '--id', id, '--grpc', grpcAddr(i), '--peer-listen', peerAddr(i), '--http', `127.0.0.1:${ports[i + 3] ?? 0}`,
      '--peers', peers, '--data-dir', join(dir, id), '--log-level', 'warn', ...sec.serveFlags(id), ...run.serveFlags,
    ], run.nodeRuntime ? { ...NODE_MALLOC_ENV } : {});
  ids.forEach((id, i) => children.set(id, spawn(id, i)));
  // Every member listens before anything talks to it (90 s: see findLeader); one that found its port taken fails the attempt, which leaves nothing behind.
  try {
    await Promise.all(ids.map((id) => serveListening(children.get(id) as Child, id, 90_000)));
  } catch (err) {
    await Promise.all([...children.values()].map((c) => c.kill('SIGKILL')));
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  /** retired: members' processes stopped and started again (restartLeader), whose output SNAPCOORD_BENCH_LOGS keeps too. */
  const retired: [string, Child][] = [];
  const addrOf = new Map(ids.map((id, i) => [id, grpcAddr(i)]));
  const anyClients = ids.map((id) => new KvClient(addrOf.get(id) ?? '', sec.dial));
  let anyNext = 0;
  // 90 s: three tsx processes compiling the server at once start slowly on a loaded 2-core machine (20 s ran out at load 20).
  const findLeader = (): Promise<string> =>
    until('a snapcoord leader', 90_000, async () => {
      for (const [id, addr] of addrOf) {
        if (children.get(id)?.running === false) continue;
        const st = await statusOf(addr, sec).catch(() => undefined);
        if (st?.role === Role.ROLE_LEADER) return st.id;
      }
      return undefined;
    });
  const leader = await findLeader();
  // Spread: slot s talks to member s mod 3 (over `channels` channels to each), as etcd3 spreads its calls; else all to the leader.
  const targets = spread ? ids.map((id) => addrOf.get(id) ?? '') : [addrOf.get(leader) ?? ''];
  const clients = targets.map((addr) =>
    Array.from({ length: channels }, (_, i) => new KvClient(addr, { ...sec.dial, channelOptions: { 'grpc.channel_id': i } })),
  );
  const clientOf = (slot: number): KvClient => {
    const m = clients[slot % clients.length] as KvClient[];
    return m[Math.floor(slot / clients.length) % channels] as KvClient;
  };
  return {
    name: 'snapcoord',
    put: (slot, key, value) => kvPut(clientOf(slot), key, value, 5_000),
    cas: (slot, key, expected, value) => kvCas(clientOf(slot), key, expected, value, 5_000),
    cpuSeconds: () => [...children.values()].map((c) => processCpuSeconds(c.proc.pid)),
    async term() {
      const terms = await Promise.all([...addrOf.values()].map((a) => statusOf(a, sec).then((st) => Number(st.term), () => 0)));
      return Math.max(...terms);
    },
    async killLeader() {
      const id = await findLeader();
      const child = children.get(id);
      if (child !== undefined) await child.kill('SIGKILL');
      const survivors = ids.filter((x) => x !== id).map((x) => new KvClient(addrOf.get(x) ?? '', sec.dial));
      let n = 0;
      return (key, value) => kvPut(survivors[n++ % survivors.length] as KvClient, key, value, 250);
    },
    anyPut: (key, value) => kvPut(anyClients[anyNext++ % anyClients.length] as KvClient, key, value, 250),
    async restartLeader(onExited) {
      const id = await findLeader();
      const i = ids.indexOf(id);
      const stopped = children.get(id);
      await stopped?.kill('SIGTERM', 10_000);
      onExited();
      if (stopped !== undefined) retired.push([id, stopped]);
      children.set(id, spawn(id, i));
      await until(`${id} to answer again`, 90_000, () => statusOf(grpcAddr(i), sec).then(() => true, () => undefined));
    },
    async stop() {
      for (const c of clients.flat()) c.close();
      for (const c of anyClients) c.close();
      await Promise.all([...children.values()].map((c) => c.kill('SIGTERM')));
      const logs = process.env.SNAPCOORD_BENCH_LOGS;
      if (logs === undefined) return;
      for (const [id, c] of children) await writeFile(join(logs, `${basename(dir)}-${id}.log`), c.output);
      // A member restarted (the planned restart): its first run's output too.
      for (const [n, [id, c]] of retired.entries()) await writeFile(join(logs, `${basename(dir)}-${id}.before-restart-${n + 1}.log`), c.output);
    },
  };
}

// ------------------------------------------------------------------ etcd

/**
 * etcdTls: TLS for an etcd member as snapcoord's --tls on gives its nodes: the client plane over TLS (server
 * certificate signed by the CA; the client checks it), the peer plane over mutual TLS. Null: plaintext.
 */
interface EtcdTls {
  readonly flags: (id: string) => string[];
  readonly caFile: string;
}

async function etcdSecurity(dir: string, ids: readonly string[], tls: boolean): Promise<EtcdTls | null> {
  if (!tls) return null;
  const certDir = join(dir, 'tls');
  await writeCa(certDir);
  for (const id of ids) await writeNodeCert(certDir, id, { ips: ['127.0.0.1'] });
  const ca = caFiles(certDir).caFile;
  return {
    caFile: ca,
    flags: (id) => {
      const f = nodeCertFiles(certDir, id);
      return [
        '--cert-file', f.certFile, '--key-file', f.keyFile,
        '--peer-cert-file', f.certFile, '--peer-key-file', f.keyFile, '--peer-trusted-ca-file', ca, '--peer-client-cert-auth',
      ];
    },
  };
}

async function startEtcd(dir: string, tuned: boolean, tls: boolean): Promise<Target> {
  const ports = await freePorts(6);
  const ids = ['e1', 'e2', 'e3'];
  const sec = await etcdSecurity(dir, ids, tls);
  const scheme = sec === null ? 'http' : 'https';
  const client = (i: number): string => `${scheme}://127.0.0.1:${ports[i] ?? 0}`;
  const peer = (i: number): string => `${scheme}://127.0.0.1:${ports[i + 3] ?? 0}`;
  const initial = ids.map((id, i) => `${id}=${peer(i)}`).join(',');
  const children = new Map<string, Child>();
  // A restarted member finds its data dir and ignores the --initial-* flags (etcd's own rule).
  const spawn = (id: string, i: number): Child =>
    startProgram(id, '/usr/bin/etcd', [
      '--name', id, '--data-dir', join(dir, id),
      '--listen-client-urls', client(i), '--advertise-client-urls', client(i),
      '--listen-peer-urls', peer(i), '--initial-advertise-peer-urls', peer(i),
      '--initial-cluster', initial, '--initial-cluster-state', 'new', '--initial-cluster-token', 'bench',
      ...(tuned ? ['--heartbeat-interval', '50', '--election-timeout', '300'] : []),
      ...(sec === null ? [] : sec.flags(id)),
    ], { ETCD_UNSUPPORTED_ARCH: '' });
  ids.forEach((id, i) => children.set(id, spawn(id, i)));
  let anyNext = 0;
  const credentials = sec === null ? {} : { credentials: { rootCertificate: await readFile(sec.caFile) } };
  const perHost = ids.map((_, i) => new Etcd3({ hosts: client(i), ...credentials }));
  const all = new Etcd3({ hosts: ids.map((_, i) => client(i)), ...credentials });
  const findLeader = (): Promise<number> =>
    until('an etcd leader', 20_000, async () => {
      for (let i = 0; i < ids.length; i++) {
        if (children.get(ids[i] ?? '')?.running === false) continue;
        const st = await (perHost[i] as Etcd3).maintenance.status().catch(() => undefined);
        if (st !== undefined && st.leader !== '0' && st.leader === st.header.member_id) return i;
      }
      return undefined;
    });
  await findLeader();
  await all.put('warmup').value('x');
  return {
    name: 'etcd',
    cpuSeconds: () => [...children.values()].map((c) => processCpuSeconds(c.proc.pid)),
    async term() {
      const terms = await Promise.all(perHost.map((c) => c.maintenance.status().then((st) => Number(st.raftTerm), () => 0)));
      return Math.max(...terms);
    },
    put: async (_slot, key, value) => {
      await all.put(key).value(value);
    },
    cas: async (_slot, key, expected, value) => {
      const cmp = expected === undefined ? all.if(key, 'Version', '==', 0) : all.if(key, 'Value', '==', expected);
      const res = await cmp.then(all.put(key).value(value)).else(all.get(key)).commit();
      if (res.succeeded) return { swapped: true, current: value };
      const kv = res.responses[0]?.response_range?.kvs[0];
      return { swapped: false, current: kv === undefined ? undefined : Buffer.from(kv.value) };
    },
    async killLeader() {
      const i = await findLeader();
      const child = children.get(ids[i] ?? '');
      if (child !== undefined) await child.kill('SIGKILL');
      const survivors = perHost.filter((_, j) => j !== i);
      let n = 0;
      return async (key, value) => {
        const c = survivors[n++ % survivors.length] as Etcd3;
        await Promise.race([
          c.put(key).value(value),
          sleep(250).then(() => Promise.reject(new Error('deadline'))),
        ]);
      };
    },
    anyPut: async (key, value) => {
      const c = perHost[anyNext++ % perHost.length] as Etcd3;
      await Promise.race([c.put(key).value(value), sleep(250).then(() => Promise.reject(new Error('deadline')))]);
    },
    async restartLeader(onExited) {
      const i = await findLeader();
      const id = ids[i] ?? '';
      await children.get(id)?.kill('SIGTERM', 10_000);
      onExited();
      children.set(id, spawn(id, i));
      await until(`${id} to answer again`, 30_000, () => (perHost[i] as Etcd3).maintenance.status().then(() => true, () => undefined));
    },
    async stop() {
      all.close();
      for (const c of perHost) c.close();
      // The leader first, one at a time: etcd stalls ~7 s per member otherwise (TOOLCHAIN.md).
      for (const c of children.values()) await c.kill('SIGTERM', 3_000);
    },
  };
}

// ------------------------------------------------------------------ main

/** plannedRestarts: --planned-restarts, how many planned leader restarts each system's run makes (1..40). */
let plannedRestarts = 1;

async function bench(name: string, start: () => Promise<Target>, clients: number, seconds: number, valueBytes: number, failover: boolean, op: Op, keys: number, plannedRestart: boolean, warmupSeconds: number) {
  const t = await start();
  try {
    await warmUp(t, clients, warmupSeconds, valueBytes);
    const term0 = await t.term();
    const cpu0 = t.cpuSeconds?.();
    const client0 = process.cpuUsage();
    const load = await runLoad(t, clients, seconds, valueBytes, op, keys);
    const client = process.cpuUsage(client0);
    const cpu1 = t.cpuSeconds?.();
    // A leader change during the load (an election timeout missed under CPU starvation) changes what was measured:
    // clients then talk to a follower that forwards. Said, not hidden.
    const term1 = await t.term();
    // CPU of this process (the clients' side: the same for both systems but for the client library) per committed write (ms).
    const clientCpuMsPerWrite = (client.user + client.system) / 1000 / load.writes;
    // CPU of the server processes per committed write (ms), over the load only.
    // Per member too, busiest first (the leader, when every client talks to it).
    const memberMsPerWrite = cpu0 !== undefined && cpu1 !== undefined ? cpu1.map((c, i) => ((c - (cpu0[i] ?? 0)) * 1000) / load.writes).sort((a, b) => b - a) : [];
    const cpuMsPerWrite = memberMsPerWrite.length > 0 ? memberMsPerWrite.reduce((a, b) => a + b, 0) : NaN;
    let planned: PlannedRestart = { quietPauseMs: NaN, handoffPauseMs: NaN, returnPauseMs: NaN, failed: { handoff: 0, return: 0, kinds: new Map() } };
    // --planned-restarts n: the restart n times in a row (whoever leads then), each printed; the summary holds the worst of each phase.
    for (let k = 1; plannedRestart && k <= plannedRestarts; k++) {
      const p = await measurePlannedRestart(t);
      if (plannedRestarts > 1) console.log(`  planned restart ${k}/${plannedRestarts}: handoff ${p.handoffPauseMs.toFixed(0)} ms, return ${p.returnPauseMs.toFixed(0)} ms (steady ${p.quietPauseMs.toFixed(0)} ms); ${formatFailed(p.failed, 3)}`);
      const kinds = new Map(planned.failed.kinds);
      for (const [kind, n] of p.failed.kinds) kinds.set(kind, (kinds.get(kind) ?? 0) + n);
      planned = k === 1 ? p : {
        quietPauseMs: Math.max(planned.quietPauseMs, p.quietPauseMs),
        handoffPauseMs: Math.max(planned.handoffPauseMs, p.handoffPauseMs),
        returnPauseMs: Math.max(planned.returnPauseMs, p.returnPauseMs),
        failed: { handoff: planned.failed.handoff + p.failed.handoff, return: planned.failed.return + p.failed.return, kinds },
      };
    }
    const failoverMs = failover ? await measureFailover(t) : NaN;
    const wps = load.writes / load.seconds;
    console.log(
      `${name.padEnd(10)} ${wps.toFixed(0).padStart(7)} writes/s  p50 ${load.p50Ms.toFixed(1)} ms  p99 ${load.p99Ms.toFixed(1)} ms  ` +
        (op === 'cas' ? `swapped ${((100 * load.swapped) / Math.max(1, load.writes)).toFixed(0)}%  ` : '') +
        `errors ${load.errors}${load.errors > 0 ? ` (${[...load.errorsByCode].map(([c, n]) => `${c} ${n}`).join(', ')})` : ''}  failover ${failoverMs.toFixed(0)} ms` +
        (plannedRestart
          ? `  planned leader restart${plannedRestarts > 1 ? ` (worst of ${plannedRestarts})` : ''}, longest write pause: handoff ${planned.handoffPauseMs.toFixed(0)} ms, return ${planned.returnPauseMs.toFixed(0)} ms (steady ${planned.quietPauseMs.toFixed(0)} ms), ${plannedRestarts > 1 ? 'all ' : ''}${formatFailed(planned.failed, 20)}`
          : '') +
        (Number.isNaN(cpuMsPerWrite) ? '' : `  server CPU ${cpuMsPerWrite.toFixed(2)} ms/write (3 members, user+sys: ${memberMsPerWrite.map((m) => m.toFixed(2)).join(' + ')})`) +
        `  client CPU ${clientCpuMsPerWrite.toFixed(2)} ms/write` +
        (term1 !== term0 ? `  LEADER CHANGED during the load (term ${term0} -> ${term1})` : ''),
    );
    return { wps, ...load, failoverMs, handoffPauseMs: planned.handoffPauseMs, cpuMsPerWrite };
  } finally {
    await t.stop();
  }
}

async function main(): Promise<void> {
  const program = new Command()
    .option('--clients <n>', 'concurrent clients', '64')
    .option('--seconds <n>', 'load duration per system', '15')
    .option('--value-bytes <n>', 'value size', '100')
    .option('--channels <n>', 'gRPC channels to each snapcoord member the clients talk to', '4')
    .option('--serve-flags <flags>', 'extra flags for every snapcoord serve, space-separated (e.g. "--heartbeat-ticks 10 --election-timeout-ticks 50")', '')
    .option('--no-node-runtime', 'start the members with plain `node`, without the V8 flags and malloc environment of their launchers (cli/node-runtime.ts)')
    .option('--members-from <how>', 'dist: the members run dist/ (built from this tree at the start, as an installed snapcoord runs); tsx: src/ under tsx (no build, a slower start)', 'dist')
    .option('--spread <mode>', "on: snapcoord's clients spread over the three members (as etcd3's); off: all talk to the leader", 'off')
    .option('--no-etcd', 'skip the etcd comparison')
    .option('--no-failover', 'skip the failover measurement (leaves every process to exit cleanly, e.g. for --cpu-prof)')
    .option('--warmup-seconds <n>', 'puts before each system\'s measured load, not counted (warms the client process, the members and their connections)', '2')
    .option('--no-planned-restart', 'skip the planned leader restart (SIGTERM, then started again) and its longest write pause')
    .option('--planned-restarts <n>', 'planned leader restarts in a row per system (1..40), each printed; the summary holds the worst of each phase', '1')
    .option('--etcd-tuned', 'run etcd with --heartbeat-interval 50 --election-timeout 300')
    .option('--etcd-tls <mode>', "etcd's TLS, on or off (default: as --tls: on for on and compare)")
    .option('--tls <mode>', 'on (mutual TLS between peers, TLS + key for clients), off (plaintext), compare (both, and the ratio)', 'on')
    .option('--op <op>', 'put (unique keys) or cas (compare-and-swap transactions on --keys shared keys)', 'put')
    .option('--keys <n>', 'with --op cas: the shared keys the transactions contend on', '16')
    .option('--rounds <n>', 'rounds of both sides in alternating order (with --tls compare: TLS on and off; else snapcoord and etcd), each round\'s ratios and their median', '1')
    .parse();
  const o = program.opts<{ nodeRuntime: boolean; membersFrom: string; serveFlags: string; spread: string; clients: string; seconds: string; valueBytes: string; channels: string; etcd: boolean; failover: boolean; plannedRestart: boolean; plannedRestarts: string; warmupSeconds: string; etcdTuned?: boolean; etcdTls?: string; tls: string; rounds: string; op: string; keys: string }>();
  if (o.etcdTls !== undefined && o.etcdTls !== 'on' && o.etcdTls !== 'off') throw new Error(`--etcd-tls: "${o.etcdTls}" is not on or off`);
  if (o.membersFrom !== 'dist' && o.membersFrom !== 'tsx') throw new Error(`--members-from: "${o.membersFrom}" is not dist or tsx`);
  if (o.spread !== 'on' && o.spread !== 'off') throw new Error(`--spread: "${o.spread}" is not on or off`);
  if (o.op !== 'put' && o.op !== 'cas') throw new Error(`--op: "${o.op}" is not put or cas`);
  const op: Op = o.op;
  const serveFlags = o.serveFlags.split(' ').filter((f) => f !== '');
  const keys = Number(o.keys);
  if (!Number.isInteger(keys) || keys < 1) throw new Error('--keys must be a positive integer');
  if (!['on', 'off', 'compare'].includes(o.tls)) throw new Error(`--tls: "${o.tls}" is not on, off or compare`);
  plannedRestarts = Number(o.plannedRestarts);
  if (!Number.isInteger(plannedRestarts) || plannedRestarts < 1 || plannedRestarts > 40) throw new Error('--planned-restarts must be 1..40');
  const rounds = Number(o.rounds);
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 20) throw new Error('--rounds must be 1..20');
  const clients = Number(o.clients);
  const seconds = Number(o.seconds);
  const warmupSeconds = Number(o.warmupSeconds);
  if (!Number.isFinite(warmupSeconds) || warmupSeconds < 0 || warmupSeconds > 600) throw new Error('--warmup-seconds must be 0..600');
  const valueBytes = Number(o.valueBytes);
  if (o.membersFrom === 'dist') await buildDist((line) => console.log(line));
  const entry = o.membersFrom === 'dist' ? [DIST_CLI] : ['--import', 'tsx', 'src/cli/main.ts'];
  const dir = await mkdtemp(join(tmpdir(), 'snapcoord-bench-write-'));
  console.log(
    `bench:write — 3 nodes on 127.0.0.1, ${clients} clients, ${op === 'cas' ? `compare-and-swap on ${keys} keys` : 'puts'}, ${valueBytes}-byte values, ${seconds} s each after ${warmupSeconds} s of warm-up, data in ${dir}`,
  );
  try {
    const tlsOn = o.tls !== 'off';
    type Run = Awaited<ReturnType<typeof bench>>;
    const runSnapcoord = (tls: boolean, r: number): Promise<Run> =>
      bench(tls ? 'snapcoord' : 'snapcoord-plain', () => startSnapcoord(join(dir, `snapcoord${tls ? '' : '-plain'}-${r}`), Number(o.channels), tls, o.spread === 'on', { serveFlags, nodeRuntime: o.nodeRuntime, entry }), clients, seconds, valueBytes, o.failover, op, keys, o.plannedRestart, warmupSeconds);
    const median = (xs: number[]): number => {
      const v = [...xs].sort((a, b) => a - b);
      const m = Math.floor(v.length / 2);
      return v.length % 2 === 1 ? (v[m] ?? NaN) : ((v[m - 1] ?? NaN) + (v[m] ?? NaN)) / 2;
    };
    const withEtcd = o.etcd && existsSync('/usr/bin/etcd');
    // etcd gets the security snapcoord ran with (--tls on: TLS on its client plane, mutual TLS between members), unless
    // --etcd-tls says otherwise; snapcoord's API key has no counterpart here (etcd's auth would add a token per call).
    const etcdTls = o.etcdTls === undefined ? tlsOn : o.etcdTls === 'on';
    const runEtcd = (r: number): Promise<Run> =>
      bench(`etcd${o.etcdTuned === true ? '-tuned' : ''}${etcdTls ? '' : '-plain'}`, () => startEtcd(join(dir, `etcd-${r}`), o.etcdTuned === true, etcdTls), clients, seconds, valueBytes, o.failover, op, keys, o.plannedRestart, warmupSeconds);
    const etcdLine = (what: string, rs: { wps: number; p99Ms: number; failoverMs: number; handoffPauseMs: number; cpuMsPerWrite: number }): string =>
      `ratio snapcoord/etcd${what}: writes/s ${rs.wps.toFixed(2)}x  p99 ${rs.p99Ms.toFixed(2)}x  ` +
      `failover ${rs.failoverMs.toFixed(2)}x  leader handoff pause ${rs.handoffPauseMs.toFixed(2)}x  server CPU per write ${rs.cpuMsPerWrite.toFixed(2)}x (lower is better for p99, failover and CPU)`;
    if (o.tls !== 'compare' && rounds > 1 && withEtcd) {
      // Rounds of both in alternating order (snapcoord, etcd | etcd, snapcoord | ...): on a shared machine the load
      // drifts within a run; each round's two runs are next to each other in time, and the ratios are per round.
      const mine: Run[] = [];
      const etcds: Run[] = [];
      for (let r = 1; r <= rounds; r++) {
        console.log(`round ${r}:`);
        for (const who of r % 2 === 1 ? ['snapcoord', 'etcd'] : ['etcd', 'snapcoord']) {
          if (who === 'snapcoord') mine.push(await runSnapcoord(tlsOn, r));
          else etcds.push(await runEtcd(r));
        }
      }
      type K = 'wps' | 'p99Ms' | 'failoverMs' | 'handoffPauseMs' | 'cpuMsPerWrite';
      const ratio = (k: K): number[] => mine.map((x, i) => x[k] / (etcds[i] as Run)[k]);
      const keysOf: K[] = ['wps', 'p99Ms', 'failoverMs', 'handoffPauseMs', 'cpuMsPerWrite'];
      const rs = Object.fromEntries(keysOf.map((k) => [k, ratio(k)])) as Record<K, number[]>;
      for (let i = 0; i < rounds; i++) console.log(etcdLine(` round ${i + 1}`, Object.fromEntries(keysOf.map((k) => [k, rs[k][i] ?? NaN])) as Record<K, number>));
      console.log(etcdLine(` (median of ${rounds} rounds)`, Object.fromEntries(keysOf.map((k) => [k, median(rs[k])])) as Record<K, number>));
      const met = rs.wps.filter((w, i) => w >= 1 && (rs.p99Ms[i] ?? Infinity) <= 1).length;
      console.log(`rounds with writes/s >= 1.0x and p99 <= 1.0x etcd's: ${met} of ${rounds}`);
      return;
    }
    let ours: Run;
    if (o.tls === 'compare') {
      const on: Run[] = [];
      const off: Run[] = [];
      for (let r = 1; r <= rounds; r++) {
        if (rounds > 1) console.log(`round ${r}:`);
        // Alternating order (on, off | off, on | ...), so a drifting background load falls on both.
        for (const tls of r % 2 === 1 ? [true, false] : [false, true]) (tls ? on : off).push(await runSnapcoord(tls, r));
      }
      const byWps = [...on].sort((a, b) => a.wps - b.wps);
      ours = byWps[Math.floor(byWps.length / 2)] as Run;
      // Ratios per round (on / off of the same round), then their median.
      const ratio = (k: 'wps' | 'p99Ms' | 'failoverMs' | 'cpuMsPerWrite'): number[] => on.map((x, i) => x[k] / ((off[i] as Run)[k]));
      const line = (what: string, rs: { wps: number; p99Ms: number; failoverMs: number; cpuMsPerWrite: number }): string =>
        `ratio TLS on/off${what}: writes/s ${rs.wps.toFixed(2)}x  p99 ${rs.p99Ms.toFixed(2)}x  failover ${rs.failoverMs.toFixed(2)}x  node CPU per write ${rs.cpuMsPerWrite.toFixed(2)}x`;
      const [w, p, f, c] = [ratio('wps'), ratio('p99Ms'), ratio('failoverMs'), ratio('cpuMsPerWrite')];
      if (rounds > 1) for (let i = 0; i < rounds; i++) console.log(line(` round ${i + 1}`, { wps: w[i] ?? NaN, p99Ms: p[i] ?? NaN, failoverMs: f[i] ?? NaN, cpuMsPerWrite: c[i] ?? NaN }));
      console.log(line(rounds > 1 ? ` (median of ${rounds} rounds)` : '', { wps: median(w), p99Ms: median(p), failoverMs: median(f), cpuMsPerWrite: median(c) }));
    } else {
      ours = await runSnapcoord(tlsOn, 1);
    }
    if (withEtcd) {
      const theirs = await runEtcd(1);
      console.log(etcdLine('', { wps: ours.wps / theirs.wps, p99Ms: ours.p99Ms / theirs.p99Ms, failoverMs: ours.failoverMs / theirs.failoverMs, handoffPauseMs: ours.handoffPauseMs / theirs.handoffPauseMs, cpuMsPerWrite: ours.cpuMsPerWrite / theirs.cpuMsPerWrite }));
    } else if (o.etcd) {
      console.log('etcd comparison skipped: /usr/bin/etcd not found (apt-get install etcd-server etcd-client)');
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : String(e));
  process.exit(1);
});
