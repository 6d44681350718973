/**
 * RocksStorage-only properties of state snapshots and installs: the data
 * dir layout and its generations, bounded memory on a large snapshot, and
 * installState's atomicity under SIGKILL of a child process.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cp, mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

import type { Membership } from '../../../src/raft/types.js';
import { MemoryStorage } from '../../../src/storage/memory-storage.js';
import { RocksDb } from '../../../src/storage/rocks.js';
import { RocksStorage, type InstallPhase } from '../../../src/storage/rocks-storage.js';
import type { StateBatch } from '../../../src/storage/types.js';
import { generatedDigest, generatedMembership, generatedState, type GeneratedStateSpec } from './fixtures/generated-state.js';
import { rejectsWith } from './helpers.js';

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
const text = (b: Uint8Array | undefined): string | undefined => (b === undefined ? undefined : new TextDecoder().decode(b));
const membership: Membership = { voters: ['n1'], learners: [], addresses: { n1: 'a:1' } };

/** putBatch is one state write at applied index `index` putting `count` keys `<prefix><i>` = `<value><i>`. */
function putBatch(index: number, prefix: string, count: number, value = 'v'): StateBatch {
  const writes = Array.from({ length: count }, (_, i) => ({ key: bytes(`${prefix}${i}`), value: bytes(`${value}${i}`) }));
  return { writes, appliedIndex: index };
}

async function waitFor(condition: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.fail(`timed out waiting for ${what}`);
}

