import { join } from 'node:path';
import type { Readable } from 'node:stream';

import type { Membership, Rng, SnapshotMeta } from '../raft/types.js';
import { readChunks, type FileChunk } from '../snapshot/chunk-reader.js';
import { nodeSnapshotIo, type SnapshotIo } from '../snapshot/snapshot-io.js';
import { MemberGunzip } from '../snapshot/member-gunzip.js';
import { installReadHome, startInstallRead, type InstallReadEnd } from '../snapshot/install-read.js';
import { noteExternalGarbage } from '../snapshot/external-memory-gc.js';
import { relay } from '../snapshot/relay.js';
import { UploadMemberCopy } from '../snapshot/upload-member-copy.js';
import { INSTALL_PIECES_SPARE_MAX, PiecePool } from '../snapshot/piece-pool.js';
import {
  ArchiveError,
  INSTALL_DECODE_OPTIONS,
  CHUNK_HASH_BYTES,
  GUNZIP_CHUNK_BYTES,
  RETAIN_MAX,
  StateFormatError,
  MemberTableRecorder,
  RecordTee,
  SnapshotStore,
  SnapshotStoreError,
  checkedStateRecords,
  isReadFailure,
  readArchive,
  scanStateRecords,
  type ArchiveMeta,
  type ScrubOptions,
  type ScrubResult,
  type SnapshotCreateMeta,
  type SnapshotHandle,
  type StateLimits,
  type StoredSnapshot,
} from '../snapshot/index.js';
import { KEY_BYTES_MAX, VALUE_BYTES_MAX } from '../fsm/kv-command.js';
import { RESERVED_KEY_PREFIX, sessionRecordsChecked } from '../fsm/sessions.js';
import { isCarriedKeyAt } from '../fsm/restore-digest.js';
import { RecordsDigest } from '../hash/records-digest.js';
import type { KeyValue, NodeStorage, StateSnapshotReader } from '../storage/types.js';
import type { InstalledRecordsCopy } from '../fsm/types.js';
import type { Clock } from './clock.js';
import type { SnapshotScrubStatus } from './node-status.js';
import { SCRUB_BYTES_PER_SEC_DEFAULT, SCRUB_BYTES_PER_SEC_MIN, SCRUB_INTERVAL_MS_MAX, SCRUB_INTERVAL_MS_MIN, ScrubPacer, scrubDelayMs, sleepUnlessStopped } from './scrub-pace.js';
import { NodeError } from './errors.js';
import type { PeerDial } from '../transport/peer-guard.js';
import type { SnapshotStreamOpener } from '../transport/transport.js';
import { fetchSnapshot, SNAPSHOT_CHUNK_BYTES_DEFAULT, type FetchResult, type FetchTarget } from '../transport/snapshot-fetcher.js';
import type { Logger } from './logger.js';

/** SnapshotPolicy: when to snapshot and compact, and the limits of transfers. */
/** UploadedArchive: an upload kept for a restore, with the records digest of its carried records (importUpload). */
export interface UploadedArchive extends StoredSnapshot {
  readonly recordsDigest: string;
}

export interface SnapshotPolicy {
  /**
   * snapshotEntries: take a snapshot once this many entries were applied since the last one; a voter's first one
   * later still, by up to half of it for the voters after the first (snapshotStaggerEntries, snapshotDue).
   */
  readonly snapshotEntries: number;
  /**
   * snapshotLogBytes: take a snapshot once the entries applied since the last one carry this many bytes, however
   * few they are (0: no such bound). The log since the last snapshot is held in memory: this bounds it for large
   * values, where snapshotEntries alone would not (50,000 entries of 1 KiB are ~60 MB of a node's heap).
   */
  readonly snapshotLogBytes?: number;
  /** trailingEntries: entries kept before the snapshot index for slow followers. */
  readonly trailingEntries: number;
  /** retain: snapshots kept on disk (>= 1). */
  readonly retain: number;
  readonly chunkBytes: number;
  /**
   * maxTransfers: FetchSnapshot streams this node serves at once; more get RESOURCE_EXHAUSTED. One
   * member is served at most transfersPerPeerMax(maxTransfers) of them (half, at least 1), so a member
   * that opens streams and never reads them cannot take every slot from the others.
   */
  readonly maxTransfers: number;
  /** bandwidthBytesPerSec: cap of one incoming transfer (0: none). */
  readonly bandwidthBytesPerSec: number;
  /** archiveBytesMax: the largest archive accepted from a peer or an upload. */
  readonly archiveBytesMax: number;
  /** gzipLevel: compression of new archives; 1 measured ~2x faster than 6 here (creation is gzip-bound). */
  readonly gzipLevel: number;
  /** gzipBlockBytes: state bytes per gzip member of new snapshots (default 1 MiB; the simulator's tiny states use 64 KiB). */
  readonly gzipBlockBytes?: number;
  /**
   * restoreStateBytesMax: the largest state (meta.json stateBytes) a restore
   * upload may declare; larger ones are refused before their state is read
   * (default RESTORE_STATE_BYTES_MAX_DEFAULT).
   */
  readonly restoreStateBytesMax?: number;
  /**
   * scrubIntervalMs: re-hash every stored archive (both stores) about this often, each run's wait jittered by
   * ±25% (scrubDelayMs), one archive at a time at scrubBytesPerSec, and quarantine any whose bytes disagree with
   * their recorded hashes (startPeriodicScrub). 0 or absent: no periodic scrub (the boot scrub still runs); `serve`
   * sets SCRUB_INTERVAL_MS_DEFAULT (24 h) unless told. Else SCRUB_INTERVAL_MS_MIN..SCRUB_INTERVAL_MS_MAX.
   */
  readonly scrubIntervalMs?: number;
  /**
   * scrubBytesPerSec: the read rate of the scrub's background runs, the boot scrub's and the periodic ones (default
   * SCRUB_BYTES_PER_SEC_DEFAULT; 0: no limit; else at least SCRUB_BYTES_PER_SEC_MIN).
   */
  readonly scrubBytesPerSec?: number;
}

/** scrubRateOf: policy.scrubBytesPerSec or its default; RangeError when it is neither 0 nor at least SCRUB_BYTES_PER_SEC_MIN. */
function scrubRateOf(policy: SnapshotPolicy): number {
  const rate = policy.scrubBytesPerSec ?? SCRUB_BYTES_PER_SEC_DEFAULT;
  if (!Number.isSafeInteger(rate) || (rate !== 0 && rate < SCRUB_BYTES_PER_SEC_MIN)) {
    throw new RangeError(`scrub rate must be 0 (no limit) or at least ${SCRUB_BYTES_PER_SEC_MIN} bytes/s, got ${rate}`);
  }
  return rate;
}

/** SCRUBS_UNREPORTED_MAX: scrub runs kept for a listener not set yet (reportScrubsTo): the boot scrub's, and a few. */
const SCRUBS_UNREPORTED_MAX = 4;

/** ScrubKind: what started a scrub run: the node's boot, the periodic schedule, or a caller (SnapshotManager.scrub). */
export type ScrubKind = 'boot' | 'periodic' | 'asked';

/** ScrubRun: what one scrub run did, over both stores (SnapshotManager.reportScrubsTo, scrubStats). */
export interface ScrubRun {
  readonly kind: ScrubKind;
  /** checked: archives read whole and compared with their recorded hashes. */
  readonly checked: number;
  /** bytes: archive bytes read and hashed. */
  readonly bytes: number;
  /** seconds: the run's length on the node's clock (pauses and the rate limit included). */
  readonly seconds: number;
  /** damaged: archives whose bytes disagreed with their recorded hashes, moved to quarantine. */
  readonly damaged: readonly { readonly store: 'store' | 'uploads'; readonly id: string; readonly reason: string }[];
  /** unreadable: archives that could not be read (left in place). */
  readonly unreadable: number;
  /** stopped: the run ended early (the node stopping). */
  readonly stopped: boolean;
}

/** ScrubStats: the scrub runs of this process so far (every kind), for /metrics and status. */
export interface ScrubStats {
  runs: number;
  bytes: number;
  damaged: number;
  last: ScrubRun | null;
}

/** RESTORE_STATE_BYTES_MAX_DEFAULT: the default cap of a restored state's declared size (64 GiB, as archiveBytesMax; free disk space is checked too). */
export const RESTORE_STATE_BYTES_MAX_DEFAULT = 64 * 1024 ** 3;

/**
 * RESTORE_STATE_LIMITS: a restored state may hold nothing a write could not:
 * the KV layer's own key and value limits (fsm/kv-command.ts).
 */
export const RESTORE_STATE_LIMITS: StateLimits = { keyBytesMax: KEY_BYTES_MAX, valueBytesMax: VALUE_BYTES_MAX };

/**
 * SERVED_CHUNK_BYTES_MIN: the smallest chunk FetchSnapshot serves; a smaller chunk_bytes asked is raised to it
 * (the simulator asks for 700-byte chunks; nodes ask for SnapshotPolicy.chunkBytes, 1 MiB by default).
 */
export const SERVED_CHUNK_BYTES_MIN = 512;

/** transfersPerPeerMax: the FetchSnapshot streams one member is served at once, of maxTransfers in all (half, at least 1). */
export function transfersPerPeerMax(maxTransfers: number): number {
  return Math.max(1, Math.floor(maxTransfers / 2));
}

