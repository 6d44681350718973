/**
 * bench/rocks-binding.ts: the `rocksdb` binding (5.2.1, RocksDB 6.17, the one src/storage/rocks.ts uses) against
 * `@nxtedition/rocksdb` (12.x, RocksDB 9.7) and `rocksdb-native` (3.x, RocksDB 10.5) on the two RocksDB jobs of a snapshot: the bulk load of an install
 * (K keys of the etcd mix or the text mix of bench:snapshot-cluster, written the way RocksStorage's install writes
 * them: native batches of up to 2 MiB / 16,384 puts, one written while the next is filled, unsynced, then one synced
 * write of one key; nx's batch_write is synchronous, on the main thread) into a fresh database, then a full iteration in bounded batches (what snapshot creation does:
 * 1,000 entries or 1 MiB per native call, fillCache off). Each variant runs in its own child process; the parent
 * alternates the variants for R rounds and prints, per run: wall time, process CPU, CPU by thread group (from
 * /proc/self/task; `node` is the threads Node 20 leaves unnamed: libuv's threadpool and V8's workers), the database's
 * files (SST and WAL bytes) after close, and the child's peak RSS. Figures only.
 *
 *   npx tsx bench/rocks-binding.ts [--keys 1000000] [--mix etcd,text,random] [--rounds 3] [--variants old,nx-plain,...]
 *       [--value-bytes 1024] [--sync-writes 2000] [--nx-dir DIR] [--rn-dir DIR] [--hwcrc-lib F] [--nowal-lib F] [--dir DIR]
 *
 * --mix random: incompressible values (the state of bench:snapshot --state-bytes; --keys 65536 --value-bytes 4096
 * is 256 MiB). Before the load each child times --sync-writes N writes of one ~100-byte entry, each its own synced
 * batch, on a database of its own (the Raft log's write path, log/ beside state-<gen>/): p50/p99 from the call to
 * its completion, and how long the call held the main thread (nx writes synchronously on it; rn cannot sync).
 *
 * @nxtedition/rocksdb is not a dependency: for the nx variants install it beside the repository
 * (`mkdir /tmp/nx && cd /tmp/nx && npm init -y && npm install @nxtedition/rocksdb@12.2.12`) and pass
 * --nx-dir /tmp/nx/node_modules/@nxtedition/rocksdb; likewise `npm install rocksdb-native@3.18.1` for the rn
 * variants (--rn-dir /tmp/nx/node_modules/rocksdb-native).
 *
 * old-hwcrc and old-nowal run our prebuilt binary itself with one function replaced, to measure what a rebuilt
 * binding would save without rebuilding RocksDB: the binary calls rocksdb::crc32c::Extend and
 * rocksdb::DBImpl::WriteImpl through its PLT, so a library preloaded into the child (LD_PRELOAD) that defines
 * them takes their place. bench/lib/hwcrc.cc computes CRC-32C with the SSE 4.2 crc32 instruction
 * (`g++ -O2 -msse4.2 -fPIC -shared -o /tmp/libhwcrc.so bench/lib/hwcrc.cc`, --hwcrc-lib /tmp/libhwcrc.so);
 * bench/lib/nowal.cc sets disableWAL on every unsynced write and calls the binary's own WriteImpl
 * (`g++ -O2 -fPIC -shared -o /tmp/libnowal.so bench/lib/nowal.cc -ldl`, --nowal-lib /tmp/libnowal.so). Such a load
 * is durable only once its memtables are flushed, which RocksDB does at close: add the close line's CPU to it.
 * Measurements, not a way to run a node.
 *
 * Measured (Dec 6, helper "rocks", 1M x 1 KiB, 3 alternating rounds a pair, load 6-13; process CPU of the load /
 * of the iteration): old 2.38-2.54 / 1.40-1.76 s (etcd), 3.66-4.37 / 1.38-1.79 s (text), SSTs 57 / 992 MiB,
 * peak RSS 175-179 / 259-278 MiB. nx-plain 1.47-1.77 / 1.31-1.88 (etcd), 1.83-2.08 / 1.45-1.68 (text), SSTs
 * 939 MiB for both mixes, peak RSS 240-283 / 307-393. Against old-64m-plain (the old binding with nx-plain's
 * settings: 2.83-3.01 etcd, 3.48-3.58 text) the binding itself takes ~40-45% off the load (hardware CRC-32C and
 * XXH3 block checksums: its flush thread 0.63-0.70 s against 1.19-1.28 s, its WAL and memtable writes ~0.6 s
 * against ~1.3 s); the iteration is the same. With our settings it cannot be had: the prebuild has no Snappy
 * (an existing data dir does not open: "Unsupported compression method for this build: Snappy"; and RocksDB 6.17
 * cannot read what 9.7 wrote), write_buffer_size is settable only through compaction 'level' (nx-level8m: etcd
 * 2.33-2.48, text 3.33-3.60, its compactions doubling the iteration's CPU on text), zstd SSTs (always with a
 * dictionary) cost 1.95-2.14 s (etcd) but 10.2-10.7 s (text), and batch_write runs on the main thread (a synced
 * write blocks the event loop: p50 0.16-0.31 ms, p99 5-8 ms, against 0.013-0.025 ms for the old binding's call).
 */
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { arg } from './lib/arg.js';
import { textPool } from './lib/text-pool.js';
import { fmtThreadCpu, threadCpu, threadCpuByGroup } from './lib/thread-cpu.js';

