/**
 * Child of bench/snapshot.ts: the receiving side, one job per process so its
 * peak RSS is that job's. Prints one report line (bytes, seconds, peak RSS) and exits.
 *
 *   --mode raw      --streams C concurrent /bench.RawStream/Pull streams, one
 *                   channel each, client flow-control window 16 MiB; bytes discarded.
 *   --mode fetch    --streams C concurrent SnapshotManager.fetch calls (snapcoord's
 *                   follower path: fetchSnapshot verifying each chunk's SHA-256,
 *                   written once into the store through its sink, fsync, rename),
 *                   each into its own store under --dest-dir (opened before the clock starts).
 *   --mode decode   (bench:snapshot --parts) C concurrent FetchSnapshot streams
 *                   decoded by the generated client, the chunks discarded: the
 *                   fetch's transport and protobuf decode, nothing else.
 *   --mode hash     (--parts) C concurrent fetchSnapshot calls, each chunk's
 *                   SHA-256 checked on the main thread, into a sink that keeps
 *                   nothing: the fetch without the store's writes.
 *   --mode hash-worker  (--parts) the same with each chunk hashed on a worker
 *                   thread (fetchSnapshot's hashOnWorker, chunk-hasher.ts).
 *   --mode sink-worker  (--parts) fetchSnapshot with each chunk hashed on a
 *                   worker thread, written through an ArchiveSink (the store's
 *                   one write path, the whole digest claimed as a fetch of
 *                   1 MiB chunks records it) under --dest-dir, fsynced: the
 *                   fetch's writes with the hashing off the main thread.
 *   --mode install  the full follower install into a fresh RocksStorage in
 *                   --dest-dir: SnapshotManager.fetch (fetchSnapshot +
 *                   importArchive) then SnapshotManager.install (installState); the
 *                   report adds the CPU of the install alone (installCpuSeconds, by
 *                   thread group: installThreadCpu) beside the whole job's.
 *
 * Common: --address 127.0.0.1:P --size BYTES --digest HEX --index N --term N
 *         --chunk-bytes B [--membership JSON] [--cert F --key F --ca F]
 * With --cert/--key/--ca every mode dials as a node dials its peers: mutual
 * TLS (the server verified against --ca and 127.0.0.1, this certificate
 * presented), the peer metadata interceptor on fetches.
 */
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';

import { DEFAULT_SNAPSHOT_POLICY, SnapshotManager } from '../../src/node/snapshots.js';
import { silentLogger } from '../../src/node/logger.js';
import type { Membership } from '../../src/raft/types.js';
import { RocksStorage } from '../../src/storage/rocks-storage.js';
import { channelCredentialsFromFiles } from '../../src/tls/index.js';
import { peerDial, type PeerDial } from '../../src/transport/peer-guard.js';
import { FLOW_CONTROL_WINDOW_BYTES, fetchSnapshot } from '../../src/transport/snapshot-fetcher.js';
import { RaftServiceClient, type FetchSnapshotResponse } from '../../src/gen/snapcoord/v1/raft.js';
import { ArchiveSink } from '../../src/snapshot/archive-sink.js';
import { RAW_STREAM_PATH, RssSampler, args, exitWithParent, need, rawIdentity, report } from './snapshot-common.js';
import { systemClock } from '../../src/node/clock.js';
import { threadCpu, threadCpuByGroup } from './thread-cpu.js';

const rss = new RssSampler(100);
exitWithParent();
const a = args();
const mode = need(a, 'mode');
const address = need(a, 'address');
const size = Number(need(a, 'size'));
const digest = need(a, 'digest');
const index = Number(need(a, 'index'));
const term = Number(need(a, 'term'));
const chunkBytes = Number(need(a, 'chunk-bytes'));
const streams = Number(a.get('streams') ?? '1');
const certFile = a.get('cert');
/** dial: the peer plane's credentials (mutual TLS with --cert, else plaintext) and metadata, as a node's. */
const dial: PeerDial = peerDial(
  'bench',
  '127.0.0.1:0',
  certFile !== undefined
    ? channelCredentialsFromFiles({ caFile: need(a, 'ca'), certFile, keyFile: need(a, 'key') })
    : grpc.credentials.createInsecure(),
);

