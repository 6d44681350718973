import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

import type { RocksMemory } from '../storage/rocks.js';
import type { NodeStatus } from './node-status.js';

const ROLE_VALUES = { follower: 0, preCandidate: 1, candidate: 2, leader: 3 } as const;

/** PeerCrlGauges: what /metrics shows of the peer CRL, or of the client CRL (src/tls PeerCrl). */
export interface PeerCrlGauges {
  readonly revoked: number;
  /** nextUpdateMs: null when the CRL names none. */
  readonly nextUpdateMs: number | null;
  /** fileRefused: the file on disk could not be used at the last look; the last good CRL is in use. */
  readonly fileRefused: boolean;
}

/** PeerTrustGauges: what /metrics shows of what this node's voters told it (src/node/removal-news.ts RemovalNewsStats). */
export interface PeerTrustGauges {
  /** reportedRemoved: members a voter reported removed (committed, newer than this node's configuration), refused until it catches up. */
  readonly reportedRemoved: number;
  /** leadershipHeld: a voter holds committed another entry at this node's commit index: this node campaigns for nothing. */
  readonly leadershipHeld: boolean;
}

/**
 * NodeMetrics: a node's Prometheus metrics in a registry of its own (several
 * nodes may share a process in tests). Gauges read the node's status when
 * scraped; counters and histograms are fed by the node as things happen.
 */
export class NodeMetrics {
  readonly registry = new Registry();
  readonly proposals: Counter<'result'>;
  readonly persistSeconds: Histogram;
  readonly snapshotBytesSent: Counter;
  readonly snapshotBytesReceived: Counter;
  readonly chunkHashFailures: Counter;
  readonly snapshotInstallSeconds: Histogram;
  readonly snapshotsCreated: Counter;
  /** restoresFailed: restore entries skipped (applied as no-ops) because their archive failed to apply. */
  readonly restoresFailed: Counter;
  readonly peerRefusals: Counter<'reason'>;
  /** clientRevokedRefusals: client-plane calls refused for a certificate --client-crl revokes. */
  readonly clientRevokedRefusals: Counter;
  /** clientRevokedClosed: client-plane connections closed at a --client-crl reload that revoked their certificate. */
  readonly clientRevokedClosed: Counter;
  /** scrubRuns / scrubBytes / scrubDamaged: the snapshot scrub's runs (by kind: boot, periodic, asked), the archive bytes they re-hashed, the archives they found damaged (quarantined). */
  readonly scrubRuns: Counter<'kind'>;
  readonly scrubBytes: Counter;
  readonly scrubDamaged: Counter;

  /** taskQueueDepth: set once the node's task queue exists. */
  taskQueueDepth: () => number = () => 0;

  /** peerCrl: the peer CRL in use (serve --peer-crl) and whether the file on disk is refused; null: no --peer-crl. */
  peerCrl: () => PeerCrlGauges | null = () => null;

  /** clientCrl: the client CRL in use (serve --client-crl), as peerCrl; null: no --client-crl. */
  clientCrl: () => PeerCrlGauges | null = () => null;

  /** peerTrust: what the voters told this node (Node.removalNewsStats); null: the transport cannot ask. */
  peerTrust: () => PeerTrustGauges | null = () => null;

  /** rocksMemory: RocksDB's own native memory by database (RocksStorage.memory), once the node has a RocksDB storage; null: none. */
  rocksMemory: () => { readonly log: RocksMemory; readonly state: RocksMemory } | null = () => null;

