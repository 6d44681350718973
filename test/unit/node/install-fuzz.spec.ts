/**
 * Seeded fuzzing of a follower's install of a fetched snapshot and of the
 * state machine's restore install: archives with valid framing and every hash
 * right but hostile records and meta.json (test/unit/snapshot/fuzz-archives.ts)
 * go through SnapshotStore.importArchive (what a fetch's sink checks) and
 * SnapshotManager.install (what the apply worker runs), on a MemoryStorage
 * holding a state of its own. The contract: either refused with a typed error
 * (what Node.installSnapshot takes as the content's fault: the state is
 * unchanged, the digest before and after the same), or accepted, and then the
 * state is one a node can live on: the state machine opens on it (as at a
 * restart), takes a write to every client key, and a snapshot of it reads
 * back record for record.
 *
 * FUZZ_CASES=N runs more cases, FUZZ_SEED=S starts at another seed.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';

import { StateMachine } from '../../../src/fsm/state-machine.js';
import { encodeCommand } from '../../../src/fsm/kv-command.js';
import { RestoreDigestError } from '../../../src/fsm/restore-digest.js';
import { silentLogger } from '../../../src/node/logger.js';
import { systemClock } from '../../../src/node/clock.js';
import { DEFAULT_SNAPSHOT_POLICY, SnapshotManager } from '../../../src/node/snapshots.js';
import { ArchiveError, SnapshotStoreError, StateFormatError } from '../../../src/snapshot/errors.js';
import { MemoryStorage } from '../../../src/storage/memory-storage.js';
import { StorageError } from '../../../src/storage/storage-error.js';
import { isReservedKey } from '../../../src/fsm/sessions.js';
import { SeededRng } from '../../harness/rng.js';
import { baseArchive, fuzzArchive, fuzzCases, fuzzSeed } from '../snapshot/fuzz-archives.js';
import { archiveRecords, hexRecords } from './state-records.js';

const MEMBERSHIP = { voters: ['n1'], learners: [], addresses: { n1: '127.0.0.1:1' } };
const enc = new TextEncoder();

/** contentError: what Node.installSnapshot takes as the archive's fault (node.ts isContentError, or a corrupt copy). */
function contentError(err: unknown): boolean {
  if (err instanceof StateFormatError || err instanceof RestoreDigestError) return true;
  if (err instanceof ArchiveError) return err.code !== 'io';
  if (err instanceof SnapshotStoreError) return err.code === 'corrupt';
  return err instanceof StorageError && err.code === 'invalidArgument';
}

async function allRecords(storage: MemoryStorage): Promise<string[]> {
  const reader = await storage.snapshotState();
  const out: string[] = [];
  try {
    for await (const batch of reader.batches()) out.push(...hexRecords(batch));
  } finally {
    await reader.close();
  }
  return out;
}

describe('fuzz: a follower installs hostile fetched snapshots (valid hashes, hostile content)', function () {
  this.timeout(60_000 + fuzzCases(40) * 500); // FUZZ_CASES runs by hand take longer
  let dir = '';
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapcoord-install-fuzz-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('each is refused with a typed error and the state unchanged, or installed into a state the node can reopen, write and snapshot', async () => {
    const cases = fuzzCases(40);
    const seed0 = fuzzSeed(5_100_000);
    const outcomes = new Map<string, number>();
    for (let c = 0; c < cases; c++) {
      const seed = seed0 + c;
      const rng = new SeededRng(seed);
      const base = await baseArchive(rng.fork('base'));
      const fuzzed = await fuzzArchive(rng.fork('mutate'), base);
      const where = `seed ${seed} (FUZZ_SEED=${seed} FUZZ_CASES=1): ${fuzzed.what.join('; ')}`;
      const caseDir = join(dir, String(c));
      const storage = await MemoryStorage.open();
      // A state of its own first, so "unchanged" means something.
      await storage.installState([[{ key: enc.encode('own/a'), value: enc.encode('1') }]], { appliedIndex: 3, membership: MEMBERSHIP });
      const sm = await SnapshotManager.open(caseDir, storage, { ...DEFAULT_SNAPSHOT_POLICY, snapshotEntries: 1_000_000 }, silentLogger, 'test', systemClock);
      try {
        const before = await storage.stateDigest();
        let stored;
        try {
          stored = await sm.store.importArchive(Readable.from([fuzzed.archive]), { maxBytes: 1e8 });
        } catch (err) {
          assert.ok(contentError(err), `${where}: the store refused with an untyped error: ${String(err)}`);
          outcomes.set(`store refused: ${(err as { code?: string }).code}`, (outcomes.get(`store refused: ${(err as { code?: string }).code}`) ?? 0) + 1);
          continue;
        }
        try {
          await sm.install(stored);
        } catch (err) {
          assert.ok(contentError(err), `${where}: install refused with an error the node does not take as the content's: ${(err as Error)?.stack ?? String(err)}`);
          assert.equal(await storage.stateDigest(), before, `${where}: refused, but the state changed`);
          // The node goes on: its state machine opens and applies.
          const fsm = await StateMachine.open(storage);
          await fsm.apply([{ entry: { index: storage.appliedIndex() + 1, term: 9, type: 'normal', data: encodeCommand({ op: 'put', key: enc.encode('own/b'), value: enc.encode('2') }) } }]);
          const key = `install refused: ${err instanceof Error ? err.name : typeof err}`;
          outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
          continue;
        }
        // Installed: exactly the snapshot's records, as of its index.
        assert.deepEqual(await allRecords(storage), hexRecords(fuzzed.records ?? []), `${where}: installed, but the state is not the snapshot's records`);
        // The state is one the node can live on. At a restart the state machine opens on it.
        let fsm: StateMachine;
        try {
          fsm = await StateMachine.open(storage);
        } catch (err) {
          assert.fail(`${where}: installed, but the state machine no longer opens on it (a node that fails at every restart): ${String(err)}`);
        }
        // It takes a write to every client key (the revision records read), and a transaction comparing on them.
        const clientKeys = (fuzzed.records ?? []).filter((r) => !isReservedKey(r.key) && r.key.length <= 4096).map((r) => r.key);
        let index = storage.appliedIndex();
        const results = await fsm.apply(
          [...clientKeys, enc.encode('own/c')].map((key) => ({ entry: { index: ++index, term: 9, type: 'normal' as const, data: encodeCommand({ op: 'put', key, value: enc.encode('w') }) } })),
        );
        for (const r of results) assert.equal(r.ok, true, `${where}: a put after the install failed: ${JSON.stringify(r)}`);
        // A snapshot of it reads back record for record.
        const state = await allRecords(storage);
        const snap = await sm.create(() => 9, () => MEMBERSHIP);
        const handle = await sm.store.open(snap.id);
        try {
          assert.deepEqual(await archiveRecords(handle.createReadStream()), state, `${where}: the snapshot of the installed state does not read back`);
        } finally {
          handle.release();
        }
        outcomes.set('installed', (outcomes.get('installed') ?? 0) + 1);
      } finally {
        await sm.close();
        await storage.close();
        await rm(caseDir, { recursive: true, force: true });
      }
    }
    // The fuzzer reached both sides of the contract.
    assert.ok((outcomes.get('installed') ?? 0) > 0, `nothing was installed: ${JSON.stringify([...outcomes])}`);
    assert.ok([...outcomes.keys()].some((k) => k !== 'installed'), `nothing was refused: ${JSON.stringify([...outcomes])}`);
    if (process.env['FUZZ_CASES'] !== undefined) console.log(`      ${cases} cases from seed ${seed0}:`, Object.fromEntries(outcomes));
  });
});
