/**
 * OverlappedInstall: a follower's install that runs while its fetch still
 * writes the archive (issue 15: install >= 0.6x of its own fetch). On 2
 * cores the install's ~1.4 s of CPU per 256 MiB (the worker's read, SHA-256,
 * gunzip and checks; the puts; RocksDB's writes) could not fit after a fetch
 * of ~1 s: here it runs beside it, and what is left after the fetch is the
 * tail of the read and the commit.
 *
 * How: the snapshot worker (install-read.ts, tailBytes) reads the archive
 * file the fetch's ArchiveSink is writing, only as far as the sink's written
 * prefix (ArchiveSink.writtenPrefix: every byte of it landed, and each of its
 * chunks checked against its SHA-256 before it was handed to the sink), and
 * hands the checked records over as for an install of a stored archive; they
 * go into a staged state generation (StateStore.stageState), built beside the
 * current state, which nothing reads. The records' source ends only once the
 * worker has read the whole archive, every rule held and its whole SHA-256
 * is the digest the fetch was offered (when the fetch left it unverified),
 * so a staged state exists only for an archive an install of the stored
 * copy would have taken. It becomes the state only through
 * SnapshotManager.install of that very snapshot (after the Raft core's
 * beginInstall), by the staged generation's commit (the same atomic STATE
 * swap as installState). A fetch that fails or is aborted, an archive
 * refused, a newer fetch, a close: the staged generation is discarded, the
 * state untouched.
 *
 * Bounds: the worker reads at most what is written, 1 MiB at a time, and
 * stays at most INSTALL_READ_BATCHES_AHEAD packed batches (~8.5 MiB) ahead of
 * the staging's puts (credits); the fetch is not held back by the install
 * (its bytes are on disk). One overlapped install at a time per
 * SnapshotManager; a staged generation is one state's worth of disk until it
 * is committed or discarded.
 */
import { installReadHome, startInstallRead, type InstallRead, type InstallReadEnd } from '../snapshot/install-read.js';
import type { ArchiveSink } from '../snapshot/archive-sink.js';
import type { ArchiveMeta } from '../snapshot/archive-meta.js';
import { SnapshotStoreError } from '../snapshot/errors.js';
import { sessionRecordsChecked } from '../fsm/sessions.js';
import type { KeyValue, NodeStorage, StagedState } from '../storage/types.js';

/** OverlapTarget: what the fetch was offered. */
export interface OverlapTarget {
  readonly index: number;
  readonly sizeBytes: number;
  /** digest: the archive's whole SHA-256 (hex) as its sender claims it. */
  readonly digest: string;
}

/** OverlapSkipped: the archive's state is one the install reads on the main thread (installReadHome): no overlap. */
export class OverlapSkipped extends Error {
  override readonly name = 'OverlapSkipped';
}

/**
 * OverlappedInstall is one install overlapping its fetch (see the file
 * comment). Build it with start() inside the fetch's write (the sink just
 * created, nothing written yet).
 */
export class OverlappedInstall {
  /** records: the records handed to the staged state so far. */
  records = 0;
  /** staged: the built state, once the whole archive is read and checked; rejects if anything failed (or OverlapSkipped). */
  readonly staged: Promise<StagedState>;
  /** end: the worker's last word on the archive (its bytes, its SHA-256, the member table found). */
  readonly end: Promise<InstallReadEnd>;
  /** hashedWhole: the worker hashed the whole archive (the fetch left its digest unverified). */
  readonly hashedWhole: boolean;
  readonly #reader: InstallRead;
  #abandoned = false;

  private constructor(storage: NodeStorage & Required<Pick<NodeStorage, 'stageState'>>, sink: ArchiveSink, target: OverlapTarget, hashWhole: boolean, home: (meta: ArchiveMeta) => 'worker' | 'here') {
    this.hashedWhole = hashWhole;
    const reader = startInstallRead({ path: sink.path, hashWhole, skipStateDigest: hashWhole, recordMembers: true, tailBytes: target.sizeBytes });
    this.#reader = reader;
    sink.onWrittenPrefix = (bytes) => reader.avail(bytes);
    reader.avail(sink.writtenPrefix);
    this.end = reader.end;
    this.staged = (async () => {
      const meta = await reader.meta;
      if (home(meta) !== 'worker') {
        // The worker stops here (it would read on until its credits ran out, then wait).
        await reader.close();
        throw new OverlapSkipped(`snapshot ${target.index}: a state of ${meta.stateBytes} bytes in ${meta.stateKeys} records installs on the main thread`);
      }
      const checked = reader.end.then((e) => {
        if (e.archiveBytes !== target.sizeBytes || (hashWhole && e.sha256 !== target.digest)) {
          throw new SnapshotStoreError('corrupt', `the archive fetched for snapshot ${target.index} read ${e.archiveBytes} bytes with SHA-256 ${String(e.sha256)}, not the ${target.sizeBytes} bytes with ${target.digest} its sender claimed`);
        }
      });
      checked.catch(() => undefined);
      const counted = this.#counted(sessionRecordsChecked(reader.records(), `the snapshot at index ${target.index} being fetched`));
      return storage.stageState(thenChecked(counted, checked), { appliedIndex: meta.index, membership: meta.membership });
    })();
    this.staged.catch(() => undefined);
  }

  /**
   * start begins an install of the archive `sink` is about to receive, or returns null where there is none to
   * overlap: a storage without stageState. `home` says, from the archive's meta.json, whether the state is read
   * on the worker at all (else the overlap stops there: staged rejects with OverlapSkipped).
   */
  static start(storage: NodeStorage, sink: ArchiveSink, target: OverlapTarget, options: { readonly hashWhole: boolean; readonly home: (meta: ArchiveMeta) => 'worker' | 'here' }): OverlappedInstall | null {
    if (storage.stageState === undefined) return null;
    return new OverlappedInstall(storage as NodeStorage & Required<Pick<NodeStorage, 'stageState'>>, sink, target, options.hashWhole, options.home);
  }

  /** abandon stops the read and discards the staged state, built or not (idempotent; never rejects). */
  async abandon(): Promise<void> {
    if (this.#abandoned) return;
    this.#abandoned = true;
    await this.#reader.close();
    const staged = await this.staged.catch(() => null);
    await staged?.discard();
  }

  /** closeReader stops the worker (its read is over once the staged state is built); never rejects. */
  async closeReader(): Promise<void> {
    await this.#reader.close();
  }

  async *#counted(source: AsyncIterable<readonly KeyValue[]>): AsyncGenerator<readonly KeyValue[]> {
    for await (const batch of source) {
      this.records += batch.length;
      yield batch;
    }
  }
}

/** thenChecked yields `records`, then waits for `checked` before it ends (a refused archive throws instead). */
async function* thenChecked<T>(records: AsyncIterable<T>, checked: Promise<void>): AsyncGenerator<T> {
  yield* records;
  await checked;
}

/** overlapHome: installReadHome's rule for an archive's meta.json (`on` overriding it, as SnapshotManager.installReadOn). */
export function overlapHome(on: 'worker' | 'here' | undefined, io: Parameters<typeof installReadHome>[0]): (meta: ArchiveMeta) => 'worker' | 'here' {
  return (meta) => on ?? installReadHome(io, meta.stateBytes, meta.stateKeys);
}
