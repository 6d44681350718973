/**
 * RestoreArchives: the archives of cluster restores on one node, a room of
 * the node's beside its Ready loop.
 *
 * - The leader stores an upload (every hash checked: `store`) and has a
 *   quorum of voters hold a durable copy (`stageOnQuorum`) before it proposes
 *   the restore entry (`whileProposing` keeps the upload from pruning).
 * - A follower fetches an archive for the leader's StageArchive (`stage`):
 *   one fetch per archive, at most STAGINGS_MAX at once.
 * - Applying a restore entry, a node finds the archive it names among its
 *   uploads or fetches it from a holder (`find`).
 * - Uploads no restore needs are pruned (`prune`): never one the log names
 *   (`refs`), one being staged or proposed, or one staged recently.
 */
import type { Readable } from 'node:stream';

import type { NodeId } from '../raft/index.js';
import { RestoreRefs, type RestoreCommand } from '../fsm/restore-command.js';
import type { StoredSnapshot } from '../snapshot/store.js';
import type { StageArchiveParams } from '../transport/transport.js';
import type { Clock } from './clock.js';
import { isNoSpace, type DiskGuard } from './disk-guard.js';
import { NodeError } from './errors.js';
import type { Logger } from './logger.js';
import type { SnapshotManager, UploadedArchive } from './snapshots.js';

/** STAGINGS_MAX: distinct archives a follower stages at once (StageArchive); more are refused RESOURCE_EXHAUSTED. */
const STAGINGS_MAX = 2;
/**
 * STAGED_KEPT_MAX: staged archives a follower protects from pruning until a
 * restore entry names them (the newest; older ones are then left to the
 * uploads' own retention).
 */
const STAGED_KEPT_MAX = 16;
/** FETCH_ATTEMPTS_PER_HOLDER: stream (re)starts when fetching a restore's archive from one holder before trying the next. */
const FETCH_ATTEMPTS_PER_HOLDER = 3;
/** UPLOAD_PIN_MS: how long a stored upload is pinned (kept from pruning) for the restore that proposes it. */
const UPLOAD_PIN_MS = 10 * 60_000;
/**
 * RESTORE_UPLOADS_MAX: restore uploads this leader receives at once; more are
 * refused `busy` before their bodies are read. Each upload's declared size is
 * checked against the free space as it is then, so uploads received side by
 * side could otherwise together fill the disk past its reserve.
 */
export const RESTORE_UPLOADS_MAX = 2;

/** RestoreArchivesHost: what RestoreArchives needs of its node. */
export interface RestoreArchivesHost {
  readonly id: NodeId;
  readonly snapshots: SnapshotManager;
  readonly clock: Clock;
  readonly log: Logger;
  readonly disk: DiskGuard | undefined;
  /** restoreStageTimeoutMs bounds stageOnQuorum; with proposalTimeoutMs, how long a staged archive is kept for its entry. */
  readonly timings: { readonly restoreStageTimeoutMs: number; readonly proposalTimeoutMs: number };
  /** stageArchive: the transport's StageArchive call (undefined: it cannot stage, so no quorum can hold an archive). */
  readonly stageArchive: ((p: StageArchiveParams, timeoutMs: number, signal: AbortSignal) => Promise<void>) | undefined;
  /** stopSignal aborts when the node stops: fetches not tracked elsewhere end with it. */
  readonly stopSignal: AbortSignal;
  stopped(): boolean;
  checkRunning(): void;
  dialAddressOf(id: NodeId): string;
  /** holdersFirstLeader: the other members to fetch an archive from, the leader first. */
  holdersFirstLeader(): NodeId[];
}

interface Staging {
  readonly done: Promise<void>;
  readonly abort: AbortController;
  waiters: number;
}

