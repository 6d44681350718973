/**
 * Cluster-wide consistency check (etcd's `hashkv` across members): every
 * member's state hash at one applied index, compared.
 *
 * - hashStateAt: one node's hash of its state, read at one consistent point
 *   (the storage's point-in-time view, on its apply queue), with the exact
 *   applied index that view holds.
 * - checkConsistency: asks every member for its hash at index T (each waits,
 *   bounded, until it has applied T); members that land on different indexes
 *   (writes kept coming) are asked again at the highest one, at most
 *   `attempts` times; then the hashes at the common index are compared and
 *   the members that differ from the majority are named.
 * - ConsistencyMonitor: runs checkConsistency every intervalMs on a node
 *   (--consistency-check-interval), counting runs and divergences in a metric
 *   and logging an error naming the members that differ.
 */
import type * as grpc from '@grpc/grpc-js';
import type { ClusterServiceClient, HashStateResponse } from '../gen/snapcoord/v1/cluster.js';
import { digestSnapshot } from '../storage/state-transfer.js';
import { SNAPSHOT_BATCH_ENTRIES_DEFAULT, type StateStore } from '../storage/types.js';
import { systemClock, type Clock } from '../node/clock.js';
import { ScrubPacer } from '../node/scrub-pace.js';
import type { Logger } from '../node/logger.js';
import { CHECK_ATTEMPTS_DEFAULT, CHECK_ATTEMPTS_MAX, CHECK_HASH_ALLOWANCE_MS, CHECK_WAIT_MS_DEFAULT, CHECK_WAIT_MS_MAX } from '../client/consistency-check-bounds.js';

/** StateHash: a state hash and the applied index it covers exactly. */
export interface StateHash {
  readonly sha256: string;
  readonly index: number;
}

/**
 * STATE_HASH_BATCH_BYTES_MAX: the most record bytes hashStateAt reads and hashes
 * in one turn of the event loop (with at most SNAPSHOT_BATCH_ENTRIES_DEFAULT
 * records; a larger record comes alone) before it yields.
 */
export const STATE_HASH_BATCH_BYTES_MAX = 256 * 1024;

/**
 * STATE_HASH_RECORD_COST_BYTES: what one record costs the pace of a state hash
 * besides its bytes (its read, checksum and copy cost as much as ~100 bytes of
 * hashing): a state of small records is hashed at fewer bytes a second.
 */
export const STATE_HASH_RECORD_COST_BYTES = 100;

/**
 * STATE_HASH_BYTES_PER_SEC_DEFAULT: the rate `serve` hashes its state at
 * (HashState, its part of CheckConsistency): record bytes (key, value, 8 bytes
 * of lengths, STATE_HASH_RECORD_COST_BYTES) a second, after a first
 * SCRUB_BURST_BYTES (ScrubPacer). 100k records of 100 bytes take ~1.5 s (~8 MiB/s
 * of records): a HashState loop beside 8 writers left them 0.61-0.70 of their
 * rate alone, against 0.18-0.26 unpaced; without the record cost (16 MiB/s of
 * records) 0.30-0.87 (bench/hash-state.ts, load ~5). 1M records of 1 KiB take
 * ~70 s. A member's HashState in a cluster check is given CHECK_HASH_ALLOWANCE_MS
 * (15 min) once at the index: ~12 GiB of such records (hash-state-pace.spec
 * checks that the two stay in step).
 */
export const STATE_HASH_BYTES_PER_SEC_DEFAULT = 16 * 1024 * 1024;

/** HashStateOptions: hashStateAt's pace. */
export interface HashStateOptions {
  /** clock: the node's clock: its defer() is the yield between batches, its sleeps the pace's (default systemClock). */
  readonly clock?: Clock;
  /** bytesPerSec: the record bytes (each record's plus STATE_HASH_RECORD_COST_BYTES) hashed a second (ScrubPacer; 0, the default: no limit, only the yields). */
  readonly bytesPerSec?: number;
  /** signal: aborts a paced hash where it is (rejects ScrubStoppedError), e.g. when the node stops. */
  readonly signal?: AbortSignal;
}

/**
 * hashStateAt hashes `storage`'s state as one point-in-time view (the same
 * digest as StateStore.stateDigest: the applied index then every record)
 * and answers the applied index that view holds. It hashes at most
 * STATE_HASH_BATCH_BYTES_MAX in one turn of the event loop and yields
 * (clock.defer) after each batch, at `bytesPerSec` when given (ScrubPacer,
 * each record counted with STATE_HASH_RECORD_COST_BYTES more):
 * before, a hash read and digested the whole state as fast as it could on the
 * node's one thread, and one HashState loop took ~75% of 8 writers' rate.
 * Errors: the storage's; ScrubStoppedError once `signal` aborts.
 */