  constructor(status: () => NodeStatus, withProcessMetrics = true) {
    const depth = (): number => this.taskQueueDepth();
    const r = this.registry;
    const gauge = (name: string, help: string, read: (st: NodeStatus) => number): void => {
      new Gauge({
        name,
        help,
        registers: [r],
        collect() {
          this.set(read(status()));
        },
      });
    };
    gauge('snapcoord_raft_term', 'Current Raft term.', (st) => st.term);
    gauge('snapcoord_raft_role', 'Raft role: 0 follower, 1 pre-candidate, 2 candidate, 3 leader.', (st) => ROLE_VALUES[st.role]);
    gauge('snapcoord_raft_commit_index', 'Highest log index known to be committed.', (st) => st.commit);
    gauge('snapcoord_raft_applied_index', 'Highest log index applied to the state machine.', (st) => st.applied);
    gauge('snapcoord_raft_last_index', 'Last index in the log.', (st) => st.lastIndex);
    gauge('snapcoord_raft_first_index', 'First index still in the log (after compaction).', (st) => st.firstIndex);
    gauge('snapcoord_raft_snapshot_index', 'Index of the newest local snapshot.', (st) => st.snapshotIndex);
    gauge('snapcoord_raft_has_leader', '1 when a leader is known.', (st) => (st.leader === '' ? 0 : 1));
    gauge(
      'snapcoord_snapshot_stranded_followers',
      'Followers that need a snapshot this leader cannot offer: its own was lost (found damaged) and not rebuilt yet. Once rebuilding it fails, leadership goes to a voter that holds one; while this stays above 0, none does.',
      (st) => st.snapshotStranded.length,
    );
    gauge('snapcoord_disk_full', '1 while the data dir is below its free-space reserve (--min-free-bytes) and writes are refused.', (st) => (st.diskFull ? 1 : 0));
    new Gauge({
      name: 'snapcoord_task_queue_depth',
      help: 'Tasks enqueued or processing.',
      registers: [r],
      collect() {
        this.set(depth());
      },
    });
    const crlGauge = (crl: () => PeerCrlGauges | null, name: string, help: string, read: (c: PeerCrlGauges) => number): void => {
      new Gauge({
        name,
        help,
        registers: [r],
        collect() {
          const c = crl();
          if (c !== null) this.set(read(c));
        },
      });
    };
    // The same three for each plane's CRL (--peer-crl, --client-crl).
    for (const [plane, flag, crl] of [['peer', '--peer-crl', () => this.peerCrl()], ['client', '--client-crl', () => this.clientCrl()]] as const) {
      crlGauge(crl, `snapcoord_${plane}_crl_revoked_certificates`, `Certificates the ${plane} CRL in use (${flag}) revokes (0 without one).`, (c) => c.revoked);
      crlGauge(crl, `snapcoord_${plane}_crl_next_update_timestamp_seconds`, `The nextUpdate of the ${plane} CRL in use, in Unix seconds (0: it names none); past it the CRL is still used, and logged as expired.`, (c) => (c.nextUpdateMs ?? 0) / 1000);
      crlGauge(
        crl,
        `snapcoord_${plane}_crl_file_refused`,
        `1 while the ${flag} file (or its CA) on disk cannot be used (not a CRL, not the CA's, dated ahead, too large, missing): the last good CRL stays in use; 0 when the file on disk is the one in use.`,
        (c) => (c.fileRefused ? 1 : 0),
      );
    }
    const trustGauge = (name: string, help: string, read: (t: PeerTrustGauges) => number): void => {
      new Gauge({
        name,
        help,
        registers: [r],
        collect() {
          const t = peerTrust();
          if (t !== null) this.set(read(t));
        },
      });
    };
    const peerTrust = (): PeerTrustGauges | null => this.peerTrust();
    trustGauge('snapcoord_peer_reported_removed_members', 'Members this node\'s configuration still names that voters of it reported removed (committed configurations newer than this node\'s leave them out: two voters, or one no voter denies): their Raft messages are refused until this node catches up.', (t) => t.reportedRemoved);
    trustGauge('snapcoord_leadership_held', '1 while this node holds back from leading: a voter holds committed another entry at this node\'s commit index (its log took entries the cluster did not commit: a removed member\'s forgery). Replace its data dir.', (t) => (t.leadershipHeld ? 1 : 0));
    const rocks = (): { readonly log: RocksMemory; readonly state: RocksMemory } | null => this.rocksMemory();
    new Gauge({
      name: 'snapcoord_rocksdb_memory_bytes',
      help: 'Native memory RocksDB holds, by database (log; state: the open state generations) and kind (memtables, table_readers: index and filter blocks, block_cache).',
      labelNames: ['db', 'kind'],
      registers: [r],
      collect() {
        const m = rocks();
        if (m === null) return;
        for (const db of ['log', 'state'] as const) {
          this.set({ db, kind: 'memtables' }, m[db].memtablesBytes);
          this.set({ db, kind: 'table_readers' }, m[db].tableReadersBytes);
          this.set({ db, kind: 'block_cache' }, m[db].blockCacheBytes);
        }
      },
    });
    this.proposals = new Counter({ name: 'snapcoord_proposals_total', help: 'Writes proposed here, by result.', labelNames: ['result'], registers: [r] });
    this.persistSeconds = new Histogram({
      name: 'snapcoord_log_append_seconds',
      help: 'Time to persist one Ready (entries and hard state, one synced write).',
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [r],
    });
    this.snapshotBytesSent = new Counter({ name: 'snapcoord_snapshot_sent_bytes_total', help: 'Snapshot bytes served to peers.', registers: [r] });
    this.snapshotBytesReceived = new Counter({ name: 'snapcoord_snapshot_received_bytes_total', help: 'Snapshot bytes fetched from peers.', registers: [r] });
    this.chunkHashFailures = new Counter({ name: 'snapcoord_snapshot_chunk_hash_failures_total', help: 'Snapshot chunks whose SHA-256 did not match (discarded and fetched again).', registers: [r] });
    this.snapshotInstallSeconds = new Histogram({
      name: 'snapcoord_snapshot_install_seconds',
      help: 'Time to install a fetched snapshot into the state machine.',
      buckets: [0.01, 0.1, 0.5, 1, 5, 15, 60, 300],
      registers: [r],
    });
    this.snapshotsCreated = new Counter({ name: 'snapcoord_snapshots_created_total', help: 'Snapshots taken of the local state machine.', registers: [r] });
    this.peerRefusals = new Counter({
      name: 'snapcoord_peer_messages_refused_total',
      help: 'Peer-plane messages refused, by reason: cluster_id (wrong or missing cluster id), identity (certificate does not name the sender), revoked (certificate revoked by --peer-crl), not_member, unvouched (a sender outside the configuration no voter of it has vouched for yet), removed (a member a voter of the configuration holds removed, committed: its calls other than Raft messages).',
      labelNames: ['reason'],
      registers: [r],
    });
    this.clientRevokedRefusals = new Counter({ name: 'snapcoord_client_calls_refused_revoked_total', help: 'Client-plane calls refused UNAUTHENTICATED because --client-crl revokes their client certificate.', registers: [r] });
    this.clientRevokedClosed = new Counter({ name: 'snapcoord_client_connections_closed_revoked_total', help: 'Client-plane connections closed when a --client-crl reload revoked their client certificate.', registers: [r] });
    this.restoresFailed = new Counter({
      name: 'snapcoord_restore_apply_failures_total',
      help: 'Restore entries skipped because their archive failed to apply (the state was left unchanged, the same on every node).',
      registers: [r],
    });
    this.scrubRuns = new Counter({ name: 'snapcoord_snapshot_scrub_runs_total', help: 'Snapshot scrub runs ended (every stored archive re-hashed and compared with its recorded hashes), by kind: boot, periodic (--snapshot-scrub-interval), asked.', labelNames: ['kind'], registers: [r] });
    this.scrubBytes = new Counter({ name: 'snapcoord_snapshot_scrub_bytes_total', help: 'Archive bytes the snapshot scrub re-hashed.', registers: [r] });
    this.scrubDamaged = new Counter({ name: 'snapcoord_snapshot_scrub_damaged_total', help: 'Stored archives the snapshot scrub found not matching their recorded hashes (moved to quarantine; a lost newest snapshot is rebuilt).', registers: [r] });
    if (withProcessMetrics) collectDefaultMetrics({ register: r });
  }

  /** noteScrub counts a snapshot scrub run that ended. */
  noteScrub(run: { readonly kind: string; readonly bytes: number; readonly damaged: readonly unknown[] }): void {
    this.scrubRuns.inc({ kind: run.kind });
    this.scrubBytes.inc(run.bytes);
    this.scrubDamaged.inc(run.damaged.length);
  }

  /** text renders the registry in the Prometheus text format. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
