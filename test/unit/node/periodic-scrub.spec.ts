/**
 * The periodic scrub (SnapshotManager.startPeriodicScrub, policy.scrubIntervalMs): every stored archive is
 * re-hashed in full on a schedule taken from the node's Clock (a ManualClock here: no real time passes), each
 * run's wait jittered by ±25% from the node's Rng, one archive at a time at a byte-rate limit, never while the
 * node writes or installs an archive; a damaged archive is moved to quarantine as the boot check does, and a lost
 * newest snapshot is handed to the node (onNewestLost), which builds another. Before it, an archive that rotted
 * after the boot scrub was only found when something read it whole.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Transform, type Readable } from 'node:stream';

import { DEFAULT_SNAPSHOT_POLICY, SnapshotManager, type ScrubRun, type SnapshotPolicy } from '../../../src/node/snapshots.js';
import { SCRUB_BURST_BYTES, ScrubPacer, scrubDelayMs } from '../../../src/node/scrub-pace.js';
import { silentLogger } from '../../../src/node/logger.js';
import type { Membership, Rng, SnapshotMeta } from '../../../src/raft/types.js';
import { encodeCommand } from '../../../src/fsm/kv-command.js';
import { StateMachine } from '../../../src/fsm/state-machine.js';
import { MemoryDataDir, MemoryStorage } from '../../../src/storage/memory-storage.js';
import { MemorySnapshotIo } from '../../../src/snapshot/memory-snapshot-io.js';
import type { FileReadStreamOptions } from '../../../src/snapshot/snapshot-io.js';
import { ARCHIVE_FILE, QUARANTINE_DIR } from '../../../src/snapshot/store.js';
import { ManualClock, settle } from './manual-clock.js';

const membership: Membership = { voters: ['n1'], learners: [], addresses: { n1: 'sim:n1' } };
const enc = new TextEncoder();
const DIR = '/d/snapshots';
const MiB = 1024 * 1024;

/** ReadLog: a MemorySnapshotIo that records each piece of an archive read by stream (what verify reads), with the clock's time. */
class ReadLog extends MemorySnapshotIo {
  readonly reads: { atMs: number; bytes: number }[] = [];
  constructor(private readonly clock: ManualClock) {
    super();
  }
  override createReadStream(path: string, options: FileReadStreamOptions): Readable {
    const s = super.createReadStream(path, options);
    if (!path.endsWith(ARCHIVE_FILE)) return s;
    // Piped through (a 'data' listener would set the stream flowing, past the reader's backpressure).
    const log = (c: Buffer): void => void this.reads.push({ atMs: this.clock.nowMs(), bytes: c.length });
    const tap = new Transform({ transform: (c: Buffer, _e, cb) => (log(c), cb(null, c)) });
    s.on('error', (err) => tap.destroy(err));
    tap.on('close', () => s.destroy());
    return s.pipe(tap);
  }
  bytesRead(): number {
    return this.reads.reduce((n, r) => n + r.bytes, 0);
  }
}

/** fixedRng: an Rng that always draws `at` of its range (0: the shortest jittered wait, 0.75 of the interval). */
function fixedRng(at = 0): Rng {
  return { nextInt: (n: number) => Math.min(n - 1, Math.floor(n * at)) };
}

/** setUp: a state of `values` × 256 KiB random values, a manager on a ManualClock with `policy`, and its newest snapshot. */
async function setUp(policy: Partial<SnapshotPolicy>, values = 24): Promise<{ clock: ManualClock; io: ReadLog; storage: MemoryStorage; m: SnapshotManager; made: { id: string; path: string; archiveBytes: number }; runs: ScrubRun[]; lost: SnapshotMeta[] }> {
  const storage = await MemoryStorage.open(new MemoryDataDir('n1'));
  const sm = await StateMachine.open(storage);
  for (let i = 1; i <= values; i++) {
    const [r] = await sm.apply([{ entry: { index: i, term: 1, type: 'normal', data: encodeCommand({ op: 'put', key: enc.encode(`k${i}`), value: randomBytes(256 * 1024) }) } }]);
    assert.ok(r?.ok);
  }
  const clock = new ManualClock(1_000);
  const io = new ReadLog(clock);
  const m = await SnapshotManager.open(DIR, storage, { ...DEFAULT_SNAPSHOT_POLICY, ...policy }, silentLogger, 'test', clock, io);
  const made = await m.create(() => 1, () => membership);
  const runs: ScrubRun[] = [];
  const lost: SnapshotMeta[] = [];
  m.reportScrubsTo((r) => runs.push(r));
  m.onNewestLost = (meta) => lost.push(meta);
  io.reads.length = 0;
  return { clock, io, storage, m, made, runs, lost };
}

