/**
 * bench:snapshot — snapshot streaming throughput and memory, against ceilings
 * measured in the same run on the same bytes.
 *
 *   npm run bench:snapshot -- [--state-bytes 1GiB] [--streams 1] [--chunk-bytes 1MiB]
 *                             [--rounds 2] [--no-install] [--keep] [--dir /tmp] [--cpu-prof DIR]
 *                             [--tls on|off|compare] [--dist] [--parts]
 *
 * --tls on (the default, as `npm start` runs the peer plane): the sender
 * serves with mutual TLS (its certificate, client certificates required,
 * one cluster CA) and every receiver dials with its own certificate, as
 * nodes do; off: plaintext; compare: both in the same run, alternating
 * within each round, then the ratio TLS on / TLS off of MB/s and CPU.
 * The raw ceiling runs over the same security as the fetch beside it.
 *
 * 1. Builds a state of --state-bytes (keys + values; ~4 KiB pseudo-random
 *    values, unique keys) in a RocksStorage by applying KV batch commands,
 *    and snapshots it with SnapshotManager.create (the archive: tar.gz).
 * 2. Ceilings: SHA-256 of 1 MiB buffers (this process), disk write + fsync
 *    of the archive's size, and a raw grpc-js server stream of the archive's
 *    bytes (no protobuf, no hashing, 16 MiB client window, bytes discarded;
 *    the sender reads into the buffers of chunks already sent, as the fetch's
 *    sender does, so neither pays a fresh 1 MiB buffer per chunk).
 * 3. snapcoord's path: a sender process serving FetchSnapshot
 *    (createRaftService + readChunks) and a receiver process running the
 *    follower's fetch (SnapshotManager.fetch: fetchSnapshot checking each
 *    chunk's SHA-256, written once into the snapshot store through its sink,
 *    fsync, rename; the whole digest is verified by the install), with
 *    --streams concurrent streams, each into its own store.
 * 4. The full follower install (SnapshotManager.fetch + install into a fresh
 *    RocksStorage), one stream.
 * Raw and fetch alternate for --rounds rounds (per security with compare); the best of each is compared.
 * --parts: each round also runs, between them, the fetch's parts on their own (snapshot-receiver.ts):
 * `decode` (FetchSnapshot decoded, chunks discarded), `hash` (fetchSnapshot checking every chunk's SHA-256
 * on the main thread, nothing written), `hash-worker` (the same, hashed on a worker thread) and
 * `sink-worker` (hashed on a worker and written through an ArchiveSink, as the fetch writes); the
 * summary gives each one's CPU per GB by side and thread (medians of the rounds), so what each step of
 * the fetch adds to the raw stream's CPU reads off one run: decode - raw, hash - decode, fetch - hash.
 * Sender and receiver are separate processes (fresh ones per measurement),
 * each sampling its RSS every 100 ms, started with a node's V8 flags and
 * malloc environment (src/cli/node-runtime.ts), so their RSS is a node's
 * whatever the caller's environment. Figures only: nothing asserts on time.
 *
 * --dist: the sender and receiver run from dist/ (compiled JavaScript, as an
 * installed node runs; build it first: `npx tsc -p tsconfig.json`), not from
 * the sources under tsx, whose loader compiles every module a process or a
 * worker thread loads as it loads it (~0.7-1.2 s of CPU for the install's
 * snapshot worker at load 15, inside the measured install).
 */
import { randomFillSync, createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, open, rm, stat, statfs } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Command } from 'commander';

import { DEFAULT_SNAPSHOT_POLICY, SnapshotManager } from '../src/node/snapshots.js';
import { silentLogger } from '../src/node/logger.js';
import type { Membership } from '../src/raft/types.js';
import { encodeCommand, type KvPut } from '../src/fsm/kv-command.js';
import { caFiles, nodeCertFiles, writeCa, writeNodeCert } from '../src/tls/index.js';
import { RocksStorage } from '../src/storage/rocks-storage.js';
import { StateMachine } from '../src/fsm/state-machine.js';
import type { ApplyItem } from '../src/fsm/types.js';
import { type Child, startProgram } from '../test/harness/child.js';
import { freePorts } from '../test/harness/ports.js';
import { sleep } from '../test/harness/until.js';
import { fmtMiB, fmtSize, mbps, parseBytes, parseReports } from './lib/snapshot-common.js';
import { systemClock } from '../src/node/clock.js';
import { NODE_V8_FLAGS, nodeProcessEnv } from '../src/cli/node-runtime.js';
import { fmtThreadCpu } from './lib/thread-cpu.js';