const require = createRequire(import.meta.url);

/** VARIANTS: binding and open options. `old` is the state generation's options in rocks-storage.ts. */
const VARIANTS: Record<string, { binding: 'old' | 'nx' | 'rn'; open: Record<string, unknown>; preload?: ('hwcrc' | 'nowal')[] }> = {
  old: { binding: 'old', open: { writeBufferSize: 8 << 20, blockSize: 16 << 10 } },
  // the prebuilt binary itself with its rocksdb::crc32c::Extend (called through the PLT) replaced by a hardware one
  // preloaded into the child (--hwcrc-lib: see the header): what hardware CRC-32C alone is worth, nothing else changed
  'old-hwcrc': { binding: 'old', open: { writeBufferSize: 8 << 20, blockSize: 16 << 10 }, preload: ['hwcrc'] },
  // the prebuilt binary with every unsynced write made with disableWAL (bench/lib/nowal.cc, --nowal-lib): what a
  // binding passing disableWAL for an install's batches would save; such a load is durable only once the memtables
  // are flushed, which RocksDB does at close: count the close line's CPU with the load
  'old-nowal': { binding: 'old', open: { writeBufferSize: 8 << 20, blockSize: 16 << 10 }, preload: ['nowal'] },
  'old-hwcrc-nowal': { binding: 'old', open: { writeBufferSize: 8 << 20, blockSize: 16 << 10 }, preload: ['hwcrc', 'nowal'] },
  // the old binding set as nx's defaults (64 MiB memtables) and nx-plain (nothing compressed): the binding's own share
  'old-64m': { binding: 'old', open: { writeBufferSize: 64 << 20, blockSize: 16 << 10 } },
  'old-64m-plain': { binding: 'old', open: { writeBufferSize: 64 << 20, blockSize: 16 << 10, compression: false } },
  // the binding's defaults (64 MiB memtable, zstd SSTs with a dictionary, zstd WAL) with our block size
  nx: { binding: 'nx', open: { blockSize: 16 << 10 } },
  // zstd SSTs (with a dictionary), the WAL uncompressed
  'nx-zstd': { binding: 'nx', open: { blockSize: 16 << 10, walCompression: false } },
  // nothing compressed (the binding has no snappy); the WAL is written as ours, uncompressed
  'nx-plain': { binding: 'nx', open: { blockSize: 16 << 10, walCompression: false, compression: false } },
  // 8 MiB memtables as ours (the only way the binding sets write_buffer_size: compaction 'level', budget / 4;
  // which also sets L0 and L1 uncompressed, zstd (no dictionary) from L2 on, 4 MiB files, L1 of 32 MiB)
  'nx-level8m': {
    binding: 'nx',
    open: { blockSize: 16 << 10, walCompression: false, compression: false, compaction: 'level', memtableMemoryBudget: 32 << 20 },
  },
  'nx-plain-pipelined': { binding: 'nx', open: { blockSize: 16 << 10, walCompression: false, compression: false, pipelinedWrite: true } },
  // rocksdb-native (Holepunch; RocksDB 10.5 through librocksdb): its defaults (64 MiB memtables, 8 KiB blocks; its
  // prebuild links no compression library, so nothing is compressed), and with our memtable and block sizes
  rn: { binding: 'rn', open: {} },
  'rn-8m': { binding: 'rn', open: { writeBufferSize: 8 << 20, tableBlockSize: 16 << 10 } },
};