/**
 * DEFAULT_SNAPSHOT_POLICY. snapshotEntries 50,000 and snapshotLogBytes 16
 * MiB: a periodic snapshot here is a whole archive of the state (a delta
 * copies the unchanged gzip members, but still reads and hashes the whole
 * state), so its cost grows with the state, not with the entries it covers.
 * Every 10,000 entries (the default before) a node spent ~20-30% of its CPU
 * under `bench:write` on snapshots (`--snapshot-entries 200000` against the
 * default, 5 alternating pairs: server CPU per write 0.63/0.46, 0.67/0.52,
 * 0.54/0.44, 0.71/0.49, 0.57/0.53 ms), a snapshot every ~5 s at 2,000
 * writes/s. The anchors snapshot less often: etcd every 100,000 entries
 * (--snapshot-count), Consul 16,384 entries and at most every 30 s, braft
 * and Typesense hourly. snapshotLogBytes keeps the in-memory log small for
 * large values.
 */
export const DEFAULT_SNAPSHOT_POLICY: SnapshotPolicy = {
  snapshotEntries: 50_000,
  snapshotLogBytes: 16 * 1024 * 1024,
  trailingEntries: 1_000,
  retain: 2,
  chunkBytes: SNAPSHOT_CHUNK_BYTES_DEFAULT,
  maxTransfers: 4,
  bandwidthBytesPerSec: 0,
  archiveBytesMax: 64 * 1024 ** 3,
  gzipLevel: 1,
  restoreStateBytesMax: RESTORE_STATE_BYTES_MAX_DEFAULT,
};

/**
 * UPLOADS_UNREFERENCED_KEPT: uploads that no restore entry of the log names
 * (yet, or any more) kept besides the referenced ones, the most recently
 * stored first: an archive just staged on a follower waits there for the
 * restore entry that names it.
 */
export const UPLOADS_UNREFERENCED_KEPT = 2;

/**
 * COPY_BATCHES_MAX: batches of a restore's records queued for its snapshot copy before the install waits (each up to
 * INSTALL_DECODE_OPTIONS.batchBytesMax and ending with its gunzipped chunk, GUNZIP_CHUNK_BYTES, whose records it views). Both run on the main
 * thread, so a deeper queue bought no overlap: 4 held up to 20 MiB of chunks on every node during a restore.
 */
const COPY_BATCHES_MAX = 2;
/** COPY_MEMBERS_MAX: an upload's compressed state members queued for its snapshot copy before the install waits (UploadMemberCopy). */
const COPY_MEMBERS_MAX = 4;
/**
 * RESTORE_CHANGED_KEYS: the keys where a restore's installed state may differ from its upload's state.bin: the
 * reserved prefix (StateMachine.installState with keepSessions drops the upload's reserved records but key revisions
 * and merges this cluster's client sessions and restore floor in). Everything else is installed as the upload holds it.
 */
const RESTORE_CHANGED_KEYS = { from: Buffer.from(RESERVED_KEY_PREFIX), to: prefixEnd(RESERVED_KEY_PREFIX) };

/** prefixEnd: the first key after every key that starts with `prefix` (its last byte below 0xff, as the reserved prefix's is). */
function prefixEnd(prefix: Uint8Array): Buffer {
  const end = Buffer.from(prefix);
  end[end.length - 1] = (end[end.length - 1] as number) + 1;
  return end;
}

/** Serving-side error with a gRPC status code (RESOURCE_EXHAUSTED 8, NOT_FOUND 5). */
function coded(code: number, message: string): Error {
  return Object.assign(new Error(message), { code });
}

/**
 * thenVerified yields `records`, then waits for `verified` (readArchive's:
 * the whole archive read and every hash checked) before it ends, so an
 * install that commits when its source ends never makes an unverified state
 * live; a refused archive makes it throw instead.
 */
async function* thenVerified<T>(records: AsyncIterable<T>, verified: Promise<void>): AsyncGenerator<T> {
  yield* records;
  await verified;
}

/** toRaftMeta names a stored snapshot the way the Raft core does. */
/**
 * garbageNoted yields `source`'s batches and, when the next one is asked for
 * (the archive writer has copied every record of the last into its blocks by
 * then), notes the last one's keys and values as dead external memory
 * (noteExternalGarbage): RocksDB's iterator hands each over as a Buffer of
 * its own, and the process's bound on dead ArrayBuffers scavenges every few
 * MiB of them, between two batches, rather than when its timer next looks.
 */
export function garbageNoted(source: AsyncIterable<readonly KeyValue[]>): AsyncGenerator<readonly KeyValue[]> {
  let bytes = 0;
  return relay(
    source,
    (batch) => {
      bytes = 0;
      for (const r of batch) bytes += r.key.length + r.value.length;
    },
    () => noteExternalGarbage(bytes),
  );
}

/** untilAborted yields `source`'s items until `signal` aborts, then throws its reason (checked before each item; none held, see relay). */
function untilAborted<T>(source: AsyncIterable<T>, signal: AbortSignal): AsyncGenerator<T> {
  return relay(source, () => signal.throwIfAborted());
}

/**
 * fullSnapshotBatches: the batches of `reader` as a full snapshot hands them to the store
 * (SnapshotStore.createFromRecords): noted as dead external memory once used (garbageNoted), checked against
 * `signal` before each (untilAborted); no batch held by either while the store works on it (relay).
 */
export function fullSnapshotBatches(reader: StateSnapshotReader, signal?: AbortSignal): AsyncGenerator<readonly KeyValue[]> {
  const batches = garbageNoted(reader.batches());
  return signal === undefined ? batches : untilAborted(batches, signal);
}

/**
 * snapshotStaggerEntries: the entries past SnapshotPolicy.snapshotEntries a
 * voter waits before its automatic snapshot: its rank among the sorted voters
 * times snapshotEntries / (2 x voters), 0 for the first (and for a learner or
 * a node outside `membership`). Every member would otherwise snapshot at the
 * same index, at the same moment: the leader and both followers of a 3-node
 * cluster busy building a snapshot together, and a write needs the leader and
 * one of them. Staggered, at most one follower in three is building one at a
 * time while writes arrive steadily (3 voters, 10k entries: 0, 1,666, 3,333).
 */
export function snapshotStaggerEntries(snapshotEntries: number, id: string, membership: Membership): number {
  // The rank in sorted order, counted without sorting a copy (called at every Ready): the voters below `id`.
  const voters = membership.voters;
  if (!voters.includes(id)) return 0;
  let rank = 0;
  for (const v of voters) if (v < id) rank++;
  if (rank === 0) return 0;
  return Math.floor((snapshotEntries * rank) / (2 * voters.length));
}

/**
 * snapshotDue: whether a member whose newest snapshot is at `snapshotIndex`
 * takes an automatic one at `applied`: `every` entries after it, and its
 * first (none yet: `snapshotIndex` 0) `offset` entries later still
 * (snapshotStaggerEntries). Each later one follows the member's own last, so
 * the members stay apart until one installs another's snapshot.
 */
export function snapshotDue(applied: number, snapshotIndex: number, every: number, offset: number): boolean {
  return applied - snapshotIndex >= every + (snapshotIndex === 0 ? offset : 0);
}

export function toRaftMeta(s: StoredSnapshot): SnapshotMeta {
  return {
    index: s.meta.index,
    term: s.meta.term,
    membership: s.meta.membership,
    sizeBytes: s.archiveBytes,
    digest: s.archiveSha256,
  };
}

/**
 * SnapshotTermUnknownError: the state machine's view is at `index`, whose
 * term the log no longer knows: an install replaced the log meanwhile (the
 * view is older than the state now), or the log lost it (a bug). The node
 * tells the two apart.
 */
export class SnapshotTermUnknownError extends Error {
  override readonly name = 'SnapshotTermUnknownError';
  constructor(readonly index: number) {
    super(`no term known for applied index ${index}`);
  }
}

/**
 * SnapshotSupersededError: a snapshot creation was stopped because a newer
 * one was asked for while nobody waited for it any more (Node.snapshotNow);
 * nothing was stored.
 */
export class SnapshotSupersededError extends Error {
  override readonly name = 'SnapshotSupersededError';
  /**
   * by: what took its place: a snapshot asked for (Node.snapshotNow), one fetched from the leader (Node.startFetch),
   * or the node's stop (Node.stop: the log it would have compacted is replayed at the next start instead).
   */
  readonly by: 'asked' | 'fetch' | 'stop';
  constructor(by: 'asked' | 'fetch' | 'stop' = 'asked') {
    super(by === 'fetch' ? 'snapshot creation superseded by the snapshot being fetched' : by === 'stop' ? 'snapshot creation cut by the node\'s stop' : 'snapshot creation superseded by a newer one');
    this.by = by;
  }
}

/**
 * SnapshotManager keeps a node's snapshots: it writes them from the state
 * machine's point-in-time view, serves them in verified chunks, fetches them
 * from a leader and installs them. It holds the newest snapshot open (pinned,
 * verified once) so serving does not re-hash it for every stream.
 */