describe('RocksStorage state generations', () => {
  let root: string;
  let dataDir: string;

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'snapcoord-state-'));
    dataDir = join(root, 'data');
  });

  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('a state write makes no Buffer per key it writes (the prefixed keys in reused scratch buffers, copied into the native batch), and reads back every key', async () => {
    const store = await RocksStorage.open(dataDir);
    try {
      await store.write(putBatch(1, 'warm/', 4));
      // Keys of several lengths, some repeated and deleted in the same batch (a later write wins), values as plain Uint8Arrays.
      const writes = Array.from({ length: 1_000 }, (_, i) => ({ key: bytes(`k/${i % 700}/${'x'.repeat(i % 5)}`), value: i % 7 === 0 ? null : bytes(`v${i}`) }));
      const made = { allocUnsafe: 0, from: 0 };
      const { allocUnsafe, from } = Buffer;
      Buffer.allocUnsafe = (size: number) => ((made.allocUnsafe += 1), allocUnsafe(size));
      Buffer.from = ((...args: Parameters<typeof Buffer.from>) => ((made.from += 1), from(...args))) as typeof Buffer.from;
      try {
        await store.write({ writes, appliedIndex: 2 });
      } finally {
        Buffer.allocUnsafe = allocUnsafe;
        Buffer.from = from;
      }
      // Before: a Buffer for each prefixed key (1,000) and one wrapping each value that was not a Buffer.
      assert.ok(made.allocUnsafe + made.from <= 4, `${made.allocUnsafe} + ${made.from} Buffers made for 1,000 writes`);
      const last = new Map<string, string | undefined>();
      for (const [i, w] of writes.entries()) last.set(new TextDecoder().decode(w.key), w.value === null ? undefined : `v${i}`);
      for (const [k, v] of last) assert.equal(text(await store.get(bytes(k))), v, k);
      assert.equal(store.appliedIndex(), 2);
    } finally {
      await store.close();
    }
  });

  it('lays out log/, state-<gen>/ and the STATE pointer; an install moves to the next generation', async () => {
    const store = await RocksStorage.open(dataDir);
    try {
      assert.deepEqual((await readdir(dataDir)).sort(), ['STATE', 'log', 'state-1']);
      assert.deepEqual(JSON.parse(await readFile(join(dataDir, 'STATE'), 'utf8')), { generation: 1 });
      assert.equal(store.path, join(dataDir, 'log'));
      assert.equal(store.statePath, join(dataDir, 'state-1'));
      await store.write(putBatch(1, 'k', 10));
      await store.installState([[{ key: bytes('x'), value: bytes('y') }]], { appliedIndex: 7, membership });
      assert.deepEqual((await readdir(dataDir)).sort(), ['STATE', 'log', 'state-2']);
      assert.deepEqual(JSON.parse(await readFile(join(dataDir, 'STATE'), 'utf8')), { generation: 2 });
      assert.equal(store.statePath, join(dataDir, 'state-2'));
    } finally {
      await store.close();
    }
  });

  it('refuses a data dir with the old single-database layout', async () => {
    await mkdir(dataDir);
    const old = await RocksDb.open(join(dataDir, 'db'));
    await old.write([{ type: 'put', key: Buffer.from('mapplied'), value: Buffer.alloc(8) }], { sync: true });
    await old.close();
    await rejectsWith(RocksStorage.open(dataDir), 'unknownFormat', /old single-database layout .*data\/db.*no migration/);
    assert.deepEqual(await readdir(dataDir), ['db']); // nothing was created beside it
  });

  it('on open, deletes generations STATE does not name and a stray STATE.tmp; refuses a missing or dangling STATE', async () => {
    let store = await RocksStorage.open(dataDir);
    await store.save({ hardState: { term: 1, vote: 'n1', commit: 0 } });
    await store.write(putBatch(1, 'k', 5));
    const digest = await store.stateDigest();
    await store.close();
    await mkdir(join(dataDir, 'state-2'));
    await writeFile(join(dataDir, 'state-2', 'CURRENT'), 'half-built\n');
    await mkdir(join(dataDir, 'state-17'));
    await writeFile(join(dataDir, 'STATE.tmp'), '{"generation":2}\n');
    store = await RocksStorage.open(dataDir);
    assert.deepEqual((await readdir(dataDir)).sort(), ['STATE', 'log', 'state-1']);
    assert.equal(await store.stateDigest(), digest);
    await store.close();

    await writeFile(join(dataDir, 'STATE'), '{"generation":3}\n');
    await rejectsWith(RocksStorage.open(dataDir), 'corrupt', /STATE names .*state-3, which is missing/);
    await rm(join(dataDir, 'STATE'));
    await rejectsWith(RocksStorage.open(dataDir), 'corrupt', /holds data but .*STATE .* is missing/);
    await writeFile(join(dataDir, 'STATE'), 'not json');
    await rejectsWith(RocksStorage.open(dataDir), 'corrupt', /state pointer is not JSON/);
  });

  it('a STATE naming a missing generation, or one that does not open, is refused with the other generations left in place', async () => {
    // Before: every generation STATE did not name was deleted first, then the open was refused: the state an
    // operator could point STATE back to was gone.
    let store = await RocksStorage.open(dataDir);
    await store.save({ hardState: { term: 1, vote: 'n1', commit: 0 } });
    await store.write(putBatch(1, 'k', 5));
    const digest = await store.stateDigest();
    await store.close();
    await writeFile(join(dataDir, 'STATE'), '{"generation":3}\n'); // one bit from {"generation":1}
    await rejectsWith(RocksStorage.open(dataDir), 'corrupt', /STATE names .*state-3, which is missing \(it holds state-1, left as they are\)/);
    assert.deepEqual((await readdir(dataDir)).sort(), ['STATE', 'log', 'state-1']);
    await writeFile(join(dataDir, 'STATE'), '{"generation":1}\n');
    store = await RocksStorage.open(dataDir);
    assert.equal(await store.stateDigest(), digest);
    // The next generation committed, the old one still on disk (a crash before its deletion), then the new one damaged.
    await store.close();
    await cp(join(dataDir, 'state-1'), join(root, 'state-1-kept'), { recursive: true });
    store = await RocksStorage.open(dataDir);
    await store.installState([[{ key: bytes('x'), value: bytes('y') }]], { appliedIndex: 2, membership });
    await store.close();
    await cp(join(root, 'state-1-kept'), join(dataDir, 'state-1'), { recursive: true });
    await rm(join(dataDir, 'state-2', 'CURRENT'));
    await rejectsWith(RocksStorage.open(dataDir), 'io', /cannot open .*state-2/);
    assert.deepEqual((await readdir(dataDir)).sort(), ['STATE', 'log', 'state-1', 'state-2']);
  });

  it('refuses a log that lost its CURRENT, or is gone, touching nothing; given its file back it opens with every entry and the vote', async () => {
    // Before: RocksDB was told to create the log when missing. The first open over a log without CURRENT made a new
    // database there (deleting the SST that held the hard state, the entries and the identity) and failed on the
    // WAL; the second opened an empty log: term 0, no vote, no entry, and a new identity was accepted.
    const entries = Array.from({ length: 20 }, (_, i) => ({ index: i + 1, term: 3, type: 'normal' as const, data: bytes(`e${i + 1}`) }));
    let store = await RocksStorage.open(dataDir);
    await store.checkIdentity({ nodeId: 'n1', clusterId: 'c1', formatVersion: 2 }, { createIfNew: true });
    await store.save({ hardState: { term: 3, vote: 'n2', commit: 0 }, entries });
    await store.close();
    store = await RocksStorage.open(dataDir); // the WAL replayed into an SST: the records live there now
    await store.close();
    const logDir = join(dataDir, 'log');
    const listing = async (): Promise<string[]> => (await readdir(logDir)).sort();
    const current = await readFile(join(logDir, 'CURRENT'));
    await rm(join(logDir, 'CURRENT'));
    const before = await listing();
    assert.ok(before.some((f) => f.endsWith('.sst')), before.join(' '));
    for (let attempt = 0; attempt < 2; attempt++) {
      await rejectsWith(RocksStorage.open(dataDir), 'corrupt', /its Raft log has no .*log\/CURRENT \(it holds .*\.sst.*\): refusing to open it/);
      assert.deepEqual(await listing(), before, 'nothing in log/ was touched');
    }
    // Both gone, the log dir and its pointer: refused too, no new log made.
    await rename(logDir, join(root, 'log-away'));
    await rejectsWith(RocksStorage.open(dataDir), 'corrupt', /its Raft log .*data\/log is missing \(the data dir holds STATE/);
    assert.deepEqual((await readdir(dataDir)).sort(), ['STATE', 'state-1']);
    await rename(join(root, 'log-away'), logDir);
    await writeFile(join(logDir, 'CURRENT'), current);
    store = await RocksStorage.open(dataDir);
    try {
      const loaded = await store.load();
      assert.deepEqual(loaded.hardState, { term: 3, vote: 'n2', commit: 0 });
      assert.deepEqual(loaded.entries.map((e) => text(e.data)), entries.map((e) => text(e.data)));
      assert.deepEqual(await store.readIdentity(), { nodeId: 'n1', clusterId: 'c1', formatVersion: 2 });
    } finally {
      await store.close();
    }
  });

  it('creates the log of a new data dir, and of one whose first open stopped before its STATE (no record file in log/)', async () => {
    let store = await RocksStorage.open(dataDir);
    await store.close();
    // A first open that stopped after RocksDB wrote its manifest and before CURRENT (no STATE yet, no WAL, no SST).
    await rm(join(dataDir, 'STATE'));
    for (const f of await readdir(join(dataDir, 'log'))) if (f === 'CURRENT' || f.endsWith('.log')) await rm(join(dataDir, 'log', f));
    store = await RocksStorage.open(dataDir);
    await store.close();
    assert.deepEqual((await readdir(dataDir)).sort(), ['STATE', 'log', 'state-1']);
  });

  it('keeps the old generation while a snapshot reader holds it, deletes it when the reader closes', async () => {
    const store = await RocksStorage.open(dataDir);
    try {
      await store.write(putBatch(1, 'old', 3));
      const reader = await store.snapshotState();
      await store.installState([[{ key: bytes('new'), value: bytes('1') }]], { appliedIndex: 9, membership });
      assert.deepEqual((await readdir(dataDir)).sort(), ['STATE', 'log', 'state-1', 'state-2']);
      const seen: string[] = [];
      for await (const batch of reader.batches()) for (const { key } of batch) seen.push(text(key) ?? '');
      assert.deepEqual(seen, ['old0', 'old1', 'old2'], 'the view holds exactly the bytes written before the install');
      await waitFor(async () => !(await readdir(dataDir)).includes('state-1'), 'state-1 to be deleted');
      assert.equal(text(await store.get(bytes('new'))), '1');
    } finally {
      await store.close();
    }
  });

  it('close() during an install aborts it and leaves the old state', async () => {
    let store = await RocksStorage.open(dataDir);
    await store.write(putBatch(1, 'old', 3));
    const digest = await store.stateDigest();
    const install = store.installState(
      generatedState({ count: 5000, valueBytes: 10, seed: 1, batchSize: 100 }),
      { appliedIndex: 50, membership },
    );
    // close while the install is streaming
    await new Promise((resolve) => setTimeout(resolve, 5));
    const closing = store.close();
    await rejectsWith(install, 'closed');
    await closing;
    store = await RocksStorage.open(dataDir);
    assert.equal(await store.stateDigest(), digest);
    assert.deepEqual((await readdir(dataDir)).sort(), ['STATE', 'log', 'state-1']);
    await store.close();
  });

  it('streams a 200k-key snapshot in bounded batches with flat memory, while applies go on', async function () {
    this.timeout(180_000);
    const spec: GeneratedStateSpec = { count: 200_000, valueBytes: 500, seed: 7, batchSize: 2000 };
    const stateBytes = spec.count * (20 + spec.valueBytes);
    const store = await RocksStorage.open(dataDir);
    try {
      await store.installState(generatedState(spec), { appliedIndex: 1000, membership: generatedMembership });
      // measure what stays reachable (after a full GC), not what the collector has yet to reclaim
      setFlagsFromString('--expose-gc');
      const gc = runInNewContext('gc') as () => void;
      const retained = (): number => {
        gc();
        const m = process.memoryUsage();
        return m.heapUsed + m.external;
      };
      const base = retained();
      let peak = 0;
      let batches = 0;
      let count = 0;
      let maxBatchBytes = 0;
      let next = 1001;
      const reader = await store.snapshotState();
      assert.equal(reader.appliedIndex, 1000);
      let expectKey = 0;
      for await (const batch of reader.batches(1000, 256 * 1024)) {
        let batchBytes = 0;
        for (const { key, value } of batch) {
          batchBytes += key.length + value.length;
          assert.equal(text(key), `gen/7/${String(expectKey++).padStart(9, '0')}`);
        }
        assert.ok(batch.length <= 1000);
        maxBatchBytes = Math.max(maxBatchBytes, batchBytes);
        count += batch.length;
        if (++batches % 25 === 0) peak = Math.max(peak, retained() - base);
        // overwrite keys not yet streamed: the view must not change
        if (count % 20_000 < batch.length) await store.write(putBatch(next++, 'gen/7/', 100, 'changed'));
      }
      assert.equal(count, spec.count);
      console.log(`      streamed ${(stateBytes / 1e6).toFixed(0)} MB; retained heap+external grew by at most ${(peak / 1e6).toFixed(1)} MB`);
      assert.ok(maxBatchBytes < 256 * 1024 + 1024, `largest batch ${maxBatchBytes} B`);
      // the state is ~100 MB; what the stream holds is about one batch
      assert.ok(peak < 16 * 1024 * 1024, `retained memory grew by ${(peak / 1e6).toFixed(1)} MB while streaming ${(stateBytes / 1e6).toFixed(0)} MB`);
      assert.notEqual(await store.stateDigest(), generatedDigest(spec, 1000)); // the applies changed it
    } finally {
      await store.close();
    }
  });

  it('gives the same digest as MemoryStorage for the same state', async () => {
    const spec: GeneratedStateSpec = { count: 3000, valueBytes: 40, seed: 3 };
    const rocks = await RocksStorage.open(dataDir);
    const memory = await MemoryStorage.open();
    try {
      for (const s of [rocks, memory]) {
        await s.installState(generatedState(spec), { appliedIndex: 77, membership });
        await s.write(putBatch(78, 'extra', 10));
      }
      const digest = await rocks.stateDigest();
      assert.equal(await memory.stateDigest(), digest);
      const again = await RocksStorage.open(join(root, 'other'));
      await again.installState(generatedState(spec), { appliedIndex: 77, membership });
      assert.equal(await again.stateDigest(), generatedDigest(spec, 77));
      await again.close();
    } finally {
      await rocks.close();
      await memory.close();
    }
  });
});