export class RestoreArchives {
  /** refs: the archives named by restore entries in this node's log (never pruned from the uploads). */
  readonly refs = new RestoreRefs();
  /** inFlight: archives of restores this leader is staging or proposing (digest -> count). */
  private readonly inFlight = new Map<string, number>();
  /** stagings: archives this follower is fetching for StageArchive, by digest (one fetch per archive). */
  private readonly stagings = new Map<string, Staging>();
  /**
   * staged: archives this follower staged, by digest, with when (clock.nowMs).
   * Pruning keeps them for restoreStageTimeoutMs + proposalTimeoutMs, the time
   * the leader may take to stage on a quorum and propose; after that the
   * restore entry in the log protects them (refs). Several restores staged at
   * once could otherwise push each other out before their entries arrive,
   * and the quorum's copies would be gone. At most STAGED_KEPT_MAX.
   */
  private readonly staged = new Map<string, number>();
  /** uploading: restore uploads being received now (store), at most RESTORE_UPLOADS_MAX. */
  private uploading = 0;
  /** pruneRun: the uploads prune running now; pruneAgain: another was asked for meanwhile. */
  private pruneRun: Promise<void> | null = null;
  private pruneAgain = false;

  constructor(private readonly host: RestoreArchivesHost) {}

  /**
   * stage (StageArchive, on a follower): fetch the archive `p` names from
   * the leader that asks (p.from), verify it whole and keep it durably, so
   * that a quorum holds a copy before the restore entry is proposed. One
   * fetch per archive, whoever asks; resolves at once for an archive already
   * held. Errors carry a gRPC code: RESOURCE_EXHAUSTED (below the disk's
   * reserve, or too many stagings), INVALID_ARGUMENT (the archive is
   * refused), UNAVAILABLE (the node is stopping, the fetch failed), CANCELLED
   * (`signal` aborted: the caller gave up; the fetch stops once no caller
   * waits for it).
   */
  async stage(p: StageArchiveParams, signal?: AbortSignal): Promise<void> {
    const { snapshots: sm, disk } = this.host;
    const digest = p.archive.digest;
    this.host.checkRunning();
    let st = this.stagings.get(digest);
    if (st === undefined) {
      if ((await sm.findUpload(digest)) !== null) {
        this.noteStaged(digest);
        return;
      }
      st = this.stagings.get(digest); // another request started it meanwhile
    }
    if (st === undefined) {
      if (this.stagings.size >= STAGINGS_MAX) throw coded(8, `already staging ${this.stagings.size} archives; retry later`);
      disk?.check();
      const address = this.host.dialAddressOf(p.from);
      if (address === '') throw coded(14, `no address for ${p.from}`);
      const abort = new AbortController();
      const done = sm
        .fetchUpload(this.host.id, address, p.archive, { signal: abort.signal, staging: true, reserveBytes: disk?.minFreeBytes ?? 0 })
        .then((stored) => {
          this.noteStaged(digest);
          this.host.log.info({ digest, index: stored.meta.index, bytes: stored.archiveBytes, from: p.from }, 'restore archive staged');
        })
        .finally(() => this.stagings.delete(digest));
      st = { done, abort, waiters: 0 };
      this.stagings.set(digest, st);
    }
    await this.waitForStaging(digest, st, signal);
  }