const program = new Command()
  .name('bench:snapshot')
  .option('--state-bytes <size>', 'state size (keys + values)', '1GiB')
  .option('--streams <n>', 'concurrent fetch streams (C)', '1')
  .option('--chunk-bytes <size>', 'chunk size', '1MiB')
  .option('--rounds <n>', 'alternating raw/fetch rounds; the best of each is compared', '2')
  .option('--no-install', 'skip the full follower install')
  .option('--keep', 'keep the temp dir', false)
  .option('--dir <path>', 'parent of the temp dir', tmpdir())
  .option('--cpu-prof <dir>', 'run the children with --cpu-prof into this dir')
  .option('--dist', 'run the sender and receiver from dist/ (build it first: npx tsc -p tsconfig.json)', false)
  .option('--tls <mode>', 'on (mutual TLS on the peer plane, as nodes run), off (plaintext), compare (both, and the ratio)', 'on')
  .option('--parts', "also run the fetch's parts alone each round (decode, hash, hash-worker, sink-worker) and split its CPU", false)
  .parse(process.argv);
const o = program.opts<{
  stateBytes: string;
  streams: string;
  chunkBytes: string;
  rounds: string;
  install: boolean;
  keep: boolean;
  dir: string;
  cpuProf?: string;
  dist: boolean;
  tls: string;
  parts: boolean;
}>();
if (!['on', 'off', 'compare'].includes(o.tls)) throw new Error(`--tls: "${o.tls}" is not on, off or compare`);
const stateBytesWanted = parseBytes(o.stateBytes);
const streams = Number(o.streams);
const chunkBytes = parseBytes(o.chunkBytes);
const rounds = Number(o.rounds);
if (!Number.isInteger(streams) || streams < 1 || streams > 64) throw new Error('--streams must be 1..64');
if (!Number.isInteger(rounds) || rounds < 1 || rounds > 10) throw new Error('--rounds must be 1..10');
if (chunkBytes > 4 << 20) throw new Error('--chunk-bytes is capped at 4 MiB by the server (CHUNK_BYTES_MAX)');

const VALUE_BYTES = 4096;
const KEY_PREFIX = 'bench/snapshot/';
/** PUTS_PER_ENTRY: one KV batch command of ~3.7 MB (COMMAND_BYTES_MAX is 4 MiB). */
const PUTS_PER_ENTRY = 900;
/** ENTRIES_PER_APPLY: entries per storage.apply call (one RocksDB write batch of ~15 MB). */
const ENTRIES_PER_APPLY = 4;
const MEMBERSHIP: Membership = { voters: ['bench-leader'], learners: [], addresses: { 'bench-leader': '127.0.0.1:0' } };

/** Security: how sender and receiver talk: plaintext, or mutual TLS with these files (one CA, a certificate each). */
type Security = { readonly tls: false } | { readonly tls: true; readonly caFile: string; readonly sender: { certFile: string; keyFile: string }; readonly receiver: { certFile: string; keyFile: string } };

/** securityArgs: a child's TLS flags (none when plaintext). */
function securityArgs(sec: Security, side: 'sender' | 'receiver'): string[] {
  if (!sec.tls) return [];
  const f = sec[side];
  return ['--cert', f.certFile, '--key', f.keyFile, '--ca', sec.caFile];
}

/** makeTls: a CA and the two nodes' certificates (IP SAN 127.0.0.1) under dir, as `snapcoord certs` makes them. */
async function makeTls(dir: string): Promise<Security> {
  await writeCa(dir);
  await writeNodeCert(dir, 'bench-leader', { ips: ['127.0.0.1'] });
  await writeNodeCert(dir, 'bench-follower', { ips: ['127.0.0.1'] });
  return { tls: true, caFile: caFiles(dir).caFile, sender: nodeCertFiles(dir, 'bench-leader'), receiver: nodeCertFiles(dir, 'bench-follower') };
}