const PREFIX_KV = 0x6b; // 'k', as rocks-storage's state keys
const INSTALL_WRITE_BYTES = 2 * 1024 * 1024;
const INSTALL_WRITE_OPS = 16_384;
const POOL_BYTES = 64 << 20;

interface Db {
  put(key: Buffer, value: Buffer): void;
  /** the filled batch written (old: on the threadpool while the next fills; nx: the binding writes synchronously). */
  flush(sync: boolean): Promise<void>;
  bytes: number;
  count: number;
  iterate(onBatch: (n: number, bytes: number) => void): Promise<void>;
  /** syncedPut writes one put in its own synced batch (the Raft log's write of one entry); null: the binding cannot sync a write. */
  syncedPut: ((key: Buffer, value: Buffer) => Promise<void>) | null;
  close(): Promise<void>;
}

type Cb<T = void> = (err: Error | null | undefined, v?: T) => void;

async function openOld(path: string, open: Record<string, unknown>): Promise<Db> {
  const factory = require('rocksdb') as (p: string) => {
    open(o: object, cb: Cb): void;
    close(cb: Cb): void;
    iterator(o: object): { context: unknown; end(cb: Cb): void };
    context: unknown;
  };
  const b = require('rocksdb/binding.js') as {
    batch_init(ctx: unknown): unknown;
    batch_put(batch: unknown, k: Buffer, v: Buffer): void;
    batch_clear(batch: unknown): void;
    batch_write(batch: unknown, o: { sync: boolean }, cb: Cb): void;
    iterator_next(ctx: unknown, cb: (err: Error | null, entries?: Buffer[], finished?: boolean) => void): void;
  };
  const db = factory(path);
  await new Promise<void>((res, rej) => db.open({ createIfMissing: true, errorIfExists: true, ...open }, (e) => (e ? rej(e) : res())));
  const batches = [b.batch_init(db.context), b.batch_init(db.context)];
  let filling = 0;
  let inFlight: Promise<void> | null = null;
  const self: Db = {
    bytes: 0,
    count: 0,
    put(k, v) {
      b.batch_put(batches[filling], k, v);
      self.bytes += k.length + v.length;
      self.count++;
    },
    async flush(sync) {
      if (inFlight) await inFlight;
      const batch = batches[filling];
      filling ^= 1;
      self.bytes = 0;
      self.count = 0;
      inFlight = new Promise<void>((res, rej) =>
        b.batch_write(batch, { sync }, (e) => {
          b.batch_clear(batch);
          if (e) rej(e);
          else res();
        }),
      );
      if (sync) {
        await inFlight;
        inFlight = null;
      }
    },
    async iterate(onBatch) {
      const it = db.iterator({
        keys: true,
        values: true,
        keyAsBuffer: true,
        valueAsBuffer: true,
        fillCache: false,
        highWaterMark: 1 << 20,
        gte: Buffer.of(PREFIX_KV),
        lt: Buffer.of(PREFIX_KV + 2),
      });
      for (;;) {
        const { entries, finished } = await new Promise<{ entries: Buffer[]; finished: boolean }>((res, rej) =>
          b.iterator_next(it.context, (e, entries, finished) => (e ? rej(e) : res({ entries: entries ?? [], finished: finished === true }))),
        );
        let bytes = 0;
        for (const x of entries) bytes += x.length;
        if (entries.length > 0) onBatch(entries.length / 2, bytes);
        if (finished) break;
      }
      await new Promise<void>((res) => it.end(() => res()));
    },
    syncedPut(k, v) {
      const one = single ?? (single = b.batch_init(db.context));
      b.batch_put(one, k, v);
      return new Promise<void>((res, rej) =>
        b.batch_write(one, { sync: true }, (e) => {
          b.batch_clear(one);
          if (e) rej(e);
          else res();
        }),
      );
    },
    async close() {
      if (inFlight) await inFlight;
      await new Promise<void>((res, rej) => db.close((e) => (e ? rej(e) : res())));
    },
  };
  let single: unknown = null;
  return self;
}