export class SnapshotManager {
  private newest: SnapshotHandle | null = null;
  private transfers = 0;
  /** transfersTo: the FetchSnapshot streams being served, per requesting member. */
  private readonly transfersTo = new Map<string, number>();
  /** deltas: snapshots created from the previous one and the changed keys (createDelta), not from the whole state. */
  deltas = 0;
  /** copies: snapshots written beside a restore's install (installUpload's snapshotAs). */
  copies = 0;
  /** reused: create() calls answered with the newest snapshot, which already held the state (no build at all). */
  reused = 0;
  /** installHashedBytes: what install() fed to SHA-256: the archives whose whole digest it confirmed, and the state.bin it hashed. */
  readonly installHashedBytes = { archive: 0, state: 0 };
  /**
   * installReadOnWorker: what install() read on a worker thread (install-read.ts): the archive's bytes, and the
   * state's records (their bytes as state.bin counts them, and their number) handed to the main thread.
   */
  readonly installReadOnWorker = { archive: 0, state: 0, keys: 0 };
  /** installReadOn: where install() reads a stored archive; undefined: installReadHome's rule (a worker for a large state of large records with the real file system). */
  installReadOn: 'worker' | 'here' | undefined;
  /** copying: the copy of the last restore being finished (installUpload); never rejects. */
  private copying: Promise<void> = Promise.resolve();
  private readonly incomingDir: string;
  private readonly scrubAbort = new AbortController();
  /** scrubbed: the boot scrub (never rejects). */
  private scrubbed: Promise<void> = Promise.resolve();
  /** periodic: the periodic scrub's loop (startPeriodicScrub; never rejects); stopped by close(). */
  private periodic: Promise<void> = Promise.resolve();
  /**
   * archiveWork: the creates, fetches, installs and restore uploads running (each counted while it runs): the
   * periodic scrub reads no archive while any is (ScrubPacer's busy).
   */
  private archiveWork = 0;
  /** scrubStats: the scrub runs of this process so far. */
  readonly scrubStats: ScrubStats = { runs: 0, bytes: 0, damaged: 0, last: null };
  /** scrubListener: told of each scrub run once it ended (reportScrubsTo). */
  private scrubListener: ((run: ScrubRun) => void) | undefined;
  /** unreported: the runs that ended before reportScrubsTo was called (the boot scrub's, at most SCRUBS_UNREPORTED_MAX). */
  private unreported: ScrubRun[] = [];
  /** scrubEndedAtMs: when the last scrub run ended, on the node's clock (null: none yet). */
  private scrubEndedAtMs: number | null = null;
  /**
   * onNewestLost: told when the newest snapshot is moved to quarantine (found damaged by the scrub or a reader's
   * chunk check), with its Raft meta; the node sets it (its core stops offering it, and a snapshot is built now).
   */
  onNewestLost: ((lost: SnapshotMeta) => void) | undefined;
  /** lostNewest: the last newest snapshot moved to quarantine (noteQuarantined), named in find's NOT_FOUND. */
  private lostNewest: SnapshotMeta | null = null;
  /**
   * damageChecks: the quarantineIfDamaged re-hash running per snapshot id: every reader that finds the same
   * archive damaged meanwhile (several downloads at its bad chunk) waits for that one. At most one per stored
   * snapshot; each removed when it settles.
   */
  private readonly damageChecks = new Map<string, Promise<boolean>>();
  /** dial: how snapshot fetches reach peers (the peer plane's TLS and metadata); set once before the node starts. */
  dial: PeerDial | undefined;
  /** streams: opens the FetchSnapshot streams of fetches (the node's transport, when it carries them); else gRPC with `dial`. */
  streams: SnapshotStreamOpener | undefined;

  private constructor(
    readonly store: SnapshotStore,
    /** uploads: archives uploaded for a restore (positions of another cluster: never a boot snapshot). */
    readonly uploads: SnapshotStore,
    private readonly storage: NodeStorage,
    readonly policy: SnapshotPolicy,
    private readonly log: Logger,
    dir: string,
    private readonly clock: Clock,
    private readonly io: SnapshotIo,
  ) {
    this.incomingDir = join(dir, 'incoming');
  }

  /**
   * open opens (creating if new) the stores under dir; `clock` times the
   * upload pins, the boot scrub's start and the fetches' timeouts, backoff
   * and bandwidth; `io` is the file system, compression and wall clock of
   * the stores (default the real ones; a simulator passes its own).
   * RangeError for a policy.scrubBytesPerSec out of range (nothing opened).
   */
  static async open(
    dir: string,
    storage: NodeStorage,
    policy: SnapshotPolicy,
    log: Logger,
    version: string,
    clock: Clock,
    io: SnapshotIo = nodeSnapshotIo,
  ): Promise<SnapshotManager> {
    scrubRateOf(policy); // a bad rate is refused here, before anything is opened (the boot scrub paces with it)
    const store = await SnapshotStore.open(join(dir, 'store'), {
      retain: policy.retain,
      snapcoordVersion: version,
      gzipLevel: policy.gzipLevel,
      io,
      ...(policy.gzipBlockBytes !== undefined ? { gzipBlockBytes: policy.gzipBlockBytes } : {}),
    });
    // The uploads' retention is pruneUploads (referenced archives are never deleted); the
    // store's own count-based retention only backs it up at its maximum.
    const uploads = await SnapshotStore.open(join(dir, 'uploads'), { retain: RETAIN_MAX, snapcoordVersion: version, io });
    const m = new SnapshotManager(store, uploads, storage, policy, log, dir, clock, io);
    // Fetches are written straight into the stores; an `incoming/` directory of older versions is removed.
    await io.rm(m.incomingDir, { recursive: true, force: true });
    m.newest = await store.latest();
    return m;
  }

  /**
   * scrubInBackground re-hashes every stored archive once but those in
   * `skip` (the boot scrub: open() trusts the recorded hashes) and quarantines any whose bytes
   * disagree, logging it; if that was the newest snapshot, the next good one
   * becomes the newest. Paced as the periodic runs are (ScrubPacer at policy.scrubBytesPerSec, waiting while the
   * node writes or installs an archive). Never rejects; close() stops it, mid-read included.
   */
  private async scrubInBackground(skip: readonly string[] = []): Promise<void> {
    // Let the node boot first: the scrub only reads.
    await this.clock.sleep(0);
    // Paced as the periodic runs are (policy.scrubBytesPerSec, held while the node writes or installs an archive):
    // unpaced, a node restarted with GBs of archives read and hashed them all at once, its writers starved meanwhile.
    const pacer = new ScrubPacer(this.clock, scrubRateOf(this.policy), this.scrubAbort.signal, () => this.archiveWork > 0);
    await this.scrubRun('boot', skip, { pace: pacer.pace, beforeEach: pacer.beforeEach });
  }

  /**
   * scrubRun: one scrub run over both stores (`skip`: ids of the store just verified), logged, counted in
   * scrubStats and told to the listener (reportScrubsTo); damaged archives are moved to quarantine (noteQuarantined: a lost newest
   * is replaced by the node). Never rejects; stops early once close() is called.
   */
  private async scrubRun(kind: ScrubKind, skip: readonly string[], options: ScrubOptions): Promise<ScrubRun> {
    const t0 = this.clock.nowMs();
    const run = { checked: 0, bytes: 0, damaged: [] as { store: 'store' | 'uploads'; id: string; reason: string }[], unreadable: 0, stopped: false };
    for (const [name, store] of [['store', this.store], ['uploads', this.uploads]] as const) {
      if (this.scrubAbort.signal.aborted) {
        run.stopped = true;
        break;
      }
      try {
        const r = await store.scrub(this.scrubAbort.signal, store === this.store ? skip : [], options);
        run.checked += r.checked.length;
        run.bytes += r.bytesRead;
        run.unreadable += r.unreadable.length;
        run.stopped ||= r.stopped;
        for (const q of r.quarantined) {
          run.damaged.push({ store: name, id: q.id, reason: q.reason });
          this.log.error({ store: name, id: q.id, reason: q.reason, scrub: kind }, 'a stored snapshot does not match its recorded hashes; moved to quarantine');
        }
        for (const u of r.unreadable) this.log.warn({ store: name, id: u.id, reason: u.reason }, 'scrub could not read a stored snapshot');
        if (store === this.store) await this.noteQuarantined(r.quarantined.map((q) => q.id));
        if (r.stopped) break;
      } catch (err) {
        if (!this.scrubAbort.signal.aborted) this.log.warn({ store: name, err: (err as Error).message }, 'snapshot scrub failed');
      }
    }
    return this.noteScrubRun({ kind, ...run, seconds: (this.clock.nowMs() - t0) / 1000 });
  }

  /** noteScrubRun: a scrub run ended: counted in scrubStats, logged (a periodic one), told to the listener. */
  private noteScrubRun(done: ScrubRun): ScrubRun {
    const kind = done.kind;
    const st = this.scrubStats;
    st.runs++;
    st.bytes += done.bytes;
    st.damaged += done.damaged.length;
    st.last = done;
    this.scrubEndedAtMs = this.clock.nowMs();
    if (kind === 'periodic') {
      this.log.info(
        { checked: done.checked, bytes: done.bytes, seconds: Number(done.seconds.toFixed(1)), damaged: done.damaged.length, unreadable: done.unreadable, stopped: done.stopped },
        'periodic snapshot scrub done',
      );
    }
    if (this.scrubListener !== undefined) this.scrubListener(done);
    else if (this.unreported.length < SCRUBS_UNREPORTED_MAX) this.unreported.push(done);
    return done;
  }