async function rawOne(): Promise<number> {
  const client = new grpc.Client(address, dial.credentials, {
    'grpc-node.flow_control_window': FLOW_CONTROL_WINDOW_BYTES,
    'grpc.max_receive_message_length': chunkBytes + (1 << 20),
    'grpc.use_local_subchannel_pool': 1,
  });
  try {
    const call = client.makeServerStreamRequest<Buffer, Buffer>(
      RAW_STREAM_PATH,
      rawIdentity,
      rawIdentity,
      Buffer.from(JSON.stringify({ chunkBytes })),
    );
    let bytes = 0;
    for await (const chunk of call as AsyncIterable<Buffer>) bytes += chunk.length;
    return bytes;
  } finally {
    client.close();
  }
}

/** decodeOne: one FetchSnapshot stream decoded (FetchSnapshotResponse) by the generated client, the chunks discarded. */
async function decodeOne(): Promise<number> {
  const client = new RaftServiceClient(address, dial.credentials, {
    'grpc-node.flow_control_window': FLOW_CONTROL_WINDOW_BYTES,
    'grpc.max_receive_message_length': chunkBytes + (1 << 20),
    'grpc.use_local_subchannel_pool': 1,
    interceptors: [...dial.interceptors],
  });
  try {
    const call = client.fetchSnapshot({ from: 'bench-follower', index: BigInt(index), term: BigInt(term), digest, offset: 0n, chunkBytes });
    let bytes = 0;
    for await (const res of call as AsyncIterable<FetchSnapshotResponse>) bytes += res.data.length;
    return bytes;
  } finally {
    client.close();
  }
}

/** hashOne: one fetchSnapshot (every chunk's SHA-256 checked, inline or on a worker) into a sink that keeps nothing. */
async function hashOne(hashOnWorker: boolean): Promise<{ bytes: number; attempts: number; hashFailures: number; chunksHashedOnWorker: number }> {
  return fetchSnapshot({
    selfId: 'bench-follower',
    address,
    target: { index, term, sizeBytes: size, digest },
    sink: { writeChunk: () => Promise.resolve() },
    chunkBytes,
    dial,
    hashOnWorker,
  });
}