async function openNx(path: string, open: Record<string, unknown>): Promise<Db> {
  const nxDir = arg('nx-dir', '');
  let loaded: unknown;
  try {
    loaded = nxDir !== '' ? require(join(nxDir, 'binding.js')) : require('@nxtedition/rocksdb/binding.js');
  } catch (err) {
    throw new Error(`@nxtedition/rocksdb not found (${(err as Error).message}): install it beside the repository and pass --nx-dir (see the header)`, { cause: err });
  }
  const b = loaded as {
    db_init(location: string): unknown;
    db_open(ctx: unknown, o: object, cb: Cb): unknown;
    db_close(ctx: unknown, cb: Cb): void;
    batch_init(): unknown;
    batch_put(batch: unknown, k: Buffer, v: Buffer, o: object): void;
    batch_clear(batch: unknown): void;
    batch_write(ctx: unknown, batch: unknown, o: { sync: boolean }): void;
    iterator_init(ctx: unknown, o: object): unknown;
    iterator_nextv(it: unknown, count: number, cb: (err: Error | null, r?: { rows: Buffer[]; finished: boolean }) => void): void;
    iterator_close(it: unknown): void;
  };
  const { mkdirSync } = await import('node:fs');
  mkdirSync(path, { recursive: true });
  const ctx = b.db_init(path);
  await new Promise<void>((res, rej) => {
    b.db_open(ctx, { createIfMissing: true, errorIfExists: true, ...open }, (e) => (e ? rej(e) : res()));
  });
  const batch = b.batch_init();
  const EMPTY = {};
  const self: Db = {
    bytes: 0,
    count: 0,
    put(k, v) {
      b.batch_put(batch, k, v, EMPTY);
      self.bytes += k.length + v.length;
      self.count++;
    },
    flush(sync) {
      self.bytes = 0;
      self.count = 0;
      try {
        b.batch_write(ctx, batch, { sync });
      } finally {
        b.batch_clear(batch);
      }
      return Promise.resolve();
    },
    async iterate(onBatch) {
      const it = b.iterator_init(ctx, {
        fillCache: false,
        highWaterMarkBytes: 1 << 20,
        gte: Buffer.of(PREFIX_KV),
        lt: Buffer.of(PREFIX_KV + 2),
        keyEncoding: 'buffer',
        valueEncoding: 'buffer',
      });
      for (;;) {
        const r = await new Promise<{ rows: Buffer[]; finished: boolean }>((res, rej) =>
          b.iterator_nextv(it, 1000, (e, r) => (e ? rej(e) : res(r ?? { rows: [], finished: true }))),
        );
        let bytes = 0;
        for (const x of r.rows) bytes += x.length;
        if (r.rows.length > 0) onBatch(r.rows.length / 2, bytes);
        if (r.finished) break;
      }
      b.iterator_close(it);
    },
    syncedPut(k, v) {
      const one = single ?? (single = b.batch_init());
      b.batch_put(one, k, v, EMPTY);
      try {
        b.batch_write(ctx, one, { sync: true });
      } finally {
        b.batch_clear(one);
      }
      return Promise.resolve();
    },
    async close() {
      await new Promise<void>((res, rej) => b.db_close(ctx, (e) => (e ? rej(e) : res())));
    },
  };
  let single: unknown = null;
  return self;
}