  /**
   * startPeriodicScrub starts the periodic scrub of policy.scrubIntervalMs (nothing when 0 or absent): after a
   * wait of scrubDelayMs(interval, rng) (jittered ±25%, drawn anew for every run) on the node's clock, every
   * archive of both stores is re-hashed in full, one at a time, at policy.scrubBytesPerSec (ScrubPacer), never
   * while this node creates, fetches or installs an archive or takes a restore upload (archiveWork: it waits,
   * and the wait earns no bytes), and after the boot scrub; those whose bytes disagree with their recorded hashes
   * are moved to quarantine as the boot check does (a lost newest snapshot is replaced: onNewestLost; an upload
   * is fetched again when a restore needs it). Each run is logged and counted (scrubStats, reportScrubsTo). At most
   * once; close() stops it, a run mid-way included. RangeError for an interval or a rate out of range.
   */
  startPeriodicScrub(rng: Rng): void {
    const intervalMs = this.policy.scrubIntervalMs ?? 0;
    if (!Number.isSafeInteger(intervalMs) || (intervalMs !== 0 && (intervalMs < SCRUB_INTERVAL_MS_MIN || intervalMs > SCRUB_INTERVAL_MS_MAX))) {
      throw new RangeError(`scrub interval must be 0 (off) or ${SCRUB_INTERVAL_MS_MIN}..${SCRUB_INTERVAL_MS_MAX} ms, got ${intervalMs}`);
    }
    const rate = scrubRateOf(this.policy);
    if (intervalMs === 0 || this.periodicStarted) return;
    this.periodicStarted = true;
    const signal = this.scrubAbort.signal;
    this.periodic = (async () => {
      for (;;) {
        try {
          await sleepUnlessStopped(this.clock, scrubDelayMs(intervalMs, rng), signal);
        } catch {
          return; // stopping
        }
        await this.scrubbed;
        const pacer = new ScrubPacer(this.clock, rate, signal, () => this.archiveWork > 0);
        await this.scrubRun('periodic', [], { pace: pacer.pace, beforeEach: pacer.beforeEach });
        if (signal.aborted) return;
      }
    })();
  }

  /**
   * reportScrubsTo: `listener` is told of each scrub run once it ended (the node counts them in /metrics), those
   * that ended before this call first (the boot scrub runs while the node starts, before the node sets this).
   */
  reportScrubsTo(listener: (run: ScrubRun) => void): void {
    this.scrubListener = listener;
    const early = this.unreported;
    this.unreported = [];
    for (const run of early) listener(run);
  }

  /** scrubStatus: the scrub so far, for the node's status (`cluster status`). */
  scrubStatus(): SnapshotScrubStatus {
    const { runs, bytes, damaged } = this.scrubStats;
    const ended = this.scrubEndedAtMs;
    return { intervalMs: this.policy.scrubIntervalMs ?? 0, runs, bytes, damaged, lastAgoMs: ended === null ? null : Math.max(0, this.clock.nowMs() - ended) };
  }

  /** periodicStarted: startPeriodicScrub ran (it starts the loop once). */
  private periodicStarted = false;

  /** scrub re-hashes every archive of both stores now (scrubInBackground's work, unpaced), for operators and tests. */
  async scrub(): Promise<{ store: ScrubResult; uploads: ScrubResult }> {
    await this.scrubbed;
    const t0 = this.clock.nowMs();
    const store = await this.store.scrub();
    await this.noteQuarantined(store.quarantined.map((q) => q.id));
    const uploads = await this.uploads.scrub();
    const damaged = [...store.quarantined.map((q) => ({ store: 'store' as const, ...q })), ...uploads.quarantined.map((q) => ({ store: 'uploads' as const, ...q }))];
    this.noteScrubRun({
      kind: 'asked',
      checked: store.checked.length + uploads.checked.length,
      bytes: store.bytesRead + uploads.bytesRead,
      seconds: (this.clock.nowMs() - t0) / 1000,
      damaged,
      unreadable: store.unreadable.length + uploads.unreadable.length,
      stopped: false,
    });
    return { store, uploads };
  }

  /**
   * quarantineIfDamaged re-hashes the stored snapshot `id` (a reader found
   * its bytes differ from the hashes recorded: an export's chunk check) and,
   * if they still differ, moves it to quarantine as the scrub does; if it was
   * the newest, the next good one becomes the newest, so the next snapshot
   * of the state is built, not served from the damaged copy. True when it
   * was moved; false when it verifies, is gone or cannot be read (EIO says
   * nothing of its bytes).
   */
  async quarantineIfDamaged(id: string): Promise<boolean> {
    // One re-hash for every reader that finds it damaged meanwhile (damageChecks); one that comes after it was
    // moved finds it gone (false), hashing nothing.
    let check = this.damageChecks.get(id);
    if (check === undefined) {
      check = this.checkDamaged(id).finally(() => this.damageChecks.delete(id));
      this.damageChecks.set(id, check);
    }
    return check;
  }

  /** checkDamaged: quarantineIfDamaged's one re-hash (SnapshotStore.quarantineIfDamaged: one read of the archive). */
  private async checkDamaged(id: string): Promise<boolean> {
    const reason = await this.store.quarantineIfDamaged(id);
    if (reason === null) return false;
    this.log.error({ id, reason }, 'a stored snapshot does not match its recorded hashes; moved to quarantine');
    await this.noteQuarantined([id]);
    return true;
  }

  /**
   * noteQuarantined: snapshots of this store just moved to quarantine. When
   * the newest is among them, the next good one becomes the newest, and
   * onNewestLost is told (the node's core offered the quarantined one to
   * followers: it stops, and the node builds a snapshot of its state now);
   * a fetch of it meanwhile is answered NOT_FOUND saying so (find).
   */
  private async noteQuarantined(ids: readonly string[]): Promise<void> {
    const n = this.newest;
    if (n === null || !ids.includes(n.id)) return;
    const lost = toRaftMeta(n);
    this.lostNewest = lost;
    n.release();
    this.newest = null;
    this.newest = await this.store.latest();
    this.log.warn({ index: lost.index, id: n.id, fallback: this.newest?.id ?? null }, 'the newest snapshot was moved to quarantine; the newest good one before it takes its place');
    this.onNewestLost?.(lost);
  }

  /**
   * boot returns the snapshot the Raft core starts from: the newest stored
   * one whose bytes verify against their recorded hashes (re-hashed once
   * here; the other snapshots are scrubbed in the background, see
   * scrubInBackground). When that snapshot is ahead of the state machine (a crash after a snapshot was
   * fetched, before it was installed), it finishes the install first.
   */
  async boot(initial: Membership): Promise<SnapshotMeta> {
    // The snapshot the node starts from is verified in full (its bytes against its recorded
    // hashes), the newest that does; the others are scrubbed in the background. Those found
    // corrupt here are moved to quarantine, as the scrub does (kept for an operator, out of the
    // store): left in place, a later fetch of that very snapshot found the damaged copy under its
    // id, kept it instead of the good bytes it had just received, and failed to install it
    // (real-node simulator seed 202216, 3 nodes).
    const refused: string[] = [];
    while (this.newest !== null) {
      try {
        await this.store.verify(this.newest.id);
        break;
      } catch (err) {
        // A read that failed (EIO, say) says nothing of the snapshot: the node stops on it, rather than fall back
        // to an older one (and, the log compacted past it, refuse to start as if the data dir were lost).
        if (!(err instanceof SnapshotStoreError && (err.code === 'corrupt' || err.code === 'not-found')) || isReadFailure(err)) throw err;
        const skipped = this.newest.id;
        this.newest.release();
        this.newest = null;
        if (err.code === 'corrupt') {
          await this.store.quarantine(skipped); // a failure here (the disk) stops the boot: retried at restart
          this.log.error({ id: skipped, err: err.message }, 'the newest stored snapshot does not verify; moved to quarantine, trying an older one');
        } else {
          this.log.error({ id: skipped, err: err.message }, 'the newest stored snapshot does not verify; trying an older one');
          refused.push(skipped);
        }
        for (const older of (await this.store.list()).filter((x) => x.id < skipped)) {
          try {
            this.newest = await this.store.open(older.id);
            break;
          } catch (e) {
            if (isReadFailure(e)) throw e;
            // not usable: the next one
          }
        }
      }
    }
    const s = this.newest;
    this.scrubbed = this.scrubInBackground(s === null ? refused : [s.id, ...refused]);
    if (s === null) return { index: 0, term: 0, membership: initial, sizeBytes: 0, digest: '' };
    if (s.meta.index > this.storage.appliedIndex()) {
      this.log.warn({ index: s.meta.index, applied: this.storage.appliedIndex() }, 'completing an interrupted snapshot install');
      await this.install(s);
    }
    return toRaftMeta(s);
  }

  /**
   * keepWhileInUse: retention keeps every stored snapshot whose index
   * inUse() names (RaftNode.snapshotsInUse: those followers were offered or
   * are fetching), so a follower slower to begin its fetch than the leader
   * is to take `retain` newer snapshots is not sent from offer to NOT_FOUND
   * to a newer offer for ever. Bounded by the peers.
   */
  keepWhileInUse(inUse: () => readonly number[]): void {
    this.store.keepAlso = (s) => inUse().includes(s.meta.index);
  }