  /**
   * waitForStaging waits for a staging fetch as one of its callers; when
   * `signal` aborts it rejects with CANCELLED, and the last caller to leave
   * before the fetch is done aborts it (nobody would propose its restore).
   */
  private async waitForStaging(digest: string, st: Staging, signal?: AbortSignal): Promise<void> {
    st.waiters++;
    let onAbort: (() => void) | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        onAbort = () => reject(coded(1, 'the caller cancelled the staging'));
        if (signal?.aborted === true) onAbort();
        else signal?.addEventListener('abort', onAbort, { once: true });
        st.done.then(resolve, reject);
      });
    } finally {
      if (onAbort !== undefined) signal?.removeEventListener('abort', onAbort);
      if (--st.waiters === 0 && signal?.aborted === true && this.stagings.get(digest) === st) {
        this.host.log.info({ digest }, 'staging cancelled by its callers; the fetch stops');
        st.abort.abort();
      }
    }
  }

  /** noteStaged records that this node holds a staged archive now (see `staged`); the oldest record goes past STAGED_KEPT_MAX. */
  private noteStaged(digest: string): void {
    this.staged.delete(digest);
    this.staged.set(digest, this.host.clock.nowMs());
    for (const oldest of this.staged.keys()) {
      if (this.staged.size <= STAGED_KEPT_MAX) break;
      this.staged.delete(oldest);
    }
  }

  /**
   * store (the leader, a restore's upload): the archive from `source`, every
   * hash checked, stored among the uploads (with its records digest). Refused below the disk's reserve
   * (`diskFull`) or beyond RESTORE_UPLOADS_MAX at once (`busy`), the source
   * destroyed unread; when it runs out of space
   * (`diskFull`) or is refused (`invalid`); nothing changes then.
   */
  async store(source: Readable): Promise<UploadedArchive> {
    const { disk } = this.host;
    try {
      disk?.check();
      if (this.uploading >= RESTORE_UPLOADS_MAX) {
        throw new NodeError('busy', `${this.uploading} restore uploads are being received here already (at most ${RESTORE_UPLOADS_MAX} at once); retry when one is done`);
      }
    } catch (err) {
      source.destroy();
      throw err;
    }
    this.uploading++;
    try {
      return await this.host.snapshots.importUpload(source, UPLOAD_PIN_MS, disk?.minFreeBytes ?? 0);
    } catch (err) {
      if (isNoSpace(err)) {
        disk?.noteError(err);
        throw new NodeError('diskFull', `the archive could not be stored, nothing changed: ${(err as Error).message}`);
      }
      throw new NodeError('invalid', `the archive was refused, nothing changed: ${(err as Error).message}`);
    } finally {
      this.uploading--;
    }
  }

  /**
   * whileProposing runs `propose` (staging `stored` and proposing its restore)
   * with the upload kept from pruning, then prunes what no restore needs.
   */
  async whileProposing<T>(stored: StoredSnapshot, propose: () => Promise<T>): Promise<T> {
    const digest = stored.archiveSha256;
    this.inFlight.set(digest, (this.inFlight.get(digest) ?? 0) + 1);
    try {
      return await propose();
    } finally {
      const n = (this.inFlight.get(digest) ?? 1) - 1;
      if (n > 0) this.inFlight.set(digest, n);
      else this.inFlight.delete(digest);
      await this.prune();
    }
  }

  /**
   * stageOnQuorum asks every other voter to hold a durable, verified copy of
   * `stored` (StageArchive, each fetching it from this node) and resolves
   * once a quorum of voters, this node included, holds one; the others go on
   * in the background. Rejects with NodeError `unavailable` (nothing is
   * proposed) as soon as a quorum can no longer be reached, or after
   * restoreStageTimeoutMs.
   */
  async stageOnQuorum(stored: StoredSnapshot, voters: readonly NodeId[], term: number): Promise<void> {
    const { id, clock, log } = this.host;
    const need = Math.floor(voters.length / 2) + 1;
    const holders = voters.includes(id) ? [id] : [];
    const others = voters.filter((v) => v !== id);
    if (holders.length >= need) return;
    const timeoutMs = this.host.timings.restoreStageTimeoutMs;
    const abort = new AbortController();
    const failures: string[] = [];
    const t0 = clock.nowMs();
    await new Promise<void>((resolve, reject) => {
      let settled = false;
      let pending = others.length;
      const refuse = (why: string): void => {
        if (settled) return;
        settled = true;
        clock.clearTimeout(timer);
        abort.abort();
        reject(
          new NodeError(
            'unavailable',
            `the restore was not proposed, nothing changed: ${why}; ${holders.length} of ${voters.length} voters hold a durable copy of the archive, ` +
              `a quorum is ${need}${failures.length > 0 ? ` (${failures.join('; ')})` : ''}`,
          ),
        );
      };
      const timer = clock.setTimeout(() => refuse(`no quorum held the archive within ${timeoutMs} ms`), timeoutMs);
      const check = (): void => {
        if (settled) return;
        if (holders.length >= need) {
          settled = true;
          clock.clearTimeout(timer);
          resolve();
        } else if (holders.length + pending < need) {
          refuse('too many voters could not store the archive');
        }
      };
      for (const to of others) {
        const p: StageArchiveParams = {
          from: id,
          to,
          term,
          archive: { index: stored.meta.index, term: stored.meta.term, sizeBytes: stored.archiveBytes, digest: stored.archiveSha256 },
        };
        const call =
          this.host.stageArchive === undefined
            ? Promise.reject(new Error('this node\'s transport cannot stage archives'))
            : this.host.stageArchive(p, timeoutMs, abort.signal);
        call.then(
          () => {
            pending--;
            holders.push(to);
            check();
          },
          (err: unknown) => {
            pending--;
            failures.push(`${to}: ${(err as { details?: string }).details ?? (err as Error).message}`);
            check();
          },
        );
      }
      check();
    });
    log.info({ digest: stored.archiveSha256, holders, failures, ms: clock.nowMs() - t0 }, 'restore archive held by a quorum; proposing the restore');
  }

  /**
   * find (applying restore entry `index`): the archive `cmd` names, among
   * this node's uploads (after a staging of it still under way ends: its
   * source may be gone) or fetched from a holder (fetch). Null when no
   * member gave it.
   */
  async find(cmd: RestoreCommand, index: number): Promise<StoredSnapshot | null> {
    await this.stagings.get(cmd.digest)?.done.catch(() => undefined);
    return (await this.host.snapshots.findUpload(cmd.digest)) ?? (await this.fetch(cmd, index));
  }

  /**
   * fetch fetches the archive a restore entry names from any holder (a
   * quorum staged it before the entry was proposed): the leader first, then
   * every member, a few tries each so that a dead one (the uploader) costs
   * little. Resolves null when no member gave it: a member that applied the
   * entry may have compacted its log past it and dropped the upload, so the
   * node then takes a snapshot at or after the entry instead. With no member
   * to ask (one member alone), or below the disk's reserve, it retries with a
   * backoff (to 5 s). Rejects only when the node stops.
   */
  private async fetch(cmd: RestoreCommand, index: number): Promise<StoredSnapshot | null> {
    const { snapshots: sm, disk, log } = this.host;
    for (let attempt = 0; ; attempt++) {
      if (this.host.stopped()) throw new NodeError('shuttingDown', 'the node is shutting down');
      const holders = this.host.holdersFirstLeader();
      let asked = 0;
      for (const id of holders) {
        try {
          // Not below the disk's reserve (a full disk is retried with the backoff below, never crashed on).
          disk?.check();
          asked++;
          const stored = await sm.fetchUpload(this.host.id, this.host.dialAddressOf(id), cmd, { maxAttempts: FETCH_ATTEMPTS_PER_HOLDER, signal: this.host.stopSignal });
          log.info({ index, from: id, digest: cmd.digest }, 'restore: fetched the archive');
          return stored;
        } catch (err) {
          disk?.noteError(err);
          log.warn({ index, from: id, err: (err as Error).message }, 'restore: fetching the archive failed');
          if (this.host.stopped()) throw new NodeError('shuttingDown', 'the node is shutting down');
        }
      }
      if (holders.length > 0 && asked === holders.length) return null;
      await this.host.clock.sleep(Math.min(5_000, 100 * 2 ** Math.min(attempt, 6)));
    }
  }

  /**
   * prune deletes the uploads no restore entry of the log (nor a restore or
   * staging in progress) names, beyond the most recent few
   * (SnapshotManager.pruneUploads). One runs at a time; a call during a run
   * makes it run once more and resolves after that. Never rejects.
   */
  prune(): Promise<void> {
    if (this.host.stopped()) return Promise.resolve();
    if (this.pruneRun !== null) {
      this.pruneAgain = true;
      return this.pruneRun;
    }
    const run = (async () => {
      do {
        this.pruneAgain = false;
        const keep = this.refs.digests();
        const { restoreStageTimeoutMs, proposalTimeoutMs } = this.host.timings;
        const stagedSince = this.host.clock.nowMs() - (restoreStageTimeoutMs + proposalTimeoutMs);
        for (const [d, atMs] of [...this.staged]) {
          if (atMs < stagedSince || keep.has(d)) this.staged.delete(d); // proposed (the log names it), or never will be
          else keep.add(d);
        }
        for (const d of this.inFlight.keys()) keep.add(d);
        for (const d of this.stagings.keys()) keep.add(d);
        await this.host.snapshots.pruneUploads(keep);
      } while (this.pruneAgain && !this.host.stopped());
    })().finally(() => {
      this.pruneRun = null;
    });
    this.pruneRun = run;
    return run;
  }

  /** stop aborts the stagings under way (the node stops). */
  stop(): void {
    for (const st of this.stagings.values()) st.abort.abort();
  }
}

/** coded: an Error carrying a numeric gRPC status (what the peer plane answers with). */
export function coded(code: number, message: string): Error {
  return Object.assign(new Error(message), { code });
}