/**
 * openRn: rocksdb-native's public API (a write batch is a list of JS operations handed to the native side at
 * flush, written on the threadpool; there is no sync option: librocksdb writes with RocksDB's default WriteOptions).
 * The final "synced" write of the load is an ordinary write followed by a memtable flush (db.flush: SSTs synced),
 * the only durability the binding offers.
 */
async function openRn(path: string, open: Record<string, unknown>): Promise<Db> {
  const rnDir = arg('rn-dir', '');
  let RocksDB: new (p: string, o: object) => {
    ready(): Promise<void>;
    write(o?: object): { tryPut(k: Buffer, v: Buffer): void; flush(): Promise<void>; destroy(): void };
    iterator(o: object): AsyncIterable<{ key: Buffer; value: Buffer }>;
    flush(o?: object): Promise<void>;
    close(): Promise<void>;
  };
  try {
    RocksDB = rnDir !== '' ? require(rnDir) : require('rocksdb-native');
  } catch (err) {
    throw new Error(`rocksdb-native not found (${(err as Error).message}): install it beside the repository and pass --rn-dir`, { cause: err });
  }
  const db = new RocksDB(path, { createIfMissing: true, ...open });
  await db.ready();
  let batch = db.write({ capacity: 1024 });
  let inFlight: Promise<void> | null = null;
  const self: Db = {
    bytes: 0,
    count: 0,
    put(k, v) {
      // the batch keeps the Buffer until it is written: copy the reused key
      batch.tryPut(Buffer.from(k), v);
      self.bytes += k.length + v.length;
      self.count++;
    },
    async flush(sync) {
      if (inFlight) await inFlight;
      const full = batch;
      batch = db.write({ capacity: 1024 });
      self.bytes = 0;
      self.count = 0;
      inFlight = full.flush().finally(() => full.destroy());
      if (sync) {
        await inFlight;
        inFlight = null;
        await db.flush();
      }
    },
    async iterate(onBatch) {
      let n = 0;
      let bytes = 0;
      for await (const { key, value } of db.iterator({ gte: Buffer.of(PREFIX_KV), lt: Buffer.of(PREFIX_KV + 2) })) {
        n++;
        bytes += key.length + value.length;
        if (n === 1000) {
          onBatch(n, bytes);
          n = 0;
          bytes = 0;
        }
      }
      if (n > 0) onBatch(n, bytes);
    },
    syncedPut: null,
    async close() {
      if (inFlight) await inFlight;
      batch.destroy();
      await db.close();
    },
  };
  return self;
}

function dirFiles(path: string): { sst: number; wal: number; other: number; files: number } {
  const out = { sst: 0, wal: 0, other: 0, files: 0 };
  for (const f of readdirSync(path)) {
    const s = statSync(join(path, f)).size;
    out.files++;
    if (f.endsWith('.sst')) out.sst += s;
    else if (f.endsWith('.log') && /^[0-9]+\.log$/.test(f)) out.wal += s;
    else out.other += s;
  }
  return out;
}

interface Phase {
  wallS: number;
  cpuS: number;
  threads: Record<string, number>;
}

async function measure<T>(fn: () => Promise<T>): Promise<[T, Phase]> {
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const th0 = threadCpu();
  const r = await fn();
  const c1 = process.cpuUsage(c0);
  const cpuS = (c1.user + c1.system) / 1e6;
  const threads = threadCpuByGroup(th0, threadCpu(), cpuS);
  return [r, { wallS: (performance.now() - t0) / 1000, cpuS, threads }];
}