  /**
   * adoptFetched (issue 15) keeps a fetched snapshot as the newest
   * (after a restore's copy being finished): a follower that took the leader's
   * state image fetches the leader's snapshot of that state rather than build
   * one, and create() then reuses it.
   */
  async adoptFetched(stored: StoredSnapshot, options: { readonly recordsDigest?: string } = {}): Promise<void> {
    await this.copying;
    // With `recordsDigest` (a follower that checks the leader's image, --verify-image-records) the snapshot's records
    // are checked against the restore entry's in the same read (as importUpload's scan): the image was checked, and a
    // snapshot kept unchecked beside it would be this node's snapshot of a state other than its own (a bug in the
    // leader's copy of the restore), served to downloads and followers and the base of every delta after it.
    const expected = options.recordsDigest;
    let records: string | null = null;
    const consumeState =
      expected === undefined
        ? undefined
        : async (meta: ArchiveMeta, state: Readable): Promise<void> => {
            const into = new RecordsDigest();
            await scanStateRecords(state, meta, { ...RESTORE_STATE_LIMITS, digest: { into, keep: isCarriedKeyAt } });
            records = into.hex();
          };
    // Its member table, found by one read of it, so this node's next snapshot is a delta from it rather than a
    // read of the whole state (bench:snapshot-cluster, 2M x 1 KiB: a follower's first snapshot after a restore took
    // 22 s of the shared cores beside the leader's writes and deltas; 8M keys four times that). Best effort.
    await this.recordTable(stored, consumeState);
    if (expected !== undefined && records !== expected) {
      // Not kept, and out of the store (at a restart the newest stored snapshot becomes the newest).
      await this.store.quarantine(stored.id);
      throw new Error(
        records === null
          ? `the fetched snapshot ${stored.id}'s records could not be checked against the restore entry's records digest; moved to quarantine`
          : `the fetched snapshot ${stored.id}'s carried records have records digest ${String(records)}, but the restore entry names ${expected}; moved to quarantine`,
      );
    }
    await this.setNewest(stored);
  }

  /**
   * recordTable records the member table of a fetched snapshot (SnapshotStore.recordMembers: one read of it), so
   * that this node's next snapshot is a delta from it; best effort, never rejects (a failure is logged, and the
   * next snapshot reads the whole state as before). Used after a restore (adoptFetched); a snapshot installed
   * from the leader gets its table in the install's own read (install).
   */
  private async recordTable(stored: StoredSnapshot, consumeState?: (meta: ArchiveMeta, state: Readable) => Promise<void>): Promise<void> {
    const t0 = this.clock.nowMs();
    try {
      const table = await this.store.recordMembers(stored, consumeState !== undefined ? { consumeState } : {});
      this.log.info({ id: stored.id, members: table?.state.length ?? null, ms: this.clock.nowMs() - t0 }, table !== null ? 'member table of a fetched snapshot recorded' : 'a fetched snapshot has no member table a delta can start from');
    } catch (err) {
      this.log.warn({ id: stored.id, err: (err as Error).message }, 'member table of a fetched snapshot not recorded; the next snapshot reads the whole state');
    }
  }

  /** copied: resolves once the copy of the last restore as a snapshot is finished (or failed). */
  copied(): Promise<void> {
    return this.copying;
  }

  newestMeta(): SnapshotMeta | null {
    return this.newest === null ? null : toRaftMeta(this.newest);
  }

  /**
   * create snapshots the state machine now (a point-in-time view while writes
   * go on); termAt gives the term of the view's index. Returns the stored
   * snapshot. When the newest snapshot was built here (it has a member table)
   * and the storage lists every key changed since its index, the new one is
   * made from it (SnapshotStore.createDelta: unchanged members copied, the
   * state not read whole); if that fails for any reason (the base's bytes or
   * table do not check), from the whole state as always. Once
   * options.signal aborts, the creation stops at its next gzip member or
   * batch of records and rejects with the signal's reason, nothing stored.
   */
  async create(
    termAt: (index: number) => number | undefined,
    membershipAt: (index: number) => Membership,
    options: { readonly signal?: AbortSignal; readonly onViewStart?: (applied: number) => void } = {},
  ): Promise<StoredSnapshot> {
    this.archiveWork++;
    try {
      const { signal } = options;
      // A restore's copy still being finished is the snapshot of that state: wait for it rather than build another.
      await this.copying;
      // From here on the snapshot made (the newest reused, or a view taken below) holds at least this applied index.
      options.onViewStart?.(this.storage.appliedIndex());
      const current = this.newest;
      if (current !== null && current.meta.index === this.storage.appliedIndex() && termAt(current.meta.index) === current.meta.term) {
        // Nothing applied since the newest snapshot (a restore's copy, a fetched one): it is the state now.
        this.reused++;
        return current;
      }
      // A delta from the newest snapshot when it was built here (it has a member table) and the
      // storage can list every key changed since; otherwise the whole state is read.
      const t0 = this.clock.nowMs();
      const base = this.newest;
      const table = base !== null ? await this.store.members(base) : null;
      const reader = await this.storage.snapshotState(base !== null && table !== null ? { changesSince: base.meta.index } : {});
      try {
        const index = reader.appliedIndex;
        const term = termAt(index);
        if (term === undefined) throw new SnapshotTermUnknownError(index);
        const meta = { index, term, membership: membershipAt(index) };
        const changes = reader.changes;
        let stored: StoredSnapshot | null = null;
        if (base !== null && table !== null && changes !== undefined && changes !== null && changes.sinceIndex === base.meta.index) {
          try {
            const pinned = await this.store.hold(base); // held while read, whatever becomes newest meanwhile
            try {
              stored = await this.store.createDelta(meta, pinned, table, changes.entries, signal !== undefined ? { signal } : {});
            } finally {
              pinned.release();
            }
            this.deltas++;
          } catch (err) {
            if (signal?.aborted === true) throw signal.reason;
            // The base did not check (its bytes, its table) or the write failed: the full way below.
            this.log.warn({ base: base.id, err: (err as Error).message }, 'snapshot from the previous one failed; reading the whole state');
          }
        }
        // Iteration, encoding and compression (on the threadpool) overlap; no uncompressed state.bin is written.
        const delta = stored !== null;
        stored ??= await this.createOrFind(meta, reader, signal);
        await this.setNewest(stored);
        this.log.info({ id: stored.id, ms: this.clock.nowMs() - t0, way: delta ? 'delta' : 'full', changes: changes?.entries.length ?? null }, 'snapshot created');
        return stored;
      } finally {
        await reader.close();
      }
    } finally {
      this.archiveWork--;
    }
  }

  /**
   * createOrFind writes the snapshot of reader's state; when one of that very
   * term and index at that time is stored already (an earlier attempt whose
   * failure was reported after it landed: a restore's copy whose rename
   * returned EIO, say), that one is it. Errors: the store's.
   */
  private async createOrFind(meta: { index: number; term: number; membership: Membership }, reader: StateSnapshotReader, signal?: AbortSignal): Promise<StoredSnapshot> {
    try {
      return await this.store.createFromRecords(meta, fullSnapshotBatches(reader, signal));
    } catch (err) {
      if (!(err instanceof SnapshotStoreError && err.code === 'already-exists')) throw err;
      const same = (await this.store.list()).find((x) => x.meta.index === meta.index && x.meta.term === meta.term);
      if (same === undefined) throw err;
      // That attempt failed after its rename, maybe before the fsync that makes it durable: made durable now,
      // before anything (a compaction) relies on it (simulator seed 30441: a power loss took it, the node could
      // not start).
      await this.store.makeDurable(same.id);
      this.log.info({ id: same.id }, 'this snapshot was stored by an earlier attempt');
      return same;
    }
  }

  /**
   * openChunks serves FetchSnapshot to member `from`: the named snapshot from offset, in verified chunks.
   * Errors (coded): NOT_FOUND (no such snapshot), OUT_OF_RANGE (offset beyond it), RESOURCE_EXHAUSTED
   * (maxTransfers streams served already, or transfersPerPeerMax(maxTransfers) to `from`).
   */
  async openChunks(from: string, index: number, digest: string, offset: number, chunkBytes: number): Promise<AsyncIterable<FileChunk>> {
    const s = await this.find(index, digest);
    if (offset > s.archiveBytes) {
      s.release();
      throw coded(11, `offset ${offset} is beyond snapshot ${index} (${s.archiveBytes} bytes)`);
    }
    if (this.transfers >= this.policy.maxTransfers) {
      s.release();
      throw coded(8, `too many snapshot transfers (${this.transfers}); retry later`);
    }
    const perPeerMax = transfersPerPeerMax(this.policy.maxTransfers);
    const toPeer = this.transfersTo.get(from) ?? 0;
    if (toPeer >= perPeerMax) {
      s.release();
      throw coded(8, `${from} is being sent ${toPeer} snapshot${toPeer === 1 ? '' : 's'} already (at most ${perPeerMax} at once); retry later`);
    }
    this.transfers++;
    this.transfersTo.set(from, toPeer + 1);
    // A chunk size asked below SERVED_CHUNK_BYTES_MIN is raised to it: a member asking for 1-byte chunks would make
    // this node hash and send every byte as a message of its own (the fetcher takes chunks of any size it can receive).
    const size = chunkBytes > 0 ? Math.max(SERVED_CHUNK_BYTES_MIN, chunkBytes) : this.policy.chunkBytes;
    const chunks = readChunks(s.path, offset, size, {
      chunkBytes: CHUNK_HASH_BYTES,
      sha256s: s.chunkSha256s,
    }, this.io);
    const done = (): void => {
      this.transfers--;
      const left = (this.transfersTo.get(from) ?? 1) - 1;
      if (left > 0) this.transfersTo.set(from, left);
      else this.transfersTo.delete(from);
      s.release();
    };
    return {
      [Symbol.asyncIterator]: async function* () {
        try {
          yield* chunks;
        } finally {
          done();
        }
      },
    };
  }