/** sinkOne: one fetchSnapshot with chunks hashed on a worker, written through an ArchiveSink into `dir`, fsynced, removed. */
async function sinkOne(i: number): Promise<{ bytes: number; attempts: number; hashFailures: number; chunksHashedOnWorker: number }> {
  const dir = join(need(a, 'dest-dir'), `sink-${i}`);
  await mkdir(dir, { recursive: true });
  const path = join(dir, 'archive.tar.gz');
  const sink = await ArchiveSink.create(path, { maxBytes: size, claimedSha256: digest });
  try {
    const r = await fetchSnapshot({ selfId: 'bench-follower', address, target: { index, term, sizeBytes: size, digest }, sink, chunkBytes, dial, hashOnWorker: true });
    await sink.finishChunks();
    return r;
  } catch (err) {
    sink.destroy();
    throw err;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** FetchJob: one follower's snapshot manager (its own RocksDB and store), opened before the clock starts. */
interface FetchJob {
  readonly dir: string;
  readonly storage: RocksStorage;
  readonly mgr: SnapshotManager;
}

async function openFetchJob(i: number): Promise<FetchJob> {
  const dir = join(need(a, 'dest-dir'), `fetch-${i}`);
  const storage = await RocksStorage.open(join(dir, 'data'));
  const mgr = await SnapshotManager.open(join(dir, 'snapshots'), storage, { ...DEFAULT_SNAPSHOT_POLICY, chunkBytes, retain: 1 }, silentLogger, 'bench', systemClock);
  mgr.dial = dial;
  return { dir, storage, mgr };
}

async function fetchOne(job: FetchJob): Promise<{ bytes: number; attempts: number; hashFailures: number; chunksHashedOnWorker: number }> {
  const membership = JSON.parse(need(a, 'membership')) as Membership;
  const { result } = await job.mgr.fetch('bench-follower', address, { index, term, membership, sizeBytes: size, digest });
  return result;
}

async function closeFetchJob(job: FetchJob): Promise<void> {
  await job.mgr.close();
  await job.storage.close();
  // the bytes were fsynced before this; removing them keeps the disk free for the next phase.
  if (a.get('keep-files') !== 'true') await rm(job.dir, { recursive: true, force: true });
}

async function install(): Promise<Record<string, unknown>> {
  const dir = need(a, 'dest-dir');
  const membership = JSON.parse(need(a, 'membership')) as Membership;
  const storage = await RocksStorage.open(join(dir, 'data'));
  try {
    const mgr = await SnapshotManager.open(join(dir, 'snapshots'), storage, { ...DEFAULT_SNAPSHOT_POLICY, chunkBytes, retain: 1 }, silentLogger, 'bench', systemClock);
    mgr.dial = dial;
    try {
      const t0 = performance.now();
      const { stored, result } = await mgr.fetch('bench-follower', address, { index, term, membership, sizeBytes: size, digest });
      const t1 = performance.now();
      const cpu1 = process.cpuUsage();
      const threads1 = threadCpu();
      await mgr.install(stored);
      const t2 = performance.now();
      const cpu2 = process.cpuUsage(cpu1);
      const installCpuSeconds = (cpu2.user + cpu2.system) / 1e6;
      const installThreadCpu = threadCpuByGroup(threads1, threadCpu(), installCpuSeconds);
      if (storage.appliedIndex() !== index) throw new Error(`installed applied index ${storage.appliedIndex()}, expected ${index}`);
      return {
        bytes: result.bytes,
        attempts: result.attempts,
        hashFailures: result.hashFailures,
        fetchImportSeconds: (t1 - t0) / 1000,
        installSeconds: (t2 - t1) / 1000,
        installCpuSeconds,
        installThreadCpu,
        seconds: (t2 - t0) / 1000,
        stateBytes: stored.meta.stateBytes,
        stateKeys: stored.meta.stateKeys,
      };
    } finally {
      await mgr.close();
    }
  } finally {
    await storage.close();
  }
}

async function main(): Promise<void> {
  let out: Record<string, unknown>;
  let cpuAtEnd: NodeJS.CpuUsage | undefined;
  const jobs = mode === 'fetch' ? await Promise.all(Array.from({ length: streams }, (_, i) => openFetchJob(i))) : [];
  const cpu0 = process.cpuUsage();
  const faults0 = process.resourceUsage().minorPageFault;
  let faultsAtEnd: number | undefined;
  const threads0 = threadCpu();
  let threads1: ReturnType<typeof threadCpu> | undefined;
  if (mode === 'raw' || mode === 'fetch' || mode === 'decode' || mode === 'hash' || mode === 'hash-worker' || mode === 'sink-worker') {
    const t0 = performance.now();
    const each = Array.from({ length: streams });
    const bare = (bytes: number): { bytes: number; attempts: number; hashFailures: number; chunksHashedOnWorker: number } => ({ bytes, attempts: 1, hashFailures: 0, chunksHashedOnWorker: 0 });
    const results = await Promise.all(
      mode === 'raw'
        ? each.map(() => rawOne().then(bare))
        : mode === 'decode'
          ? each.map(() => decodeOne().then(bare))
          : mode === 'hash' || mode === 'hash-worker'
            ? each.map(() => hashOne(mode === 'hash-worker'))
            : mode === 'sink-worker'
              ? each.map((_, i) => sinkOne(i))
              : jobs.map((job) => fetchOne(job)),
    );
    const seconds = (performance.now() - t0) / 1000;
    cpuAtEnd = process.cpuUsage(cpu0);
    faultsAtEnd = process.resourceUsage().minorPageFault - faults0;
    threads1 = threadCpu();
    await Promise.all(jobs.map((job) => closeFetchJob(job)));
    for (const r of results) if (r.bytes !== size) throw new Error(`a ${mode} stream got ${r.bytes} bytes, expected ${size}`);
    out = {
      bytes: results.reduce((s, r) => s + r.bytes, 0),
      seconds,
      attempts: results.reduce((s, r) => s + r.attempts, 0),
      hashFailures: results.reduce((s, r) => s + r.hashFailures, 0),
      chunksHashedOnWorker: results.reduce((s, r) => s + r.chunksHashedOnWorker, 0),
    };
  } else if (mode === 'install') {
    out = await install();
  } else {
    throw new Error(`unknown --mode ${mode}`);
  }
  // CPU up to the end of the transfer (the fetch's fsync and rename included, closing the stores not).
  const cpu = cpuAtEnd ?? process.cpuUsage(cpu0);
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  // By thread: main, libuv's threadpool, V8's platform threads, RocksDB's; `ended` the threads gone by then (the hashing worker).
  const threadSeconds = threadCpuByGroup(threads0, threads1 ?? threadCpu(), cpuSeconds);
  rss.stop();
  // Minor page faults: each fresh 1 MiB buffer (mmapped under a node's malloc settings) faults in page by page.
  const minorFaults = faultsAtEnd ?? process.resourceUsage().minorPageFault - faults0;
  report({ mode, ...out, cpuSeconds, threadCpu: threadSeconds, minorFaults, peakRss: rss.peak, baselineRss: rss.baseline });
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    report({ error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
    process.exit(1);
  },
);