async function child(variantName: string, mix: string, keys: number): Promise<void> {
  const variant = VARIANTS[variantName];
  if (variant === undefined) throw new Error(`unknown variant ${variantName}`);
  const valueBytes = Number(arg('value-bytes', '1024'));
  // random: incompressible values (bench:snapshot's --state-bytes state), slices of a random pool
  const pool = mix === 'etcd' ? Buffer.alloc(valueBytes, 'f') : mix === 'random' ? randomBytes(POOL_BYTES + valueBytes) : textPool(POOL_BYTES + valueBytes);
  const valueOf = (i: number): Buffer => {
    if (mix === 'etcd') return pool;
    const at = (i * 7_919_993) % POOL_BYTES;
    return pool.subarray(at, at + valueBytes);
  };
  for (const lib of variant.preload ?? []) {
    if (!readFileSync('/proc/self/maps', 'utf8').includes(arg(`${lib}-lib`, '\0'))) throw new Error(`${variantName}: the library of --${lib}-lib is not loaded in this process`);
  }
  const dir = mkdtempSync(join(arg('dir', tmpdir()), 'rocks-binding-'));
  const path = join(dir, 'db');
  try {
    const openVariant = (at: string): Promise<Db> =>
      variant.binding === 'old' ? openOld(at, variant.open) : variant.binding === 'nx' ? openNx(at, variant.open) : openRn(at, variant.open);
    // the Raft log's write path, on a database of its own as the log is (log/ beside state-<gen>/), before the load:
    // one entry of ~100 bytes in its own synced batch, one after the other
    const syncWrites = Number(arg('sync-writes', '2000'));
    let synced: { p50Ms: number; p99Ms: number; maxMs: number; blockP50Ms: number; blockP99Ms: number; cpuS: number } | null = null;
    const logDb = syncWrites > 0 ? await openVariant(`${path}-log`) : null;
    if (logDb !== null && logDb.syncedPut !== null) {
      const lat: number[] = [];
      const block: number[] = [];
      const entry = randomBytes(100);
      const lkey = Buffer.alloc(9);
      lkey[0] = 0x6c;
      const c0 = process.cpuUsage();
      for (let i = 0; i < syncWrites; i++) {
        lkey.writeBigUInt64BE(BigInt(i + 1), 1);
        const t0 = performance.now();
        const p = logDb.syncedPut(lkey, entry);
        block.push(performance.now() - t0);
        await p;
        lat.push(performance.now() - t0);
      }
      const c1 = process.cpuUsage(c0);
      const q = (a: number[], f: number): number => [...a].sort((x, y) => x - y)[Math.min(a.length - 1, Math.floor(a.length * f))] ?? 0;
      synced = { p50Ms: q(lat, 0.5), p99Ms: q(lat, 0.99), maxMs: q(lat, 1), blockP50Ms: q(block, 0.5), blockP99Ms: q(block, 0.99), cpuS: (c1.user + c1.system) / 1e6 };
    }
    if (logDb !== null) await logDb.close();
    const db = await openVariant(path);
    const key = Buffer.alloc(14);
    key[0] = PREFIX_KV;
    const [, load] = await measure(async () => {
      for (let i = 0; i < keys; i += 1000) {
        // a source batch of 1,000 records, as the archive reader hands them over
        const end = Math.min(keys, i + 1000);
        for (let j = i; j < end; j++) {
          key.write(`fill/${String(j).padStart(8, '0')}`, 1, 'latin1');
          db.put(key, valueOf(j));
        }
        if (db.bytes >= INSTALL_WRITE_BYTES || db.count >= INSTALL_WRITE_OPS) await db.flush(false);
      }
      if (db.count > 0) await db.flush(false);
      db.put(Buffer.from('m-applied'), Buffer.alloc(8));
      await db.flush(true);
    });
    let entries = 0;
    let bytes = 0;
    const [, iter] = await measure(() =>
      db.iterate((n, b) => {
        entries += n;
        bytes += b;
      }),
    );
    if (entries !== keys) throw new Error(`iterated ${entries} entries, loaded ${keys}`);
    const [, close] = await measure(() => db.close());
    const files = dirFiles(path);
    const hwm = /VmHWM:\s+([0-9]+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1];
    console.log(JSON.stringify({ variant: variantName, mix, keys, load, iter, synced, close, iterBytes: bytes, files, peakRssMiB: Math.round(Number(hwm) / 1024) }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function fmt(p: Phase): string {
  return `wall ${p.wallS.toFixed(2)} s cpu ${p.cpuS.toFixed(2)} s [${fmtThreadCpu(p.threads)}]`;
}

function syncedLine(s: { p50Ms: number; p99Ms: number; maxMs: number; blockP50Ms: number; blockP99Ms: number; cpuS: number } | null): string {
  if (s === null) return 'synced 1-entry writes: n/a (the binding has no synced write)';
  return (
    `synced 1-entry writes: p50 ${s.p50Ms.toFixed(3)} ms p99 ${s.p99Ms.toFixed(3)} ms max ${s.maxMs.toFixed(2)} ms; ` +
    `main thread held per call p50 ${s.blockP50Ms.toFixed(3)} p99 ${s.blockP99Ms.toFixed(3)} ms; process cpu ${s.cpuS.toFixed(2)} s`
  );
}

function parent(): void {
  const keys = Number(arg('keys', '1000000'));
  const mixes = arg('mix', 'etcd,text').split(',');
  const rounds = Number(arg('rounds', '3'));
  const variants = arg('variants', 'old,nx-plain').split(',');
  const passthrough: string[] = [];
  for (const a of ['nx-dir', 'rn-dir', 'hwcrc-lib', 'nowal-lib', 'dir', 'value-bytes', 'sync-writes']) {
    const v = arg(a, '');
    if (v !== '') passthrough.push(`--${a}`, v);
  }
  for (const mix of mixes) {
    for (let r = 1; r <= rounds; r++) {
      const order = r % 2 === 1 ? variants : [...variants].reverse();
      for (const v of order) {
        const up = spawnSync('uptime', { encoding: 'utf8' }).stdout.trim().replace(/.*load average: /, 'load ');
        const preload = (VARIANTS[v]?.preload ?? []).map((lib) => {
          const path = arg(`${lib}-lib`, '');
          if (path === '') throw new Error(`${v} needs --${lib}-lib PATH (see the header)`);
          return path;
        });
        const res = spawnSync(process.execPath, [...process.execArgv, process.argv[1] ?? '', '--child', v, '--mix', mix, '--keys', String(keys), ...passthrough], {
          encoding: 'utf8',
          env: preload.length > 0 ? { ...process.env, LD_PRELOAD: preload.join(' ') } : process.env,
          stdio: ['ignore', 'pipe', 'inherit'],
        });
        const line = res.stdout.split('\n').find((l) => l.startsWith('{'));
        if (res.status !== 0 || line === undefined) {
          console.log(`${mix} r${r} ${v}: failed (${res.status}) ${res.stdout}`);
          continue;
        }
        const o = JSON.parse(line) as {
          load: Phase;
          iter: Phase;
          synced: { p50Ms: number; p99Ms: number; maxMs: number; blockP50Ms: number; blockP99Ms: number; cpuS: number } | null;
          close: Phase; files: { sst: number; wal: number; other: number; files: number }; peakRssMiB: number };
        const mb = (n: number): string => (n / 2 ** 20).toFixed(0);
        console.log(
          `${mix} r${r} ${v.padEnd(20)} (${up})\n  load: ${fmt(o.load)}\n  iter: ${fmt(o.iter)}\n  ${syncedLine(o.synced)}\n  close ${o.close.wallS.toFixed(2)} s cpu ${o.close.cpuS.toFixed(2)} s; files ${o.files.files}: sst ${mb(o.files.sst)} MiB, wal ${mb(o.files.wal)} MiB, other ${mb(o.files.other)} MiB; peak RSS ${o.peakRssMiB} MiB`,
        );
      }
    }
  }
}

const childVariant = arg('child', '');
if (childVariant !== '') {
  await child(childVariant, arg('mix', 'etcd'), Number(arg('keys', '1000000')));
} else {
  parent();
}