  /**
   * fetch pulls a snapshot from the peer at address straight into the store:
   * each chunk verified against its sender's SHA-256 (hashed once) and
   * written once through the store's sink; meta.json's index and term must
   * be meta's. With chunks of CHUNK_HASH_BYTES (the default) the whole
   * archive is not hashed here: the store records meta.digest as claimed
   * (unverified), and install() hashes the bytes it reads anyway and makes
   * nothing live unless they are meta.digest (every other reader of the
   * store verifies an unverified archive before reading it:
   * SnapshotStore.open). So each byte is hashed once on arrival and once at
   * install, as before, but the fetch runs at the stream's speed. Only
   * then: a leader serves such chunks with the hashes it recorded when it
   * wrote the archive, so a byte flipped on its disk fails the chunk check
   * here (and the fetch retries) rather than the install; with other chunk
   * sizes it hashes what it reads, so the sink hashes the whole archive and
   * a wrong one fails the fetch. The archive's contents are validated when
   * it is installed.
   */
  async fetch(
    selfId: string,
    address: string,
    meta: SnapshotMeta,
    signal?: AbortSignal,
    onProgress?: (bytes: number) => void,
  ): Promise<{ stored: StoredSnapshot; result: FetchResult }> {
    this.archiveWork++;
    try {
      let result: FetchResult | undefined;
      const stored = await this.store.receiveArchive(
        { digest: meta.digest, sizeBytes: meta.sizeBytes, index: meta.index, term: meta.term, membership: meta.membership },
        async (sink) => {
          result = await fetchSnapshot({
            selfId,
            address,
            target: meta,
            sink,
            chunkBytes: this.policy.chunkBytes,
            bandwidthBytesPerSec: this.policy.bandwidthBytesPerSec,
            clock: this.clock,
            logger: this.log,
            ...(signal !== undefined ? { signal } : {}),
            ...(onProgress !== undefined ? { onProgress } : {}),
            ...(this.dial !== undefined ? { dial: this.dial } : {}),
            ...(this.streams !== undefined ? { streams: this.streams } : {}),
          });
        },
        { maxBytes: this.policy.archiveBytesMax, deferWholeDigest: this.policy.chunkBytes === CHUNK_HASH_BYTES },
      );
      return { stored, result: result as FetchResult };
    } finally {
      this.archiveWork--;
    }
  }

  /**
   * install replaces the state machine with a stored snapshot's state,
   * atomically (the state machine keeps its old state unless the whole
   * install succeeds). The archive is read once and gunzipped once; its
   * recorded hashes are trusted on open (checked when it was written; a
   * fetched archive's whole SHA-256, only claimed by its sender, is hashed
   * in this same read), and readArchive verifies everything inside it (every
   * member's SHA-256, the gzip CRC, nothing after the end) before the new
   * state is made live: the state's source ends only once the archive is
   * verified and its whole SHA-256 confirmed (and recorded). An archive that
   * fails that is moved out of the store (so a restart does not try it
   * again) and the error passed on.
   *
   * When the whole SHA-256 is hashed in this read (a fetched archive),
   * state.bin is not hashed a second time (readArchive's skipStateDigest):
   * the whole digest, which gates the install, covers every byte of it, and
   * its line of SHA256SUMS was written by its sender from the bytes it
   * hashed while encoding them. That was one SHA-256 pass over the whole
   * state on the main thread: measured (an install of 256 MiB of random
   * state in one process, two rounds each, alternating twice) 0.80-1.07 s of
   * main-thread CPU before, 0.63-0.71 s after. meta.json's hash and every gzip CRC are still
   * checked; an archive opened verified (its bytes' hashes recorded when this
   * node wrote them) still has its state.bin hashed, the one check of those
   * bytes in this read.
   */
  async install(s: StoredSnapshot): Promise<void> {
    this.archiveWork++;
    try {
      const handle = await this.store.open(s.id, { allowUnverified: true });
      // An archive without a member table (fetched from the leader) gets one from this same read, so this node's
      // next snapshot is a delta from it, not a read of its whole state: before, a second read of the archive in the
      // background made it (91744b3), gunzipping the whole state again (the cut-off follower's peak RSS, issue 15).
      const wantTable = (await this.store.members(handle)) === null;
      if ((this.installReadOn ?? installReadHome(this.io, handle.meta.stateBytes, handle.meta.stateKeys)) === 'worker') {
        await this.installOnWorker(s, handle, wantTable);
        return;
      }
      // The gunzip's output goes into a few reused buffers (PiecePool) that the records are views of, given back
      // batch by batch, instead of a fresh Buffer per piece, promoted while queued (issue 15).
      const pool = new PiecePool(GUNZIP_CHUNK_BYTES, INSTALL_PIECES_SPARE_MAX);
      const recorder = wantTable ? new MemberTableRecorder({ checkCrc: true, io: this.io, pool }) : null;
      const gunzip = recorder?.gunzip ?? new MemberGunzip({ chunkSize: GUNZIP_CHUNK_BYTES, checkCrc: true, io: this.io, pool });
      try {
        const { stream, confirm } = handle.createCheckedReadStream();
        const read = await readArchive(
          stream,
          async (meta, state, verified, where) => {
            recorder?.stateBegins(meta, where);
            // verified settles once readArchive has read the whole input: the whole digest is final then.
            const checked = verified.then(confirm);
            checked.catch(() => undefined);
            // Every record is checked as a restore's are (keys strictly increasing, as many records and bytes as meta.json
            // declares: a duplicate key was installed as its last value, keys out of order as sorted, the snapshot's
            // counts lying), and the session records as the state machine reads them at open: a state it cannot open
            // on is refused here (the state unchanged), not made live to fail the node at its next apply and every restart.
            // The store copies each record into its write batch before it asks for the next batch: the decoder may give their pieces back then.
            const records = sessionRecordsChecked(checkedStateRecords(state, meta, { ...INSTALL_DECODE_OPTIONS, release: (piece) => pool.release(piece) }), `snapshot ${s.id}`);
            await this.storage.installState(thenVerified(records, checked), { appliedIndex: meta.index, membership: meta.membership });
          },
          { io: this.io, skipStateDigest: !handle.verified, gunzip, pool },
        );
        if (!handle.verified) this.installHashedBytes.archive += handle.archiveBytes;
        if (read.stateSha256 !== '') this.installHashedBytes.state += read.meta.stateBytes;
      } catch (err) {
        handle.release();
        // Only bytes that are wrong condemn the snapshot; a read that failed (EIO) says nothing of them, and removing
        // a good snapshot the log was already reset to leaves a node that cannot start (simulator seed 20895).
        if (!isReadFailure(err) && (err instanceof ArchiveError || err instanceof StateFormatError || (err instanceof SnapshotStoreError && err.code === 'corrupt'))) {
          this.log.error({ id: s.id, err: err.message }, 'a stored snapshot failed to install; removing it');
          await this.store.remove(s.id).catch(() => undefined);
        }
        throw err;
      }
      if (recorder !== null) await this.keepTable(handle, recorder);
      // The opened handle becomes the newest (not opened again); its digest is confirmed now.
      await this.setNewest(handle.verified ? handle : { ...handle, verified: true });
    } finally {
      this.archiveWork--;
    }
  }

  /**
   * installOnWorker is install() with the archive read on a worker thread
   * (install-read.ts: the file read, the whole SHA-256 of a fetched archive,
   * gunzip, the archive's rules, every record checked, the member table when
   * `wantTable`), the same checks in the same order: the records' source ends
   * only once the worker has read the whole archive and its digest is
   * confirmed here (SnapshotStore.confirmRead), and an archive refused for its
   * bytes is removed from the store. The main thread cuts the worker's packed
   * batches into views, checks the session records and puts every record
   * into RocksDB's write batches. Called with archiveWork counted and the
   * handle open; releases it on failure.
   */
  private async installOnWorker(s: StoredSnapshot, handle: SnapshotHandle, wantTable: boolean): Promise<void> {
    const reader = startInstallRead({ path: handle.path, hashWhole: !handle.verified, skipStateDigest: !handle.verified, recordMembers: wantTable });
    let end: InstallReadEnd;
    try {
      const meta = await reader.meta;
      // As install(): the records' source ends only once the whole archive is read, every rule checked and its digest confirmed.
      const checked = reader.end.then((e) => this.store.confirmRead(handle, e.archiveBytes, e.sha256 ?? handle.archiveSha256));
      checked.catch(() => undefined);
      const records = sessionRecordsChecked(reader.records(), `snapshot ${s.id}`);
      await this.storage.installState(thenVerified(records, checked), { appliedIndex: meta.index, membership: meta.membership });
      end = await reader.end;
      this.installReadOnWorker.archive += end.archiveBytes;
      this.installReadOnWorker.state += end.stateBytes;
      this.installReadOnWorker.keys += end.stateKeys;
      if (!handle.verified) this.installHashedBytes.archive += handle.archiveBytes;
      if (end.stateSha256 !== '') this.installHashedBytes.state += meta.stateBytes;
    } catch (err) {
      await reader.close();
      handle.release();
      if (!isReadFailure(err) && (err instanceof ArchiveError || err instanceof StateFormatError || (err instanceof SnapshotStoreError && err.code === 'corrupt'))) {
        this.log.error({ id: s.id, err: err.message }, 'a stored snapshot failed to install; removing it');
        await this.store.remove(s.id).catch(() => undefined);
      }
      throw err;
    }
    await reader.close();
    if (wantTable) {
      const found = end.members;
      await this.keepTable(handle, { table: () => found });
    }
    await this.setNewest(handle.verified ? handle : { ...handle, verified: true });
  }