export async function hashStateAt(storage: Pick<StateStore, 'snapshotState'>, options: HashStateOptions = {}): Promise<StateHash> {
  const clock = options.clock ?? systemClock;
  const pacer = new ScrubPacer(clock, options.bytesPerSec ?? 0, options.signal ?? new AbortController().signal, () => false);
  const turn = (): Promise<void> => new Promise<void>((resolve) => clock.defer(resolve));
  const reader = await storage.snapshotState();
  const index = reader.appliedIndex;
  const sha256 = await digestSnapshot(reader, {
    batchEntriesMax: SNAPSHOT_BATCH_ENTRIES_DEFAULT,
    batchBytesMax: STATE_HASH_BATCH_BYTES_MAX,
    afterBatch: async (bytes, records) => {
      await turn();
      await pacer.pace(bytes + records * STATE_HASH_RECORD_COST_BYTES);
    },
  });
  return { sha256, index };
}

/** MemberHasher: asks one member for its hash once it has applied `atIndex` (waiting at most waitMs). */
export interface MemberHasher {
  readonly id: string;
  hash(atIndex: number, waitMs: number): Promise<StateHash>;
}

/** MemberResult: one member's answer (sha256 '' and `error` set when it gave none). */
export interface MemberResult {
  readonly id: string;
  readonly sha256: string;
  readonly index: number;
  readonly error: string;
}

/** ConsistencyReport: the verdict of checkConsistency. */
export interface ConsistencyReport {
  /** consistent: every member answered at `index` with the same hash. */
  readonly consistent: boolean;
  /** divergent: members that answered at `index` gave different hashes (a member that did not answer is not divergent). */
  readonly divergent: boolean;
  /** index: the applied index compared at; 0 when no common index was reached (inconclusive). */
  readonly index: number;
  readonly members: readonly MemberResult[];
  /** differing: members whose hash differs from the majority's, or that could not be compared (inconclusive: those that failed or lag behind). */
  readonly differing: readonly string[];
  readonly attempts: number;
}

export interface CheckOptions {
  /** waitMs: how long each member may take to reach the index (default 5000). */
  readonly waitMs?: number;
  /** attempts: tries at a common index (default 5). */
  readonly attempts?: number;
}

/**
 * checkConsistency compares the members' state hashes at one applied index,
 * starting at `startIndex` (see the file comment). Never rejects: a member
 * that fails is reported with its error and counted among the differing.
 */
export async function checkConsistency(members: readonly MemberHasher[], startIndex: number, opts: CheckOptions = {}): Promise<ConsistencyReport> {
  const waitMs = Math.min(Math.max(0, opts.waitMs ?? CHECK_WAIT_MS_DEFAULT), CHECK_WAIT_MS_MAX);
  const attemptsMax = Math.min(Math.max(1, opts.attempts ?? CHECK_ATTEMPTS_DEFAULT), CHECK_ATTEMPTS_MAX);
  let target = startIndex;
  let results: MemberResult[] = [];
  let attempt = 0;
  while (attempt < attemptsMax) {
    attempt++;
    results = await Promise.all(
      members.map(async (m): Promise<MemberResult> => {
        try {
          const h = await m.hash(target, waitMs);
          return { id: m.id, sha256: h.sha256, index: h.index, error: '' };
        } catch (err) {
          return { id: m.id, sha256: '', index: 0, error: (err as { details?: string }).details ?? (err as Error).message };
        }
      }),
    );
    const answered = results.filter((r) => r.error === '');
    if (answered.length === 0) break;
    const indexes = new Set(answered.map((r) => r.index));
    if (indexes.size === 1) return verdict(results, answered[0]!.index, attempt);
    target = Math.max(...indexes);
  }
  // Inconclusive: name the members that failed or lag behind the others (they never reached the index).
  const highest = Math.max(0, ...results.filter((r) => r.error === '').map((r) => r.index));
  return { consistent: false, divergent: false, index: 0, members: results, differing: results.filter((r) => r.error !== '' || r.index < highest).map((r) => r.id), attempts: attempt };
}

/** verdict compares the hashes of the members that answered at `index`: the largest group is the majority (a tie names every member). */
function verdict(results: readonly MemberResult[], index: number, attempts: number): ConsistencyReport {
  const groups = new Map<string, string[]>();
  for (const r of results) {
    if (r.error !== '') continue;
    const g = groups.get(r.sha256) ?? [];
    g.push(r.id);
    groups.set(r.sha256, g);
  }
  const sizes = [...groups.values()].map((g) => g.length).sort((a, b) => b - a);
  const tie = sizes.length > 1 && sizes[0] === sizes[1];
  let majority: string | null = null;
  if (!tie) for (const [h, g] of groups) if (g.length === sizes[0]) majority = h;
  const differing = results.filter((r) => r.error !== '' || majority === null || r.sha256 !== majority).map((r) => r.id);
  const consistent = groups.size === 1 && results.every((r) => r.error === '');
  return { consistent, divergent: groups.size > 1, index, members: results, differing: consistent ? [] : differing, attempts };
}

/**
 * grpcMemberHasher asks member `id` at `address` (its client plane) with
 * HashState{at_index, wait_ms}; `metadata` carries the authorization. A
 * member that cannot tell the index its hash covers (an older version) is an
 * error: its hash cannot be compared.
 */