describe('SnapshotManager: the periodic scrub', function () {
  this.timeout(30_000);

  it('a byte flipped on the disk after its hashing is found by the next run: quarantined, never served again, and the node told to build another', async () => {
    const { clock, io, m, made, runs, lost } = await setUp({ scrubIntervalMs: 3_600_000, scrubBytesPerSec: 0 });
    try {
      assert.equal((await m.openCurrent())?.trusted(), true, 'written here: served on its recorded hashes');
      io.flipBit(made.path, Math.floor(made.archiveBytes / 2), 5);
      m.startPeriodicScrub(fixedRng(0.5));
      await clock.advanceSettled(3_599_000, 60_000);
      assert.equal(runs.length, 0, 'no run before the (jittered) interval: 1 h x (0.75 + 0.5 x 0.5)');
      assert.equal(io.bytesRead(), 0);
      await clock.advanceSettled(2_000, 100);
      await until(() => runs.length === 1);
      const run = runs[0]!;
      assert.equal(run.kind, 'periodic');
      assert.deepEqual(run.damaged.map((d) => [d.store, d.id]), [['store', made.id]]);
      assert.match(run.damaged[0]!.reason, /SHA-256|chunk/);
      assert.equal(run.bytes, made.archiveBytes, 'the whole archive re-hashed');
      assert.deepEqual(m.scrubStats, { runs: 1, bytes: made.archiveBytes, damaged: 1, last: run });
      assert.deepEqual((await m.store.list()).map((s) => s.id), [], 'out of the store');
      assert.ok((await io.readdir(`${DIR}/store/${QUARANTINE_DIR}`)).some((e) => e.name.startsWith(`${made.id}-`)), 'in quarantine');
      assert.deepEqual(lost.map((l) => l.index), [24], 'the node is told its newest snapshot is lost (it stops offering it, and builds one)');
      assert.equal(await m.openCurrent(), null, 'nothing of it is served');
      // What the node does then: a snapshot built anew, whose bytes are good.
      const again = await m.create(() => 1, () => membership);
      const h = await m.openCurrent();
      assert.equal(h?.id, again.id);
      const bytes = await io.readFile(again.path);
      const { createHash } = await import('node:crypto');
      assert.equal(createHash('sha256').update(bytes).digest('hex'), again.archiveSha256);
      h?.release();
      // The schedule goes on: the next run (about an hour later) finds the new archive good.
      await clock.advanceSettled(5_400_000, 60_000);
      await until(() => runs.length === 2);
      assert.equal(runs[1]!.checked, 1);
      assert.deepEqual(runs[1]!.damaged, []);
    } finally {
      await m.close();
    }
  });

  it('the rate limit holds: a run never reads ahead of scrubBytesPerSec by more than its burst and the read-ahead', async () => {
    const rate = 1 * MiB;
    const { clock, io, m, made, runs } = await setUp({ scrubIntervalMs: 60_000, scrubBytesPerSec: rate });
    try {
      assert.ok(made.archiveBytes > 5 * MiB, `archive of ${made.archiveBytes} bytes`);
      m.startPeriodicScrub(fixedRng(0));
      await clock.advanceSettled(44_000, 1_000);
      assert.equal(io.bytesRead(), 0, 'not yet: 0.75 x 60 s');
      const startMs = 45_000 + 1_000;
      await clock.advanceSettled(30_000, 50, 5);
      await until(() => runs.length === 1);
      assert.equal(runs[0]!.bytes, made.archiveBytes);
      let sum = 0;
      for (const r of io.reads) {
        sum += r.bytes;
        // The burst, and what the read stream holds ahead of the hash: its buffer (1 MiB) and the piece in hand.
        const allowed = (rate * (r.atMs - startMs)) / 1000 + SCRUB_BURST_BYTES + 2 * MiB;
        assert.ok(sum <= allowed, `${sum} bytes read by ${r.atMs - startMs} ms, more than the ${allowed} allowed`);
      }
      assert.equal(sum, made.archiveBytes);
      const lastMs = io.reads.at(-1)!.atMs - startMs;
      assert.ok(lastMs >= ((made.archiveBytes - SCRUB_BURST_BYTES - 2 * MiB) / rate) * 1000, `the whole archive read in ${lastMs} ms of the clock: not held to the rate`);
    } finally {
      await m.close();
    }
  });

  it('the boot scrub is paced the same way: it never reads ahead of scrubBytesPerSec by more than its burst and the read-ahead, and is counted as before', async () => {
    const rate = 1 * MiB;
    const { clock, io, storage, m } = await setUp({ scrubBytesPerSec: rate });
    let older: { id: string; archiveBytes: number };
    try {
      // A second snapshot: the boot verifies the newest before the node starts; the boot scrub reads the other.
      const sm = await StateMachine.open(storage);
      const [r] = await sm.apply([{ entry: { index: 25, term: 1, type: 'normal', data: encodeCommand({ op: 'put', key: enc.encode('k25'), value: randomBytes(1024) }) } }]);
      assert.ok(r?.ok);
      older = (await m.store.list()).at(-1)!;
      await m.create(() => 1, () => membership);
      assert.equal((await m.store.list()).length, 2);
    } finally {
      await m.close();
    }
    assert.ok(older.archiveBytes > 5 * MiB, `archive of ${older.archiveBytes} bytes`);
    const next = await SnapshotManager.open(DIR, storage, { ...DEFAULT_SNAPSHOT_POLICY, scrubBytesPerSec: rate }, silentLogger, 'test', clock, io);
    try {
      await next.boot(membership);
      io.reads.length = 0; // the newest's verify, before the node starts: not paced
      const startMs = clock.nowMs();
      await clock.advanceSettled(30_000, 50, 5);
      await until(() => next.scrubStats.runs === 1);
      assert.equal(next.scrubStats.last?.kind, 'boot');
      assert.equal(next.scrubStats.last?.checked, 1);
      assert.equal(next.scrubStats.bytes, older.archiveBytes);
      let sum = 0;
      for (const r of io.reads) {
        sum += r.bytes;
        const allowed = (rate * (r.atMs - startMs)) / 1000 + SCRUB_BURST_BYTES + 2 * MiB;
        assert.ok(sum <= allowed, `${sum} bytes read by ${r.atMs - startMs} ms of the clock, more than the ${allowed} allowed`);
      }
      assert.equal(sum, older.archiveBytes);
    } finally {
      await next.close();
    }
  });

  it('a bad scrub rate is refused when the manager opens (RangeError), as by startPeriodicScrub', async () => {
    const storage = await MemoryStorage.open(new MemoryDataDir('n1'));
    for (const scrubBytesPerSec of [-1, 1000, 1.5, Number.NaN]) {
      await assert.rejects(SnapshotManager.open(DIR, storage, { ...DEFAULT_SNAPSHOT_POLICY, scrubBytesPerSec }, silentLogger, 'test', new ManualClock(0), new MemorySnapshotIo()), RangeError, String(scrubBytesPerSec));
    }
  });

  it('scrub off (no interval, or 0) means no scrub: no timer, no read, a damaged archive stays until something reads it', async () => {
    for (const policy of [{}, { scrubIntervalMs: 0 }]) {
      const { clock, io, m, made, runs } = await setUp(policy, 4);
      try {
        io.flipBit(made.path, 100, 1);
        const timers = clock.pendingTimers();
        m.startPeriodicScrub(fixedRng(0));
        assert.equal(clock.pendingTimers(), timers, 'no timer set');
        await clock.advanceSettled(30 * 24 * 3_600_000, 24 * 3_600_000);
        assert.equal(io.bytesRead(), 0);
        assert.deepEqual(runs, []);
        assert.deepEqual((await m.store.list()).map((s) => s.id), [made.id]);
      } finally {
        await m.close();
      }
    }
  });

  it('close() stops a run mid-way (its rate-limit wait cleared) and the schedule; the archive being read keeps its trust', async () => {
    const { clock, io, m, made, runs } = await setUp({ scrubIntervalMs: 10_000, scrubBytesPerSec: 1 * MiB });
    m.startPeriodicScrub(fixedRng(0));
    await clock.advanceSettled(7_500 + 1_000, 500);
    await until(() => io.bytesRead() > 0);
    assert.ok(io.bytesRead() < made.archiveBytes);
    await m.close();
    assert.equal(clock.pendingTimers(), 0, 'no timer left');
    assert.equal(runs.length, 1);
    assert.equal(runs[0]!.stopped, true);
    assert.deepEqual(runs[0]!.damaged, []);
    assert.deepEqual((await m.store.list()).map((s) => s.id), [made.id], 'a stopped read is no verdict');
  });

  it('a run waits while the node writes or installs an archive, and that time earns it no bytes (ScrubPacer)', async () => {
    const clock = new ManualClock(0);
    let busy = true;
    const stop = new AbortController();
    const pacer = new ScrubPacer(clock, MiB, stop.signal, () => busy);
    let started = false;
    const before = pacer.beforeEach().then(() => (started = true));
    await clock.advanceSettled(60_000, 1_000);
    assert.equal(started, false, 'held while busy');
    busy = false;
    await clock.advanceSettled(1_000, 1_000);
    await before;
    // 60 s paused earned nothing: past the burst, 1 MiB more needs a second of the clock.
    let paced = false;
    void pacer.pace(SCRUB_BURST_BYTES + MiB).then(() => (paced = true));
    await settle();
    assert.equal(paced, false);
    await clock.advanceSettled(1_000, 100);
    assert.equal(paced, true);
    stop.abort();
  });

  it('a run that ended before the listener was set (the boot scrub, while the node starts) is reported to it first', async () => {
    const { clock, io, storage, m } = await setUp({}, 4);
    try {
      // A manager of a later process: boot() starts the boot scrub, which ends before anyone listens.
      const next = await SnapshotManager.open(DIR, storage, DEFAULT_SNAPSHOT_POLICY, silentLogger, 'test', clock, io);
      try {
        await next.boot(membership);
        await clock.advanceSettled(10, 1);
        await until(() => next.scrubStats.runs === 1);
        const told: ScrubRun[] = [];
        next.reportScrubsTo((r) => told.push(r));
        assert.deepEqual(told.map((r) => r.kind), ['boot']);
      } finally {
        await next.close();
      }
    } finally {
      await m.close();
    }
  });

  it('a scrub asked for (SnapshotManager.scrub) is counted as one too, kind asked', async () => {
    const { m, made, runs } = await setUp({}, 4);
    try {
      const r = await m.scrub();
      assert.deepEqual(r.store.checked, [made.id]);
      assert.deepEqual(runs.map((x) => [x.kind, x.checked, x.bytes, x.damaged.length]), [['asked', 1, made.archiveBytes, 0]]);
      assert.equal(m.scrubStatus().runs, 1);
    } finally {
      await m.close();
    }
  });

  it('the wait before each run is the interval jittered by ±25%, drawn from the node rng', () => {
    assert.equal(scrubDelayMs(1_000_000, fixedRng(0)), 750_000);
    assert.equal(scrubDelayMs(1_000_000, fixedRng(0.5)), 1_000_000);
    assert.ok(scrubDelayMs(1_000_000, fixedRng(1)) < 1_250_000);
    assert.ok(scrubDelayMs(1_000_000, fixedRng(1)) >= 1_249_000);
  });
});

/** until: lets the event loop run until `cond` holds (bounded: 2,000 turns of in-memory IO). */
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 2_000 && !cond(); i++) await settle(1);
  assert.ok(cond(), 'condition not reached');
}