const children = new Set<Child>();
const closed = new WeakSet<Child>();
let childSeq = 0;
let root: string | undefined;
let cleaning: Promise<void> | undefined;
let interrupted = false;

function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    await Promise.all([...children].map((c) => c.kill('SIGKILL').catch(() => undefined)));
    children.clear();
    if (root !== undefined) {
      if (o.keep) console.log(`kept ${root}`);
      else await rm(root, { recursive: true, force: true }).catch(() => undefined);
    }
  })();
  return cleaning;
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    interrupted = true;
    process.exitCode = 130;
    console.error(`\n${sig}: stopping children, removing ${root ?? 'nothing'}`);
    void cleanup().finally(() => process.exit(130));
  });
}

function nodeArgs(script: string, tag: string): string[] {
  // one dir per child: Node writes one profile per thread (main + the tsx loader's), named by pid and thread
  const prof = o.cpuProf === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', join(o.cpuProf, `${tag}-${++childSeq}`)];
  if (o.dist) {
    const built = join('dist', script.replace(/\.ts$/, '.js'));
    if (!existsSync(built)) throw new Error(`--dist: ${built} is missing; build it first: npx tsc -p tsconfig.json`);
    return [...prof, ...NODE_V8_FLAGS, built];
  }
  return [...prof, ...NODE_V8_FLAGS, '--import', 'tsx', script];
}

function spawnChild(name: string, script: string, argv: string[]): Child {
  // A node's malloc settings where the caller's environment does not set them (nodeProcessEnv).
  const c = startProgram(name, process.execPath, [...nodeArgs(script, name), ...argv], nodeProcessEnv(process.env) as Record<string, string>);
  children.add(c);
  c.proc.once('exit', () => children.delete(c));
  c.proc.once('close', () => closed.add(c)); // all of its output has been read

  return c;
}

/** reportOf returns c's first report line holding `key`; throws if c reported an error. */
function reportOf(c: Child, key: string): Record<string, unknown> | undefined {
  const r = parseReports(c.output);
  const err = r.find((x) => 'error' in x);
  if (err !== undefined) throw new Error(`${c.name} failed: ${String(err.error)}`);
  return r.find((x) => key in x);
}