export function grpcMemberHasher(id: string, client: ClusterServiceClient, metadata: () => grpc.Metadata): MemberHasher {
  return {
    id,
    hash(atIndex: number, waitMs: number): Promise<StateHash> {
      return new Promise((resolve, reject) => {
        client.hashState({ atIndex: BigInt(atIndex), waitMs }, metadata(), { deadline: Date.now() + waitMs + CHECK_HASH_ALLOWANCE_MS }, (err: grpc.ServiceError | null, res: HashStateResponse) => {
          if (err !== null) return reject(err);
          if (res.hashedIndex === 0n) return reject(new Error(`${id} does not say which index its hash covers`));
          resolve({ sha256: res.sha256, index: Number(res.hashedIndex) });
        });
      });
    },
  };
}

/** MemberDirectory: the members and how to reach them. */
export interface MemberDirectory {
  /** members: every voter and learner of the current configuration. */
  members(): readonly string[];
  /** selfId: this node's id (hashed locally). */
  readonly selfId: string;
  /** clientAddressOf: member `id`'s client-plane address ('' when unknown). */
  clientAddressOf(id: string): string;
  /** startIndex: the index to start at (this node's commit index). */
  startIndex(): number;
}

/**
 * ClusterConnector opens a ClusterServiceClient to a member's client plane
 * at `address` (TLS credentials, and a key where the caller has one of its
 * own): the process wiring (or the API) passes it, so ops dial no channel
 * themselves.
 */
export type ClusterConnector = (address: string, id: string) => ClusterServiceClient;

/**
 * MemberClients keeps one ClusterServiceClient per member address (opened
 * with `connect`) and builds the hashers of a check: this node's own is
 * `local`, the others go over gRPC.
 */
export class MemberClients {
  private readonly clients = new Map<string, ClusterServiceClient>();

  constructor(
    private readonly dir: MemberDirectory,
    private readonly connect: ClusterConnector,
    private readonly local: MemberHasher['hash'],
  ) {}

  /** hashers: one per member; a member with no known client address fails with that error. */
  hashers(metadata: () => grpc.Metadata): MemberHasher[] {
    return this.dir.members().map((id): MemberHasher => {
      if (id === this.dir.selfId) return { id, hash: this.local };
      const address = this.dir.clientAddressOf(id);
      if (address === '') return { id, hash: () => Promise.reject(new Error(`the client address of ${id} is not known yet`)) };
      const key = `${id}@${address}`;
      let c = this.clients.get(key);
      if (c === undefined) {
        c = this.connect(address, id);
        this.clients.set(key, c);
      }
      return grpcMemberHasher(id, c, metadata);
    });
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}

/** ConsistencyMetrics: what the monitor counts (a prom-client Counter fits). */
export interface ConsistencyMetrics {
  inc(labels: { result: 'consistent' | 'divergent' | 'inconclusive' }): void;
}

/**
 * ConsistencyMonitor runs a check every intervalMs (the first one interval
 * after start), only on the leader (one check per cluster), counts each
 * result in `metrics` and logs an error naming the differing members on a
 * divergence. `lastReport` is the newest report.
 */
export class ConsistencyMonitor {
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  lastReport: ConsistencyReport | null = null;

  constructor(
    private readonly opts: {
      readonly intervalMs: number;
      readonly isLeader: () => boolean;
      readonly check: () => Promise<ConsistencyReport>;
      readonly metrics?: ConsistencyMetrics;
      readonly log: Logger;
    },
  ) {}

  start(): void {
    if (this.timer !== null) return;
    this.timer = setInterval(() => void this.runOnce(), this.opts.intervalMs);
    this.timer.unref();
  }

  /** runOnce runs one check when this node leads and no check is running; resolves with its report (null when skipped). */
  async runOnce(): Promise<ConsistencyReport | null> {
    if (this.running || !this.opts.isLeader()) return null;
    this.running = true;
    try {
      const r = await this.opts.check();
      this.lastReport = r;
      const result = r.consistent ? 'consistent' : r.divergent ? 'divergent' : 'inconclusive';
      this.opts.metrics?.inc({ result });
      if (result === 'divergent') {
        this.opts.log.error(
          { index: r.index, differing: r.differing, members: r.members.map((m) => ({ id: m.id, sha256: m.sha256, index: m.index, error: m.error })) },
          `consistency check: state diverges at index ${r.index}: ${r.differing.join(', ')} differ from the majority`,
        );
      } else if (result === 'inconclusive') {
        this.opts.log.warn({ attempts: r.attempts, index: r.index, unanswered: r.differing }, `consistency check: inconclusive: ${r.differing.join(', ')} did not answer at a common index`);
      } else {
        this.opts.log.debug({ index: r.index }, 'consistency check: every member holds the same state');
      }
      return r;
    } catch (err) {
      this.opts.log.warn({ err: (err as Error).message }, 'consistency check failed');
      return null;
    } finally {
      this.running = false;
    }
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }
}