  /** keepTable records the member table an install's read found (SnapshotStore.keepMemberTable); best effort, never rejects. */
  private async keepTable(handle: SnapshotHandle, recorder: Pick<MemberTableRecorder, 'table'>): Promise<void> {
    try {
      const table = await this.store.keepMemberTable(handle, recorder);
      this.log.info({ id: handle.id, members: table?.state.length ?? null }, table !== null ? 'member table of an installed snapshot recorded' : 'an installed snapshot has no member table a delta can start from');
    } catch (err) {
      this.log.warn({ id: handle.id, err: (err as Error).message }, 'member table of an installed snapshot not recorded; the next snapshot reads the whole state');
    }
  }

  /**
   * openCurrent returns the newest snapshot, opened (pinned until release()),
   * if it still holds exactly the state machine's state: taken at or after
   * `changedAt` (the state machine's changedIndex: the last apply or install
   * that changed a key or the membership, which is part of the snapshot's
   * meta; entries after it were no-ops, such as a new leader's empty entry)
   * and not ahead of the applied index. Without `changedAt`, only a snapshot
   * at the applied index itself. Otherwise null. The open is cheap (open()
   * trusts the recorded hashes): serving a current snapshot costs no rebuild
   * and no hashing.
   */
  async openCurrent(changedAt?: number): Promise<SnapshotHandle | null> {
    const n = this.newest;
    const applied = this.storage.appliedIndex();
    if (n === null || n.meta.index > applied || n.meta.index < Math.min(changedAt ?? applied, applied)) return null;
    // Checked in the same turn as the applied index: the snapshot is the state as of now.
    try {
      return await this.store.open(n.id);
    } catch {
      return null;
    }
  }

  /** openStored opens the snapshot of this node's store that `meta` names (index and digest); NodeError `unavailable` if it is gone. */
  async openStored(meta: SnapshotMeta): Promise<SnapshotHandle> {
    const stored = (await this.store.list()).find((s) => s.meta.index === meta.index && s.archiveSha256 === meta.digest);
    if (stored === undefined) throw new NodeError('unavailable', `snapshot ${meta.index} vanished before it could be read`);
    return this.store.open(stored.id);
  }

  /**
   * installUpload reads an uploaded archive (a restore entry's) and hands its
   * key-value records to `install` (the state machine's restore install, which
   * decides what the state becomes), with the same record checks as the
   * upload's: the source ends only once the whole archive is read and checked,
   * so an archive that slipped past the upload checks fails here the same way
   * on every node, never half installed.
   *
   * The archive is read against the chunk hashes recorded when its bytes were
   * stored (createChunkCheckedReadStream), and state.bin is not hashed again
   * (readArchive's skipStateDigest): those bytes are the ones whose state
   * digest was checked whole before they were kept (importUpload on the
   * leader), or hash to that archive's digest (fetchUpload), so a second
   * SHA-256 pass over the whole state would only check the same bytes again;
   * the chunk hashes (over the compressed bytes, far fewer) catch any change
   * on this node's disk since. Such a change is SnapshotStoreError `corrupt`
   * (this node's copy, not the archive: not a content error); the upload is
   * then moved to quarantine (kept for an operator, out of findUpload), so
   * that the next attempt fetches it again from a holder.
   *
   * With `snapshotAs` (the restore entry's index, term and membership), the
   * installed state is also written, as it goes in, into a new snapshot of
   * this node's store: the snapshot a node takes right after a restore is
   * then that one, not a read of the whole state back (create() waits for it
   * and adopts it). The upload is then gunzipped by a MemberGunzip, which
   * says where each gzip member lies; once state.bin begins:
   * - when the upload's first member ends exactly where state.bin begins (an
   *   archive snapcoord wrote), the copy keeps the upload's state members
   *   compressed, as they are, but those that meet the reserved keys (where
   *   the install puts this cluster's client sessions), which are encoded
   *   again with the installed records there (UploadMemberCopy,
   *   createFromMembers; a member table is recorded for the next delta);
   * - otherwise (another layout: one big member, tar blocks), the installed
   *   records are teed into createFromRecords (RecordTee), as before.
   * The MemberGunzip checks each member's ISIZE, not its CRC-32: the CRCs are
   * over the same bytes the chunk hashes are, and every one of them was
   * checked when the leader imported the upload (readArchive's gunzip), so
   * a CRC pass here checks nothing the chunk hashes do not.
   * The copy is committed only after the install is (a failed install never
   * leaves a snapshot of a state that is not), and it is finished in the
   * background after installUpload resolves; if it fails, it is logged and
   * create() builds the snapshot the usual way.
   */
  async installUpload(
    s: StoredSnapshot,
    install: (records: AsyncIterable<readonly KeyValue[]>, copy?: InstalledRecordsCopy) => Promise<void>,
    snapshotAs?: SnapshotCreateMeta,
  ): Promise<void> {
    this.archiveWork++;
    try {
      const handle = await this.uploads.open(s.id);
      // The copy, chosen once state.bin begins: the upload's own members, or (a foreign layout) the records re-encoded.
      const c: { tee: RecordTee<readonly KeyValue[]> | null; members: UploadMemberCopy | null; copying: Promise<StoredSnapshot> | null } = { tee: null, members: null, copying: null };
      // The gunzip's output goes into a few reused buffers (PiecePool), as in install(): the decoder and the member
      // copy give them back. A copy by records (RecordTee: batches queued past the next one) gives none back.
      const pool = new PiecePool(GUNZIP_CHUNK_BYTES, INSTALL_PIECES_SPARE_MAX);
      const release = (piece: Uint8Array): void => pool.release(piece);
      const gunzip =
        snapshotAs !== undefined
          ? new MemberGunzip({ chunkSize: GUNZIP_CHUNK_BYTES, checkCrc: false, keyBytesMax: KEY_BYTES_MAX, io: this.io, pool, onMember: (m) => (c.members !== null ? c.members.take(m) : m.output.forEach(release)) })
          : new MemberGunzip({ chunkSize: GUNZIP_CHUNK_BYTES, checkCrc: true, io: this.io, pool });
      try {
        await readArchive(
          handle.createChunkCheckedReadStream(),
          async (meta, state, verified, where) => {
            let copy: InstalledRecordsCopy | undefined;
            if (snapshotAs !== undefined && gunzip !== undefined) {
              if (gunzip.headBytes === where.stateTarOffset) {
                const { level, blockBytes } = this.store.blockGzip;
                c.members = new UploadMemberCopy({
                  ...RESTORE_STATE_LIMITS,
                  stateTarOffset: where.stateTarOffset,
                  stateBytes: meta.stateBytes,
                  stateKeys: meta.stateKeys,
                  changed: RESTORE_CHANGED_KEYS,
                  membersMax: COPY_MEMBERS_MAX,
                  gzipLevel: level,
                  gzipBlockBytes: blockBytes,
                  gzipAdaptive: true,
                  io: this.io,
                  release,
                });
                c.copying = this.store.createFromMembers(snapshotAs, c.members.produce);
                copy = c.members;
              } else {
                gunzip.stopReporting();
                c.tee = new RecordTee<readonly KeyValue[]>(COPY_BATCHES_MAX);
                c.copying = this.store.createFromRecords(snapshotAs, c.tee.records());
                copy = c.tee;
              }
              // A copy that fails (or ends) before reading everything never holds the install up.
              const abandon = (): void => {
                c.tee?.abandon();
                c.members?.abandon();
              };
              c.copying.then(abandon, abandon);
            }
            // The state machine's install copies each record (into the store's write batch, the member copy's changed
            // records) before it asks for the next batch; a RecordTee queues batches, so its records keep their pieces.
            const decode = { ...RESTORE_STATE_LIMITS, ...INSTALL_DECODE_OPTIONS, ...(c.tee === null ? { release } : {}) };
            await install(thenVerified(checkedStateRecords(state, meta, decode), verified), copy);
          },
          { io: this.io, skipStateDigest: true, gunzip, pool },
        );
      } catch (err) {
        c.tee?.fail(err as Error);
        c.members?.fail(err as Error);
        await c.copying?.catch(() => undefined);
        handle.release();
        if (err instanceof SnapshotStoreError && err.code === 'corrupt' && !isReadFailure(err)) {
          this.log.error({ id: s.id, err: err.message }, 'a kept upload changed on disk since it was stored; moved to quarantine (fetched again at the next attempt)');
          await this.uploads.quarantine(s.id).catch(() => undefined);
        }
        throw err;
      }
      handle.release();
      if (c.copying === null) return;
      c.tee?.end();
      c.members?.finish();
      // Never rejects: a copy that failed, or one stored but not opened as the newest (an EIO reading it back),
      // is logged, and the next snapshot is built the usual way. (Adopting it used to reject unhandled: a process
      // crash on one failed read; simulator seed 30385.)
      this.copying = c.copying
        .then(async (stored) => {
          this.copies++;
          await this.setNewest(stored);
        })
        .catch((err: unknown) => {
          this.log.warn({ index: snapshotAs?.index, err: (err as Error).message }, 'the copy of a restore as a snapshot failed; the next snapshot reads the whole state');
        });
    } finally {
      this.archiveWork--;
    }
  }