/** waitReport waits (bounded) for c to report `key`; fails at once if c reports an error or closes without it. */
async function waitReport(c: Child, key: string, timeoutMs: number): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const r = reportOf(c, key);
    if (r !== undefined) return r;
    if (closed.has(c)) throw new Error(`${c.name} exited (${String(c.proc.exitCode ?? c.proc.signalCode)}) without reporting ${key}:\n${c.output.slice(-4000)}`);
    await sleep(50);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${c.name} to report ${key}:\n${c.output.slice(-4000)}`);
}

/** waitExit waits up to timeoutMs for c to exit by itself. */
async function waitExit(c: Child, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (c.running && Date.now() < deadline) await sleep(20);
}

interface Archive {
  readonly path: string;
  readonly bytes: number;
  readonly digest: string;
  readonly index: number;
  readonly term: number;
}

interface Measured {
  readonly mbps: number;
  readonly seconds: number;
  readonly senderPeak: number;
  readonly senderBase: number;
  readonly receiverPeak: number;
  readonly receiverBase: number;
  /** CPU seconds (user + system) of each side during the transfer. */
  readonly senderCpu: number;
  readonly receiverCpu: number;
  /** CPU seconds of each side by thread group (main, other: threadpool, V8 and workers, rocksdb:...). */
  readonly senderThreads: Record<string, number>;
  readonly receiverThreads: Record<string, number>;
  /** minor page faults of each side during the transfer (a fresh 1 MiB buffer faults in 256 pages). */
  readonly senderFaults: number;
  readonly receiverFaults: number;
  readonly extra: Record<string, unknown>;
}

/** timeoutFor: a generous bound for moving `bytes` (never below 10 MB/s, plus a minute). */
function timeoutFor(bytes: number): number {
  return 60_000 + (bytes / 10e6) * 1000;
}

/** PART_MODES: the fetch's parts (--parts), in the order they add to the raw stream. */
const PART_MODES = ['decode', 'hash', 'hash-worker', 'sink-worker'] as const;
type PartMode = (typeof PART_MODES)[number];

/** transfer runs one fresh sender and one receiver job; returns the receiver's figures and both peaks. */
async function transfer(a: Archive, mode: 'raw' | 'fetch' | 'install' | PartMode, nStreams: number, destDir: string, sec: Security): Promise<Measured> {
  const [port] = await freePorts(1);
  const tag = `${mode}${sec.tls ? '-tls' : ''}`;
  const sender = spawnChild(`sender-${tag}`, 'bench/lib/snapshot-sender.ts', [
    '--port', String(port), '--archive', a.path, '--digest', a.digest, '--index', String(a.index), '--chunk-bytes', String(chunkBytes),
    ...securityArgs(sec, 'sender'),
  ]);
  try {
    const ready = await waitReport(sender, 'ready', 30_000);
    if (ready.tls !== sec.tls) throw new Error(`${sender.name} serves ${ready.tls === true ? 'TLS' : 'plaintext'}, wanted ${sec.tls ? 'TLS' : 'plaintext'}`);
    const receiver = spawnChild(`receiver-${tag}`, 'bench/lib/snapshot-receiver.ts', [
      '--mode', mode, '--address', `127.0.0.1:${port}`, '--size', String(a.bytes), '--digest', a.digest,
      '--index', String(a.index), '--term', String(a.term), '--chunk-bytes', String(chunkBytes),
      '--streams', String(nStreams), '--dest-dir', destDir, '--membership', JSON.stringify(MEMBERSHIP),
      ...securityArgs(sec, 'receiver'),
    ]);
    let r: Record<string, unknown>;
    try {
      r = await waitReport(receiver, 'mode', timeoutFor(a.bytes * nStreams * (mode === 'install' ? 6 : 1)));
      await waitExit(receiver, 30_000); // it exits by itself after reporting (and writes its --cpu-prof)
    } finally {
      await receiver.kill('SIGKILL');
    }
    await sender.kill('SIGTERM', 5_000);
    const s = reportOf(sender, 'peakRss');
    const bytes = Number(r.bytes);
    const seconds = Number(r.seconds);
    return {
      mbps: mbps(bytes, seconds),
      seconds,
      senderPeak: Number(s?.peakRss ?? NaN),
      senderBase: Number(s?.baselineRss ?? NaN),
      receiverPeak: Number(r.peakRss),
      receiverBase: Number(r.baselineRss),
      senderCpu: Number(s?.cpuSeconds ?? NaN),
      receiverCpu: Number(r.cpuSeconds),
      senderThreads: (s?.threadCpu ?? {}) as Record<string, number>,
      receiverThreads: (r.threadCpu ?? {}) as Record<string, number>,
      senderFaults: Number(s?.minorFaults ?? NaN),
      receiverFaults: Number(r.minorFaults ?? NaN),
      extra: r,
    };
  } finally {
    await sender.kill('SIGKILL');
  }
}

async function buildState(dir: string): Promise<{ archive: Archive; stateBytes: number; keys: number; applyS: number; createS: number }> {
  const storage = await RocksStorage.open(join(dir, 'leader-data'));
  let keys = 0;
  let stateBytes = 0;
  let index = 0;
  const values = Buffer.allocUnsafe(PUTS_PER_ENTRY * VALUE_BYTES);
  const t0 = performance.now();
  try {
    while (stateBytes < stateBytesWanted) {
      const items: ApplyItem[] = [];
      for (let e = 0; e < ENTRIES_PER_APPLY && stateBytes < stateBytesWanted; e++) {
        randomFillSync(values); // fresh pseudo-random bytes per command: incompressible
        const ops: KvPut[] = [];
        for (let p = 0; p < PUTS_PER_ENTRY && stateBytes < stateBytesWanted; p++) {
          const key = Buffer.from(`${KEY_PREFIX}${String(keys).padStart(12, '0')}`);
          const value = values.subarray(p * VALUE_BYTES, (p + 1) * VALUE_BYTES);
          ops.push({ op: 'put', key, value });
          keys++;
          stateBytes += key.length + value.length;
        }
        items.push({ entry: { index: ++index, term: 1, type: 'normal', data: encodeCommand({ op: 'batch', ops }) } });
      }
      const results = await (await StateMachine.open(storage)).apply(items);
      for (const r of results) if (!r.ok) throw new Error(`apply ${r.index}: ${r.code} ${r.error}`);
    }
    const applyS = (performance.now() - t0) / 1000;
    console.log(`build: applied ${keys.toLocaleString('en-US')} puts (${fmtSize(stateBytes)} keys+values) in ${index} entries: ${mbps(stateBytes, applyS).toFixed(0)} MB/s (${applyS.toFixed(1)} s)`);

    const mgr = await SnapshotManager.open(join(dir, 'leader-snapshots'), storage, DEFAULT_SNAPSHOT_POLICY, silentLogger, 'bench', systemClock);
    try {
      const t1 = performance.now();
      const stored = await mgr.create(() => 1, () => MEMBERSHIP);
      const createS = (performance.now() - t1) / 1000;
      console.log(
        `build: SnapshotManager.create: archive ${fmtSize(stored.archiveBytes)} (state.bin ${fmtSize(stored.meta.stateBytes)}, ` +
          `${stored.meta.stateKeys.toLocaleString('en-US')} keys): ${mbps(stored.meta.stateBytes, createS).toFixed(0)} MB/s of state (${createS.toFixed(1)} s; gzip level ${DEFAULT_SNAPSHOT_POLICY.gzipLevel})`,
      );
      console.log(`build: total ${mbps(stateBytes, applyS + createS).toFixed(0)} MB/s (${(applyS + createS).toFixed(1)} s)`);
      return {
        archive: { path: stored.path, bytes: stored.archiveBytes, digest: stored.archiveSha256, index: stored.meta.index, term: stored.meta.term },
        stateBytes,
        keys,
        applyS,
        createS,
      };
    } finally {
      await mgr.close();
    }
  } finally {
    await storage.close();
  }
}

/** shaCeiling: SHA-256 of 1 MiB buffers (each its own hash, as per chunk), the archive's size in total, from the archive's first 64 MiB. */
async function shaCeiling(a: Archive): Promise<number> {
  const bufs = await readHead(a.path, Math.min(64, Math.ceil(a.bytes / (1 << 20))));
  const t0 = performance.now();
  let done = 0;
  for (let i = 0; done < a.bytes; i++) {
    const b = bufs[i % bufs.length] as Buffer;
    createHash('sha256').update(b).digest();
    done += b.length;
  }
  return mbps(done, (performance.now() - t0) / 1000);
}

async function readHead(path: string, n: number): Promise<Buffer[]> {
  const fh = await open(path, 'r');
  try {
    const out: Buffer[] = [];
    for (let i = 0; i < n; i++) {
      const b = Buffer.allocUnsafe(1 << 20);
      const { bytesRead } = await fh.read(b, 0, b.length, i * (1 << 20));
      if (bytesRead === 0) break;
      out.push(b.subarray(0, bytesRead));
    }
    return out;
  } finally {
    await fh.close();
  }
}

/** diskCeiling: write the archive's size in 1 MiB writes to a new file, fsync at the end. */
async function diskCeiling(a: Archive, dir: string): Promise<number> {
  const bufs = await readHead(a.path, 16);
  const path = join(dir, 'disk-ceiling.bin');
  const fh = await open(path, 'w', 0o600);
  const t0 = performance.now();
  let done = 0;
  try {
    for (let i = 0; done < a.bytes; i++) {
      const b = bufs[i % bufs.length] as Buffer;
      const n = Math.min(b.length, a.bytes - done);
      await fh.write(b, 0, n, done);
      done += n;
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
  const seconds = (performance.now() - t0) / 1000;
  await rm(path, { force: true });
  return mbps(done, seconds);
}

/** cpuNote: CPU seconds of each side over the wall time (1.00 = one core busy throughout). */
function cpuNote(m: Measured): string {
  return (
    `CPU sender ${m.senderCpu.toFixed(2)} s (${(m.senderCpu / m.seconds).toFixed(2)} cores: ${fmtThreadCpu(m.senderThreads)}), ` +
    `receiver ${m.receiverCpu.toFixed(2)} s (${(m.receiverCpu / m.seconds).toFixed(2)} cores: ${fmtThreadCpu(m.receiverThreads)}); ` +
    `minor page faults sender ${m.senderFaults}, receiver ${m.receiverFaults}`
  );
}

function pad(s: string, n: number): string {
  return s.length >= n ? s : s + ' '.repeat(n - s.length);
}

function ratioLine(what: string, v: number, ceilingName: string, c: number): string {
  return `  ${pad(what, 34)} ${v.toFixed(0).padStart(6)} MB/s = ${(v / c).toFixed(2)}x ${pad(ceilingName, 38)} ${c.toFixed(0).padStart(6)} MB/s`;
}

async function main(): Promise<void> {
  const fs = await statfs(o.dir);
  const free = fs.bavail * fs.bsize;
  // Leader RocksDB + state.bin + archive during create, then C fetched files (one at a time per phase)
  // and the follower's incoming file + stored archive + RocksDB.
  const needBytes = stateBytesWanted * (3 + Math.max(streams, o.install ? 3 : 0)) * 1.1;
  if (free < needBytes) throw new Error(`${o.dir} has ${fmtSize(free)} free; this run needs about ${fmtSize(needBytes)}`);
  root = await mkdtemp(join(o.dir, 'snapcoord-bench-snapshot-'));
  console.log(
    `bench:snapshot  state ${fmtSize(stateBytesWanted)}, chunks ${fmtSize(chunkBytes)}, streams ${streams}, rounds ${rounds}, ` +
      `node ${process.version}, load avg ${loadavg().map((x) => x.toFixed(1)).join(' ')}, temp ${root}${o.cpuProf !== undefined ? `, cpu profiles in ${o.cpuProf}` : ''}`,
  );

  const built = await buildState(root);
  const a = built.archive;
  await rm(join(root, 'leader-data'), { recursive: true, force: true }); // only the archive is needed from here on
  const archiveStat = await stat(a.path);
  if (archiveStat.size !== a.bytes) throw new Error(`archive is ${archiveStat.size} bytes, store says ${a.bytes}`);

  const sha = await shaCeiling(a);
  console.log(`ceiling: SHA-256 of 1 MiB buffers, one process: ${sha.toFixed(0)} MB/s`);
  const disk = await diskCeiling(a, root);
  console.log(`ceiling: disk write ${fmtSize(a.bytes)} in 1 MiB writes + fsync: ${disk.toFixed(0)} MB/s`);

  // The securities measured: TLS (mutual, as the peer plane runs), plaintext, or both alternating within each round.
  const secs: Security[] = [];
  if (o.tls !== 'off') secs.push(await makeTls(join(root, 'tls')));
  if (o.tls !== 'on') secs.unshift({ tls: false });
  const label = (sec: Security): string => (secs.length > 1 ? (sec.tls ? ' [TLS]' : ' [plain]') : sec.tls ? ' [TLS]' : '');
  interface Series {
    readonly sec: Security;
    readonly raws: Measured[];
    readonly fetches: Measured[];
    readonly parts: Map<PartMode, Measured[]>;
    inst?: Measured;
  }
  const series: Series[] = secs.map((sec) => ({ sec, raws: [], fetches: [], parts: new Map() }));
  for (let r = 1; r <= rounds; r++) {
    for (const se of series) {
      const raw = await transfer(a, 'raw', streams, root, se.sec);
      se.raws.push(raw);
      console.log(
        `round ${r}${label(se.sec)}: raw grpc stream x${streams}: ${raw.mbps.toFixed(0)} MB/s (${raw.seconds.toFixed(2)} s)  ` +
          `peak RSS sender ${fmtMiB(raw.senderPeak)}, receiver ${fmtMiB(raw.receiverPeak)}; ${cpuNote(raw)}`,
      );
      for (const part of o.parts ? PART_MODES : []) {
        const m = await transfer(a, part, streams, root, se.sec);
        se.parts.set(part, [...(se.parts.get(part) ?? []), m]);
        console.log(`round ${r}${label(se.sec)}: ${pad(`${part} x${streams}:`, 17)} ${m.mbps.toFixed(0)} MB/s (${m.seconds.toFixed(2)} s)  ${cpuNote(m)}; hashed on a worker ${String(m.extra.chunksHashedOnWorker ?? 0)}`);
      }
      const f = await transfer(a, 'fetch', streams, root, se.sec);
      se.fetches.push(f);
      console.log(
        `round ${r}${label(se.sec)}: fetchSnapshot x${streams}:   ${f.mbps.toFixed(0)} MB/s (${f.seconds.toFixed(2)} s)  ` +
          `peak RSS sender ${fmtMiB(f.senderPeak)}, receiver ${fmtMiB(f.receiverPeak)}; ${cpuNote(f)}; attempts ${String(f.extra.attempts)}, bad chunks ${String(f.extra.hashFailures)}, hashed on a worker ${String(f.extra.chunksHashedOnWorker ?? 0)}`,
      );
    }
  }
  if (o.install) {
    for (const se of series) {
      const inst = await transfer(a, 'install', 1, join(root, 'follower'), se.sec);
      se.inst = inst;
      console.log(
        `install${label(se.sec)}: fetch+import ${Number(inst.extra.fetchImportSeconds).toFixed(2)} s, installState ${Number(inst.extra.installSeconds).toFixed(2)} s: ` +
          `${inst.mbps.toFixed(0)} MB/s of archive  peak RSS sender ${fmtMiB(inst.senderPeak)}, receiver ${fmtMiB(inst.receiverPeak)}; ${cpuNote(inst)}; ` +
          `receiver CPU of installState alone ${Number(inst.extra.installCpuSeconds).toFixed(2)} s (${fmtThreadCpu((inst.extra.installThreadCpu ?? {}) as Record<string, number>)})`,
      );
      await rm(join(root, 'follower'), { recursive: true, force: true });
    }
  }

  const median = (xs: number[]): number => {
    const s = [...xs].sort((x, y) => x - y);
    const mid = Math.floor(s.length / 2);
    return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
  };
  const best = (xs: Measured[]): Measured => xs.reduce((m, x) => (x.mbps > m.mbps ? x : m));
  const max = (xs: Measured[], k: 'senderPeak' | 'receiverPeak'): number => Math.max(...xs.map((x) => x[k]));
  const perGbOf = (m: Measured, cpu: number): number => cpu / (Number(m.extra.bytes) / 1e9);
  const perGb = (m: Measured, cpu: number): string => `${perGbOf(m, cpu).toFixed(2)} s`;
  for (const se of series) {
    console.log('');
    const raw = best(se.raws);
    const f = best(se.fetches);
    const inst = se.inst;
    const how = se.sec.tls ? 'mutual TLS' : 'plaintext';
    console.log(`summary${label(se.sec)} (${how}; archive ${fmtSize(a.bytes)}, state ${fmtSize(built.stateBytes)}, ${streams} stream(s), ${fmtSize(chunkBytes)} chunks; best of ${rounds}; MB = 10^6 B)`);
    console.log(ratioLine(`fetch x${streams} (aggregate)`, f.mbps, `raw grpc stream x${streams}`, raw.mbps));
    console.log(ratioLine(`fetch x${streams} (aggregate)`, f.mbps, 'SHA-256, one process (fetch hashes 1x)', sha));
    console.log(ratioLine(`fetch x${streams} (aggregate)`, f.mbps, 'disk write + fsync', disk));
    console.log(ratioLine(`raw grpc stream x${streams}`, raw.mbps, 'disk write + fsync', disk));
    if (inst !== undefined) {
      console.log(ratioLine('install (fetch+import+install) x1', inst.mbps, `fetch x${streams}`, f.mbps));
    }
    console.log(`  build: apply ${mbps(built.stateBytes, built.applyS).toFixed(0)} MB/s, SnapshotManager.create ${mbps(built.stateBytes, built.createS).toFixed(0)} MB/s of state`);
    console.log('  CPU per GB moved (user+sys)          sender                 receiver');
    console.log(`  ${pad(`raw grpc stream x${streams}`, 36)} ${pad(perGb(raw, raw.senderCpu), 22)} ${perGb(raw, raw.receiverCpu)}`);
    console.log(`  ${pad(`fetch x${streams}`, 36)} ${pad(perGb(f, f.senderCpu), 22)} ${perGb(f, f.receiverCpu)}`);
    console.log('  peak RSS (baseline at child start)   sender                 receiver');
    const rssLine = (what: string, sp: number, sb: number, rp: number, rb: number): string =>
      `  ${pad(what, 36)} ${pad(`${fmtMiB(sp)} (${fmtMiB(sb)})`, 22)} ${fmtMiB(rp)} (${fmtMiB(rb)})`;
    console.log(rssLine(`raw grpc stream x${streams}`, max(se.raws, 'senderPeak'), raw.senderBase, max(se.raws, 'receiverPeak'), raw.receiverBase));
    console.log(rssLine(`fetch x${streams}`, max(se.fetches, 'senderPeak'), f.senderBase, max(se.fetches, 'receiverPeak'), f.receiverBase));
    if (inst !== undefined) console.log(rssLine('install x1', inst.senderPeak, inst.senderBase, inst.receiverPeak, inst.receiverBase));
    const ratios = se.fetches.map((x, i) => x.mbps / (se.raws[i] as Measured).mbps);
    console.log(`  fetch / raw by round: ${ratios.map((x) => x.toFixed(2)).join(', ')} (median ${median(ratios).toFixed(2)})`);
    if (se.parts.size > 0) {
      console.log(`  CPU per GB, medians of ${rounds} round(s)    sender    receiver (main + other)    both    x raw    MB/s`);
      const rawBoth = median(se.raws.map((m) => perGbOf(m, m.senderCpu + m.receiverCpu)));
      const rows: [string, Measured[]][] = [['raw grpc stream', se.raws], ...[...se.parts].map(([k, v]): [string, Measured[]] => [k, v]), ['fetch', se.fetches]];
      for (const [what, ms] of rows) {
        const med = (f: (m: Measured) => number): number => median(ms.map((m) => perGbOf(m, f(m))));
        const both = med((m) => m.senderCpu + m.receiverCpu);
        console.log(
          `  ${pad(what, 38)} ${med((m) => m.senderCpu).toFixed(2).padStart(6)} s  ${med((m) => m.receiverCpu).toFixed(2).padStart(6)} s (${med((m) => m.receiverThreads.main ?? 0).toFixed(2)} + ${med((m) => m.receiverCpu - (m.receiverThreads.main ?? 0)).toFixed(2)})` +
            `  ${both.toFixed(2).padStart(6)} s  ${(both / rawBoth).toFixed(2)}x  ${median(ms.map((m) => m.mbps)).toFixed(0).padStart(5)}`,
        );
      }
    }
  }
  const plain = series.find((se) => !se.sec.tls);
  const tls = series.find((se) => se.sec.tls);
  if (plain !== undefined && tls !== undefined) {
    const [fp, ft, rp, rt] = [best(plain.fetches), best(tls.fetches), best(plain.raws), best(tls.raws)];
    console.log('');
    console.log(`ratio TLS on/off (best of ${rounds} each, same archive, same run):`);
    console.log(`  fetch x${streams}: ${ft.mbps.toFixed(0)} / ${fp.mbps.toFixed(0)} MB/s = ${(ft.mbps / fp.mbps).toFixed(2)}x throughput; CPU per GB sender ${(perGbOf(ft, ft.senderCpu) / perGbOf(fp, fp.senderCpu)).toFixed(2)}x, receiver ${(perGbOf(ft, ft.receiverCpu) / perGbOf(fp, fp.receiverCpu)).toFixed(2)}x`);
    console.log(`  raw grpc stream x${streams}: ${rt.mbps.toFixed(0)} / ${rp.mbps.toFixed(0)} MB/s = ${(rt.mbps / rp.mbps).toFixed(2)}x throughput; CPU per GB sender ${(perGbOf(rt, rt.senderCpu) / perGbOf(rp, rp.senderCpu)).toFixed(2)}x, receiver ${(perGbOf(rt, rt.receiverCpu) / perGbOf(rp, rp.receiverCpu)).toFixed(2)}x`);
    if (plain.inst !== undefined && tls.inst !== undefined) {
      console.log(`  install x1: ${tls.inst.mbps.toFixed(0)} / ${plain.inst.mbps.toFixed(0)} MB/s = ${(tls.inst.mbps / plain.inst.mbps).toFixed(2)}x`);
    }
  }
}

main()
  .then(
    () => cleanup(),
    async (err: unknown) => {
      if (interrupted) return; // the children were stopped under it; the signal handler exits
      console.error(err instanceof Error ? (err.stack ?? err.message) : err);
      process.exitCode = 1;
      await cleanup();
    },
  )
  .finally(() => {
    if (!interrupted) process.exit();
  });
