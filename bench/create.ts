/**
 * bench/create.ts: micro benchmark of snapshot creation and install on one
 * RocksStorage, for random values and for text-like values (about 2:1 under
 * gzip). For each value mix it prints, in MB/s of state.bin bytes:
 *
 *   - gzip-1 on one core of the same state.bin bytes (zlib stream, the yardstick);
 *   - create via a state.bin file: snapshotState -> encodeStateRecords -> file,
 *     then writeArchive(file) -> archive file (fsynced);
 *   - create via writeArchiveFromRecords (iteration, encoding, parallel gzip,
 *     spool), when the tree has it;
 *   - install: installState from records in memory (the bench's own load), and
 *     from the archive (readArchive -> checkedStateRecords -> installState,
 *     decoding as a node's install does: INSTALL_DECODE_OPTIONS);
 *   - a gzip level table (1, 6, 9, Huffman-only) on 32 MiB of the state:
 *     MB per CPU-second and ratio.
 *
 * It prints figures and ratios; it never passes or fails on time.
 *
 *   npx tsx bench/create.ts [--state-mb 256] [--value-bytes 1024] [--mix random|text|both]
 *                           [--in-flight N] [--level 1] [--adaptive on|off]
 *                           [--dir /some/disk] [--rounds 1]
 */
import { createReadStream } from 'node:fs';
import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { constants as zlibConstants, createGzip, gzipSync, type ZlibOptions } from 'node:zlib';

import * as archive from '../src/snapshot/archive.js';
import { INSTALL_DECODE_OPTIONS, checkedStateRecords, encodeStateRecords } from '../src/snapshot/state-format.js';
import { RocksStorage } from '../src/storage/rocks-storage.js';
import type { KeyValue } from '../src/storage/types.js';
import { SeededRng } from '../test/harness/rng.js';

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? (process.argv[i + 1] ?? fallback) : fallback;
}

const stateMb = Number(flag('state-mb', '256'));
const valueBytes = Number(flag('value-bytes', '1024'));
const mixFlag = flag('mix', 'both');
const inFlight = flag('in-flight', '');
const level = Number(flag('level', '1'));
const parent = flag('dir', tmpdir());
const rounds = Number(flag('rounds', '1'));
const adaptive = flag('adaptive', 'on') !== 'off';
const membership = { voters: ['n1'], learners: [], addresses: { n1: '127.0.0.1:7101' } };

/** rng: a seeded generator (SeededRng), so runs are comparable: floats in [0, 1). */
function rng(seed: number): () => number {
  const r = new SeededRng(seed);
  return () => r.nextFloat();
}

const POOL_BYTES = 32 * 1024 * 1024;

/** randomPool: incompressible bytes. */
function randomPool(): Buffer {
  const next = rng(7);
  const pool = Buffer.allocUnsafe(POOL_BYTES);
  for (let i = 0; i < POOL_BYTES; i += 4) pool.writeUInt32LE(Math.floor(next() * 2 ** 32), i);
  return pool;
}

/** textPool: words from an 8,192-word vocabulary of random letters, with some base-36 numbers: ~1.9:1 under gzip -1. */
function textPool(): Buffer {
  const next = rng(11);
  const vocab: string[] = [];
  for (let i = 0; i < 8192; i++) {
    const len = 3 + Math.floor(next() * 8);
    let w = '';
    for (let j = 0; j < len; j++) w += String.fromCharCode(97 + Math.floor(next() * 26));
    vocab.push(w);
  }
  const parts: string[] = [];
  let len = 0;
  while (len < POOL_BYTES) {
    const w = next() < 0.08 ? Math.floor(next() * 1e9).toString(36) : vocab[Math.floor(next() * vocab.length)]!;
    parts.push(w);
    len += w.length + 1;
  }
  return Buffer.from(parts.join(' ')).subarray(0, POOL_BYTES);
}

function mbps(bytes: number, ms: number): number {
  return bytes / 1e6 / (ms / 1000);
}

function cpuMs(since: NodeJS.CpuUsage): number {
  const c = process.cpuUsage(since);
  return (c.user + c.system) / 1000;
}

/** nullSink: a Writable that keeps nothing. */
function nullSink(): Writable {
  return new Writable({ write: (_c, _e, cb) => cb(), writev: (_c, cb) => cb() });
}