describe('RocksStorage.installState survives SIGKILL at any point', function () {
  this.timeout(240_000);
  const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
  const childScript = fileURLToPath(new URL('./fixtures/install-child.ts', import.meta.url));
  const newSpec: GeneratedStateSpec = { count: 60_000, valueBytes: 200, seed: 42 };
  const newApplied = 5000;
  const newDigest = generatedDigest(newSpec, newApplied);
  const hardState = { term: 4, vote: 'n2', commit: 9 };
  let root: string;
  let template: string;
  let oldDigest: string;
  let run = 0;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'snapcoord-kill-'));
    template = join(root, 'template');
    const store = await RocksStorage.open(template);
    await store.save({ hardState, entries: [{ index: 1, term: 4, type: 'normal', data: bytes('e1') }] });
    for (let i = 1; i <= 20; i++) await store.write(putBatch(i, `old/${i}/`, 200));
    oldDigest = await store.stateDigest();
    await store.close();
  });

  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  interface ChildRun {
    readonly dataDir: string;
    readonly signal: NodeJS.Signals | null;
    readonly code: number | null;
    /** ms from "installing" to "installed" (or to the kill). */
    readonly installMs: number;
    readonly output: string;
  }

  /** runChild copies the template, runs the child on it and kills it at `killAt` or `killAfterMs` after "installing". */
  async function runChild(killAt: InstallPhase | 'none', killAfterMs?: number, imageJson?: string): Promise<ChildRun> {
    const dataDir = join(root, `run-${run++}`);
    await cp(template, dataDir, { recursive: true });
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', childScript, dataDir, killAt, String(newSpec.count), String(newSpec.valueBytes), String(newSpec.seed), String(newApplied), ...(imageJson !== undefined ? [imageJson] : [])],
      { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let output = '';
    let installingAt = 0;
    let timer: NodeJS.Timeout | undefined;
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      if (installingAt === 0 && output.includes('installing\n')) {
        installingAt = performance.now();
        if (killAfterMs !== undefined) timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
      }
    });
    child.stderr.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => {
      child.on('exit', (c, s) => resolve([c, s]));
    });
    if (timer !== undefined) clearTimeout(timer);
    return { dataDir, code, signal, installMs: performance.now() - installingAt, output };
  }

  /** checkAfter reopens the data dir and returns 'old' or 'new', failing on anything else (a mix, leftovers, a changed log). */
  async function checkAfter(r: ChildRun, label: string): Promise<'old' | 'new'> {
    const store = await RocksStorage.open(r.dataDir);
    try {
      const digest = await store.stateDigest();
      const outcome = digest === oldDigest ? 'old' : digest === newDigest ? 'new' : null;
      assert.ok(outcome !== null, `${label}: the state after the crash is neither the old nor the new one (${digest}); child said: ${r.output}`);
      const names = (await readdir(r.dataDir)).sort();
      assert.deepEqual(names, ['STATE', 'log', outcome === 'old' ? 'state-1' : 'state-2'], `${label}: leftovers`);
      assert.equal(store.appliedIndex(), outcome === 'old' ? 20 : newApplied);
      assert.deepEqual(store.membership(), outcome === 'old' ? null : generatedMembership);
      const log = await store.load();
      assert.deepEqual(log.hardState, hardState);
      assert.equal(log.entries.length, 1);
      // and it works on: applies follow on, and a new install succeeds
      await store.write(putBatch(store.appliedIndex() + 1, 'after/', 2));
      return outcome;
    } finally {
      await store.close();
    }
  }

  let fullInstallMs = 0;

  it('completes without a kill: the new state, same digest as computed independently', async () => {
    const r = await runChild('none');
    assert.equal(r.code, 0, r.output);
    assert.equal(await checkAfter(r, 'no kill'), 'new');
    fullInstallMs = r.installMs;
  });

  const phases: [InstallPhase, 'old' | 'new'][] = [
    ['generationCreated', 'old'],
    ['generationBuilt', 'old'],
    ['pointerWritten', 'old'],
    ['pointerSwapped', 'new'],
    ['oldGenerationDeleted', 'new'],
  ];
  for (const [phase, expected] of phases) {
    it(`killed at ${phase}: reopens with the ${expected} state, complete`, async () => {
      const r = await runChild(phase);
      assert.equal(r.signal, 'SIGKILL', r.output);
      assert.equal(await checkAfter(r, phase), expected);
    });
  }

  it('an import of a state image killed at each phase: reopens with the old or the new state, complete', async () => {
    // The new state built and exported by another store; its image kept on disk (a store removes its images only at open).
    const source = await RocksStorage.open(join(root, 'image-source'));
    await source.installState(generatedState(newSpec), { appliedIndex: newApplied, membership: generatedMembership }, { exportImage: true });
    const held = source.stateImage(newApplied);
    assert.ok(held !== null);
    const imageJson = join(root, 'image.json');
    await writeFile(imageJson, JSON.stringify({ ...held.image, files: held.image.files.map((f) => ({ ...f, sha256: Buffer.from(f.sha256).toString('hex') })) }));
    held.release();
    await source.close();
    const r = await runChild('none', undefined, imageJson);
    assert.equal(r.code, 0, r.output);
    assert.equal(await checkAfter(r, 'import, no kill'), 'new');
    for (const [phase, expected] of phases) {
      const killed = await runChild(phase, undefined, imageJson);
      assert.equal(killed.signal, 'SIGKILL', killed.output);
      assert.equal(await checkAfter(killed, `import killed at ${phase}`), expected);
    }
  });

  it('an install exporting a state image (the leader of a restore) killed at each step of the export: reopens with the old state, whole, and no image', async () => {
    const r = await runChild('none', undefined, 'export');
    assert.equal(r.code, 0, r.output);
    assert.ok(r.output.includes('installed\n'), r.output);
    // checkAfter also asserts no leftover beside STATE, log/ and the generation: the image is removed at open.
    assert.equal(await checkAfter(r, 'export, no kill'), 'new');
    const exportSteps: InstallPhase[] = ['imageClosed', 'imageFileExported', 'imageExported', 'generationBuilt', 'pointerWritten'];
    for (const phase of exportSteps) {
      const killed = await runChild(phase, undefined, 'export');
      assert.equal(killed.signal, 'SIGKILL', killed.output);
      assert.equal(await checkAfter(killed, `export killed at ${phase}`), 'old');
    }
    for (const phase of ['pointerSwapped', 'oldGenerationDeleted'] as const) {
      const killed = await runChild(phase, undefined, 'export');
      assert.equal(killed.signal, 'SIGKILL', killed.output);
      assert.equal(await checkAfter(killed, `export killed at ${phase}`), 'new');
    }
  });

  it('killed at random times during the install: reopens with the old or the new state, complete', async () => {
    assert.ok(fullInstallMs > 0, 'the no-kill run measures the install time first');
    const outcomes: string[] = [];
    const runs = 8;
    for (let i = 0; i < runs; i++) {
      // spread over the install and a little past it, with jitter
      const delay = Math.round(((i + Math.random()) / runs) * fullInstallMs * 1.05);
      const r = await runChild('none', delay);
      const outcome = await checkAfter(r, `kill after ${delay} ms`);
      outcomes.push(`${delay}ms:${r.signal === 'SIGKILL' ? 'killed' : 'finished'}->${outcome}`);
    }
    console.log(`      install ${fullInstallMs.toFixed(0)} ms; ${outcomes.join(' ')}`);
  });
});