  /**
   * importUpload validates an uploaded archive completely while it streams in
   * (one pass, flat memory) and keeps it (pinned for pinMs) for a restore:
   * every hash and archive rule (readArchive); the declared state size
   * against restoreStateBytesMax (NodeError `invalid`) and against the free
   * space of the snapshot directory's file system, which must hold about
   * twice the state (the archive and the installed state) plus reserveBytes
   * (NodeError `diskFull`), both checked as soon as meta.json is read, before
   * the state; then every record of state.bin (checkedStateRecords: no empty
   * key, keys strictly increasing, within the KV layer's key and value
   * limits, count and size as meta.json declares; StateFormatError). A
   * refused archive leaves nothing behind. The same walk of state.bin hashes
   * the records a restore carries into the records digest the restore entry
   * names (`recordsDigest`, fsm/restore-digest.ts): no second pass.
   */
  async importUpload(source: Readable, pinMs: number, reserveBytes = 0): Promise<UploadedArchive> {
    this.archiveWork++;
    try {
      let recordsDigest: string | null = null;
      // The check's gunzip output goes into a few reused buffers, given back piece by piece by the scan (as an install's).
      const pool = new PiecePool(GUNZIP_CHUNK_BYTES, INSTALL_PIECES_SPARE_MAX);
      const stored = await this.uploads.importArchive(source, {
        maxBytes: this.policy.archiveBytesMax,
        pool,
        consumeState: async (meta, state) => {
          await this.checkRestoreSize(meta, reserveBytes);
          const into = new RecordsDigest();
          await scanStateRecords(state, meta, { ...RESTORE_STATE_LIMITS, digest: { into, keep: isCarriedKeyAt }, release: (chunk) => pool.release(chunk) });
          recordsDigest = into.hex();
        },
      });
      if (recordsDigest === null) throw new Error('importUpload: the archive was stored without its state being read');
      const handle = await this.uploads.open(stored.id);
      this.clock.setTimeout(() => handle.release(), pinMs).unref();
      return { ...stored, recordsDigest };
    } finally {
      this.archiveWork--;
    }
  }

  /** checkRestoreSize refuses a declared state beyond the cap (`invalid`) or beyond the free disk space (`diskFull`). */
  private async checkRestoreSize(meta: ArchiveMeta, reserveBytes: number): Promise<void> {
    const cap = this.policy.restoreStateBytesMax ?? RESTORE_STATE_BYTES_MAX_DEFAULT;
    if (meta.stateBytes > cap) {
      throw new NodeError('invalid', `meta.json declares a state of ${meta.stateBytes} bytes (stateBytes), more than the restore limit of ${cap} bytes`);
    }
    const st = await this.io.statfs(this.uploads.dir);
    const freeBytes = st.bavail * st.bsize;
    const neededBytes = 2 * meta.stateBytes + reserveBytes;
    if (freeBytes < neededBytes) {
      throw new NodeError(
        'diskFull',
        `meta.json declares a state of ${meta.stateBytes} bytes; restoring it needs about ${neededBytes} bytes free (the archive, the installed state and a reserve of ${reserveBytes}), but ${freeBytes} are free on ${this.uploads.dir}`,
      );
    }
  }

  /** findUpload returns the kept upload with this digest, or null. */
  async findUpload(digest: string): Promise<StoredSnapshot | null> {
    return (await this.uploads.list()).find((u) => u.archiveSha256 === digest) ?? null;
  }

  /**
   * fetchUpload pulls an uploaded archive (named by a restore entry, or staged
   * before one) from a peer into the uploads store, each byte written once
   * and hashed as written: its size and whole SHA-256 must equal `target`'s
   * (SnapshotStoreError `digest-mismatch` otherwise, nothing kept), its
   * meta.json is read and checked (readArchiveHead), and it is fsynced. With
   * opts.staging (StageArchive) the state size meta.json declares is also
   * checked against the restore cap (NodeError `invalid`) and the free disk
   * space less opts.reserveBytes (NodeError `diskFull`), before it is kept.
   *
   * The records are NOT decoded here, and the archive is not gunzipped:
   * - Why that is safe (the trust argument): the digest in `target` is the
   *   one the leader computed over the bytes it took from the client and
   *   checked completely before it asked anyone to stage them or proposed
   *   the restore (importUpload: every hash of the archive, every record,
   *   sizes against meta.json). It reaches this node only from a member over
   *   the authenticated peer plane (a StageArchive request, or a committed
   *   restore entry). This node hashes every byte it writes and keeps the
   *   archive only when that hash equals the digest, so it holds exactly the
   *   bytes the leader verified: a byte changed in transit, on the sender's
   *   disk or by a peer that serves a different archive is refused here.
   *   SHA-256's collision resistance is what carries the leader's check
   *   over to this copy.
   * - And a backstop if the leader's check itself were wrong: the install
   *   (installUpload) reads the archive whole again, checks every record (and
   *   meta.json's hash, every gzip member's size, the bytes against their recorded chunk
   *   hashes) before anything becomes live, and these bytes are the same
   *   on every node, so an archive that slipped through is refused the same
   *   way everywhere (a recorded no-op), never half installed, never divergent.
   * What stays per node: the size and free-disk check, which depend on this
   * node's own disk. opts.maxAttempts: stream (re)starts before giving up
   * (fetchSnapshot's default without it). Errors: NodeError `invalid` /
   * `diskFull`, SnapshotFetchError, ArchiveError (a bad head), the store's.
   */
  async fetchUpload(
    selfId: string,
    address: string,
    target: FetchTarget,
    opts: { readonly signal?: AbortSignal; readonly staging?: boolean; readonly reserveBytes?: number; readonly maxAttempts?: number } = {},
  ): Promise<StoredSnapshot> {
    this.archiveWork++;
    try {
      const signal = opts.signal;
      if (target.sizeBytes > this.policy.archiveBytesMax) {
        throw new NodeError('invalid', `archive of ${target.sizeBytes} bytes is larger than this node's limit of ${this.policy.archiveBytesMax}`);
      }
      // Written straight into the uploads store, each byte once, hashed as written.
      return this.uploads.receiveArchive(
        target,
        async (sink) => {
          await fetchSnapshot({
            selfId,
            address,
            target,
            sink,
            chunkBytes: this.policy.chunkBytes,
            ...(signal !== undefined ? { signal } : {}),
            clock: this.clock,
            ...(opts.maxAttempts !== undefined ? { maxAttempts: opts.maxAttempts } : {}),
            ...(this.dial !== undefined ? { dial: this.dial } : {}),
            ...(this.streams !== undefined ? { streams: this.streams } : {}),
          });
        },
        {
          maxBytes: this.policy.archiveBytesMax,
          // No second read: the sink's hash matched the digest the leader verified record by record (see above).
          check: async (_path, meta) => {
            if (opts.staging === true) await this.checkRestoreSize(meta, opts.reserveBytes ?? 0);
          },
        },
      );
    } finally {
      this.archiveWork--;
    }
  }

  /**
   * pruneUploads deletes the uploads no longer needed: every one is kept whose
   * digest is in `referenced` (named by a restore entry still in the log, or
   * a restore in progress), plus the UPLOADS_UNREFERENCED_KEPT most recently
   * stored others, plus any open (pinned) one. Returns the ids deleted.
   * Never throws: a failure is logged and the upload stays.
   */
  async pruneUploads(referenced: ReadonlySet<string>): Promise<string[]> {
    const removed: string[] = [];
    try {
      const unreferenced: { id: string; storedAtMs: number }[] = [];
      for (const u of await this.uploads.list()) {
        if (referenced.has(u.archiveSha256)) continue;
        const storedAtMs = await this.io.stat(u.path).then((st) => st.mtimeMs, () => 0);
        unreferenced.push({ id: u.id, storedAtMs });
      }
      unreferenced.sort((a, b) => b.storedAtMs - a.storedAtMs);
      for (const u of unreferenced.slice(UPLOADS_UNREFERENCED_KEPT)) {
        try {
          await this.uploads.remove(u.id);
          removed.push(u.id);
        } catch (err) {
          if (!(err instanceof SnapshotStoreError && (err.code === 'busy' || err.code === 'not-found'))) throw err;
        }
      }
      if (removed.length > 0) this.log.info({ removed }, 'uploads no restore entry names any more were deleted');
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'pruning uploads failed; they stay');
    }
    return removed;
  }

  /** setNewest keeps `s` open as the newest snapshot; an open handle passed in is kept (or released) rather than opened again. */
  private async setNewest(s: StoredSnapshot | SnapshotHandle): Promise<void> {
    const given = 'release' in s ? s : null;
    if (this.newest !== null && this.newest.meta.index >= s.meta.index) {
      given?.release();
      return;
    }
    // One this node just created is opened with what it wrote (SnapshotStore.openWritten: not read back from the disk).
    const h = given ?? (await this.store.openWritten(s));
    this.newest?.release();
    this.newest = h;
  }

  /** find pins the named snapshot; the newest one is served without re-hashing it. */
  private async find(index: number, digest: string): Promise<SnapshotHandle> {
    const n = this.newest;
    if (n !== null && n.meta.index === index && n.archiveSha256 === digest) {
      return { ...n, release: () => undefined };
    }
    for (const store of [this.store, this.uploads]) {
      for (const s of await store.list()) {
        if (s.meta.index === index && s.archiveSha256 === digest) {
          try {
            return await store.open(s.id);
          } catch (e) {
            throw coded(5, `snapshot ${index} is not readable here: ${(e as Error).message}`);
          }
        }
      }
    }
    const lost = this.lostNewest;
    if (lost !== null && lost.index === index && lost.digest === digest) {
      throw coded(5, `snapshot ${index} (digest ${digest.slice(0, 12)}…) was found damaged on this node and moved to quarantine; a new snapshot is built from the state and offered instead`);
    }
    throw coded(5, `no snapshot ${index} with digest ${digest.slice(0, 12)}… on this node`);
  }

  async close(): Promise<void> {
    this.scrubAbort.abort();
    await this.scrubbed;
    await this.periodic;
    this.newest?.release();
    this.newest = null;
  }
}