/** fileSink: a Writable into a new file, fsynced before it finishes. */
async function fileSink(path: string): Promise<Writable> {
  const handle = await open(path, 'wx', 0o600);
  return new Writable({
    highWaterMark: 1024 * 1024,
    write(chunk: Buffer, _e, cb) {
      handle.write(chunk).then(() => cb(), cb);
    },
    final(cb) {
      handle
        .sync()
        .then(() => handle.close())
        .then(() => cb(), cb);
    },
    destroy(err, cb) {
      handle.close().then(
        () => cb(err),
        () => cb(err),
      );
    },
  });
}

interface Row {
  readonly what: string;
  readonly mbps: number;
  readonly detail: string;
}

async function benchMix(mix: 'random' | 'text', root: string): Promise<Row[]> {
  const pool = mix === 'random' ? randomPool() : textPool();
  const keyCount = Math.ceil((stateMb * 1e6) / (valueBytes + 21));
  const rows: Row[] = [];
  const dataDir = join(root, `data-${mix}`);
  const storage = await RocksStorage.open(dataDir);
  try {
    // load: installState from records made in memory.
    const offsets = rng(3);
    async function* records(): AsyncGenerator<KeyValue[]> {
      for (let i = 0; i < keyCount; ) {
        const batch: KeyValue[] = [];
        for (const end = Math.min(keyCount, i + 1000); i < end; i++) {
          const at = Math.floor(offsets() * (POOL_BYTES - valueBytes));
          batch.push({ key: Buffer.from(`fill/${String(i).padStart(8, '0')}`), value: pool.subarray(at, at + valueBytes) });
        }
        yield batch;
      }
    }
    let t = performance.now();
    await storage.installState(records(), { appliedIndex: 1, membership });
    const loadMs = performance.now() - t;
    const stateBytes = keyCount * (8 + 13 + valueBytes);
    rows.push({ what: 'install: installState, records in memory', mbps: mbps(stateBytes, loadMs), detail: `${keyCount.toLocaleString('en-US')} keys, ${(loadMs / 1000).toFixed(1)} s` });

    const createdAt = new Date().toISOString();
    const meta = { id: 'bench', index: 1, term: 1, membership, createdAt, snapcoordVersion: '0.0.0' };
    const gzipOptions = {
      gzipLevel: level,
      gzipAdaptive: adaptive,
      ...(inFlight !== '' ? { gzipInFlightMax: Number(inFlight) } : {}),
    };
    for (let round = 0; round < rounds; round++) {
      // create via a state.bin file, then writeArchive(file).
      const statePath = join(root, `${mix}-${round}-state.bin`);
      const filePath = join(root, `${mix}-${round}-file.tar.gz`);
      t = performance.now();
      let c0 = process.cpuUsage();
      const reader = await storage.snapshotState();
      const enc = encodeStateRecords(reader.batches());
      await pipeline(enc, await fileSink(statePath));
      const encodeMs = performance.now() - t;
      const written = await archive.writeArchive({ ...meta, stateKeys: enc.keys }, statePath, await fileSink(filePath), gzipOptions);
      const fileMs = performance.now() - t;
      const fileCpu = cpuMs(c0);
      const sb = written.meta.stateBytes;
      rows.push({
        what: 'create: state.bin file + writeArchive',
        mbps: mbps(sb, fileMs),
        detail: `${(fileMs / 1000).toFixed(1)} s (state file ${(encodeMs / 1000).toFixed(1)} s), CPU ${(fileCpu / fileMs).toFixed(2)} cores, ratio ${(sb / written.archiveBytes).toFixed(2)}`,
      });

      // the yardstick: gzip -1 of the same state.bin bytes on one core (one zlib stream).
      t = performance.now();
      c0 = process.cpuUsage();
      await pipeline(createReadStream(statePath, { highWaterMark: 1024 * 1024 }), createGzip({ level: 1, chunkSize: 64 * 1024 }), nullSink());
      const gzMs = performance.now() - t;
      const gzMbps = mbps(sb, gzMs);
      rows.push({ what: 'yardstick: gzip -1 of state.bin, one core', mbps: gzMbps, detail: `${(gzMs / 1000).toFixed(1)} s, CPU ${(cpuMs(c0) / gzMs).toFixed(2)} cores` });

      const fromRecords = (archive as Partial<typeof archive>).writeArchiveFromRecords;
      let archivePath = filePath;
      if (fromRecords !== undefined) {
        const recPath = join(root, `${mix}-${round}-records.tar.gz`);
        t = performance.now();
        c0 = process.cpuUsage();
        const r2 = await storage.snapshotState();
        const w2 = await fromRecords(meta, { records: r2.batches(), spoolPath: join(root, `${mix}-${round}.spool`) }, await fileSink(recPath), gzipOptions);
        const recMs = performance.now() - t;
        const recCpu = cpuMs(c0);
        if (w2.stateSha256 !== written.stateSha256) throw new Error('writeArchiveFromRecords: state.bin differs from the file path');
        rows.push({
          what: 'create: writeArchiveFromRecords (pipeline)',
          mbps: mbps(sb, recMs),
          detail: `${(recMs / 1000).toFixed(1)} s, CPU ${(recCpu / recMs).toFixed(2)} cores, ratio ${(sb / w2.archiveBytes).toFixed(2)}, ${(mbps(sb, recMs) / gzMbps).toFixed(2)}x gzip -1 on one core`,
        });
        archivePath = recPath;
      }
      rows.push({ what: '  (file path vs yardstick)', mbps: mbps(sb, fileMs) / gzMbps, detail: 'x gzip -1 on one core' });

      // install from the archive: readArchive -> checkedStateRecords -> installState (a follower's install).
      t = performance.now();
      c0 = process.cpuUsage();
      await archive.readArchive(createReadStream(archivePath, { highWaterMark: 1024 * 1024 }), async (m, state) => {
        await storage.installState(checkedStateRecords(state, m, INSTALL_DECODE_OPTIONS), { appliedIndex: 2 + round, membership });
      });
      const instMs = performance.now() - t;
      rows.push({ what: 'install: readArchive -> installState', mbps: mbps(sb, instMs), detail: `${(instMs / 1000).toFixed(1)} s, CPU ${(cpuMs(c0) / instMs).toFixed(2)} cores, archive ${((await stat(archivePath)).size / 1e6).toFixed(0)} MB` });
      await rm(statePath, { force: true });
    }

    // gzip levels on 32 MiB of the state (the pool the values come from).
    const sample = pool.subarray(0, 32 * 1024 * 1024);
    const levels: [string, ZlibOptions][] = [
      ['level 1', { level: 1 }],
      ['level 6', { level: 6 }],
      ['level 9', { level: 9 }],
      ['Huffman only', { level: 1, strategy: zlibConstants.Z_HUFFMAN_ONLY }],
    ];
    for (const [name, o] of levels) {
      const c = process.cpuUsage();
      const out = gzipSync(sample, o);
      const ms = cpuMs(c);
      rows.push({ what: `gzip ${name}, one core`, mbps: mbps(sample.length, ms), detail: `ratio ${(sample.length / out.length).toFixed(2)} (MB per CPU-second)` });
    }
  } finally {
    await storage.close();
    await rm(dataDir, { recursive: true, force: true });
  }
  return rows;
}

async function main(): Promise<void> {
  const root = await mkdtemp(join(parent, 'snapcoord-create-'));
  const mixes: ('random' | 'text')[] = mixFlag === 'both' ? ['random', 'text'] : [mixFlag as 'random' | 'text'];
  console.log(
    `bench/create: ${stateMb} MB of state per mix, ${valueBytes} B values, gzip level ${level}, in flight ${inFlight === '' ? 'default' : inFlight}, ` +
      `blocks ${adaptive ? 'adaptive (stored / Huffman only / deflate by sample)' : `all deflated at level ${level}`}, in ${root}`,
  );
  try {
    for (const mix of mixes) {
      const rows = await benchMix(mix, root);
      console.log(`\n${mix} values`);
      for (const r of rows) console.log(`  ${r.what.padEnd(46)} ${r.mbps.toFixed(r.mbps < 10 ? 2 : 0).padStart(7)} ${r.what.startsWith('  ') ? '' : 'MB/s'}  ${r.detail}`);
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

await main();
