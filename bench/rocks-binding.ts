/**
 * bench/rocks-binding.ts: the `rocksdb` binding (5.2.1, RocksDB 6.17, the one src/storage/rocks.ts uses) against
 * `@nxtedition/rocksdb` (12.x, RocksDB 9.7) on the two RocksDB jobs of a snapshot: the bulk load of an install
 * (K keys of the etcd mix or the text mix of bench:snapshot-cluster, written the way RocksStorage's install writes
 * them: native batches of up to 2 MiB / 16,384 puts, one written while the next is filled, unsynced, then one synced
 * write of one key; nx's batch_write is synchronous, on the main thread) into a fresh database, then a full iteration in bounded batches (what snapshot creation does:
 * 1,000 entries or 1 MiB per native call, fillCache off). Each variant runs in its own child process; the parent
 * alternates the variants for R rounds and prints, per run: wall time, process CPU, CPU by thread group (from
 * /proc/self/task; `node` is the threads Node 20 leaves unnamed: libuv's threadpool and V8's workers), the database's
 * files (SST and WAL bytes) after close, and the child's peak RSS. Figures only.
 *
 *   npx tsx bench/rocks-binding.ts [--keys 1000000] [--mix etcd,text] [--rounds 3] [--variants old,nx-plain,...]
 *       [--nx-dir DIR] [--dir DIR]
 *
 * @nxtedition/rocksdb is not a dependency: for the nx variants install it beside the repository
 * (`mkdir /tmp/nx && cd /tmp/nx && npm init -y && npm install @nxtedition/rocksdb@12.2.12`) and pass
 * --nx-dir /tmp/nx/node_modules/@nxtedition/rocksdb.
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
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { arg } from './lib/arg.js';
import { textPool } from './lib/text-pool.js';
import { fmtThreadCpu, threadCpu, threadCpuByGroup } from './lib/thread-cpu.js';

const require = createRequire(import.meta.url);

/** VARIANTS: binding and open options. `old` is the state generation's options in rocks-storage.ts. */
const VARIANTS: Record<string, { binding: 'old' | 'nx'; open: Record<string, unknown> }> = {
  old: { binding: 'old', open: { writeBufferSize: 8 << 20, blockSize: 16 << 10 } },
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
    async close() {
      if (inFlight) await inFlight;
      await new Promise<void>((res, rej) => db.close((e) => (e ? rej(e) : res())));
    },
  };
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
    async close() {
      await new Promise<void>((res, rej) => b.db_close(ctx, (e) => (e ? rej(e) : res())));
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
  const pool = mix === 'etcd' ? Buffer.alloc(valueBytes, 'f') : textPool(POOL_BYTES + valueBytes);
  const valueOf = (i: number): Buffer => {
    if (mix === 'etcd') return pool;
    const at = (i * 7_919_993) % POOL_BYTES;
    return pool.subarray(at, at + valueBytes);
  };
  const dir = mkdtempSync(join(arg('dir', tmpdir()), 'rocks-binding-'));
  const path = join(dir, 'db');
  try {
    const db = variant.binding === 'old' ? await openOld(path, variant.open) : await openNx(path, variant.open);
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
    console.log(JSON.stringify({ variant: variantName, mix, keys, load, iter, close, iterBytes: bytes, files, peakRssMiB: Math.round(Number(hwm) / 1024) }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function fmt(p: Phase): string {
  return `wall ${p.wallS.toFixed(2)} s cpu ${p.cpuS.toFixed(2)} s [${fmtThreadCpu(p.threads)}]`;
}

function parent(): void {
  const keys = Number(arg('keys', '1000000'));
  const mixes = arg('mix', 'etcd,text').split(',');
  const rounds = Number(arg('rounds', '3'));
  const variants = arg('variants', 'old,nx-plain').split(',');
  const passthrough: string[] = [];
  for (const a of ['nx-dir', 'dir', 'value-bytes']) {
    const v = arg(a, '');
    if (v !== '') passthrough.push(`--${a}`, v);
  }
  for (const mix of mixes) {
    for (let r = 1; r <= rounds; r++) {
      const order = r % 2 === 1 ? variants : [...variants].reverse();
      for (const v of order) {
        const up = spawnSync('uptime', { encoding: 'utf8' }).stdout.trim().replace(/.*load average: /, 'load ');
        const res = spawnSync(process.execPath, [...process.execArgv, process.argv[1] ?? '', '--child', v, '--mix', mix, '--keys', String(keys), ...passthrough], {
          encoding: 'utf8',
          stdio: ['ignore', 'pipe', 'inherit'],
        });
        const line = res.stdout.split('\n').find((l) => l.startsWith('{'));
        if (res.status !== 0 || line === undefined) {
          console.log(`${mix} r${r} ${v}: failed (${res.status}) ${res.stdout}`);
          continue;
        }
        const o = JSON.parse(line) as { load: Phase; iter: Phase; close: Phase; files: { sst: number; wal: number; other: number; files: number }; peakRssMiB: number };
        const mb = (n: number): string => (n / 2 ** 20).toFixed(0);
        console.log(
          `${mix} r${r} ${v.padEnd(20)} (${up})\n  load: ${fmt(o.load)}\n  iter: ${fmt(o.iter)}\n  close ${o.close.wallS.toFixed(2)} s; files ${o.files.files}: sst ${mb(o.files.sst)} MiB, wal ${mb(o.files.wal)} MiB, other ${mb(o.files.other)} MiB; peak RSS ${o.peakRssMiB} MiB`,
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
