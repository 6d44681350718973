/**
 * SnapshotAgent wires the snapshot agent into one `snapcoord serve` node:
 * the scheduled snapshots (SnapshotSchedule + scheduledSnapshotRunner, with
 * the retention policy and the S3 destination) and the periodic consistency
 * check (ConsistencyMonitor over every member's HashState, through their
 * client planes with this node's own key), with their metrics:
 * snapcoord_consistency_checks_total{result} and
 * snapcoord_consistency_divergent_members (members differing at the last
 * conclusive check).
 */
import * as grpc from '@grpc/grpc-js';
import { Counter, Gauge, type Registry } from 'prom-client';

import type { Node } from '../node/node.js';
import type { Logger } from '../node/logger.js';
import type { TaskQueue, TaskRunner } from './task-queue.js';
import { CHECK_ATTEMPTS_DEFAULT, CHECK_WAIT_MS_DEFAULT } from '../client/consistency-check-bounds.js';
import { ConsistencyMonitor, MemberClients, checkConsistency, type ClusterConnector } from './consistency.js';
import { checkPolicy, hasRetention, type RetentionPolicy } from './retention.js';
import { SnapshotSchedule, isScheduledPath, scheduledSnapshotRunner } from './schedule.js';
import { S3Destination, type S3Settings } from './s3.js';

export interface SnapshotAgentOptions {
  readonly node: Node;
  readonly log: Logger;
  readonly dbName: string;
  readonly snapshotDir: string;
  /** snapshotPath: <snapshot-dir>/<db-name>.snapshot, the file of unscheduled snapshot tasks. */
  readonly snapshotPath: string;
  /** scheduleIntervalMs: 0 for no schedule. */
  readonly scheduleIntervalMs: number;
  readonly retention: RetentionPolicy;
  /** destination: s3://bucket/prefix, '' for none. */
  readonly destination: string;
  readonly s3: S3Settings;
  /** consistencyCheckIntervalMs: 0 for none. */
  readonly consistencyCheckIntervalMs: number;
  /** selfClientAddress: where this node's own client plane is reached. */
  readonly selfClientAddress: string;
  /** clientAddressOf: the other members' client-plane addresses ('' when unknown). */
  readonly clientAddressOf: (id: string) => string;
  /** connect: opens a ClusterService client to a member's client plane, with TLS credentials and this node's key. */
  readonly connect: ClusterConnector;
  readonly registry?: Registry;
  /** reserveBytes: the free space a scheduled copy leaves on the snapshot dir's file system (serve: --min-free-bytes; default 0). */
  readonly reserveBytes?: number;
}

/** SnapshotAgent: see the file comment. */
export class SnapshotAgent {
  private schedule: SnapshotSchedule | null = null;
  private monitor: ConsistencyMonitor | null = null;
  private members: MemberClients | null = null;
  /** timestamped: scheduled runs write a new archive each (a retention policy or a destination is set). */
  readonly timestamped: boolean;

  private constructor(
    private readonly o: SnapshotAgentOptions,
    readonly destination: S3Destination | null,
  ) {
    this.timestamped = hasRetention(o.retention) || destination !== null;
  }

  /** create checks the policy and opens the destination. Errors: RangeError, S3Error (bad URL, unreadable credentials file). */
  static async create(o: SnapshotAgentOptions): Promise<SnapshotAgent> {
    checkPolicy(o.retention);
    const destination = o.destination !== '' ? await S3Destination.open(o.destination, o.s3) : null;
    return new SnapshotAgent(o, destination);
  }

  /** runner: the snapshotCreation runner: scheduled archives go through the agent's runner, every other task through `plain`. */
  runner(plain: TaskRunner): TaskRunner {
    const scheduled = scheduledSnapshotRunner({
      snapshot: () => this.o.node.downloadSnapshot(true, { toDisk: true }), // written into the snapshot dir: not below the disk's reserve
      damaged: (id) => this.o.node.quarantineDamagedSnapshot(id),
      dbName: this.o.dbName,
      snapshotDir: this.o.snapshotDir,
      retention: this.o.retention,
      // With a destination and no policy the bucket keeps every run (its lifecycle rules decide) and the
      // directory only the newest: a schedule never fills the local disk.
      ...(this.destination !== null && !hasRetention(this.o.retention) ? { localRetention: { keepLast: 1, keepDays: 0, keepWeeks: 0 } } : {}),
      destination: this.destination,
      log: this.o.log,
      reserveBytes: this.o.reserveBytes ?? 0,
    });
    return (task, progress) => (isScheduledPath(task.details.path, this.o.snapshotDir, this.o.dbName) ? scheduled(task, progress) : plain(task, progress));
  }

  /** start starts the schedule (leader only) and the consistency monitor, when configured. */
  start(tasks: TaskQueue): void {
    const o = this.o;
    if (o.scheduleIntervalMs > 0) {
      const mine = (path: string | undefined): boolean => (this.timestamped ? isScheduledPath(path, o.snapshotDir, o.dbName) : path === o.snapshotPath);
      this.schedule = new SnapshotSchedule({
        node: o.node,
        intervalMs: o.scheduleIntervalMs,
        dbName: o.dbName,
        snapshotDir: o.snapshotDir,
        ...(this.timestamped ? {} : { fixedPath: o.snapshotPath }),
        enqueue: (path) => tasks.enqueue('snapshotCreation', { path }),
        busy: () => tasks.list({ statuses: ['enqueued', 'processing'], types: ['snapshotCreation'] }, 1000).results.some((t) => mine(t.details.path)),
        log: o.log,
      });
      this.schedule.start();
    }
    if (o.consistencyCheckIntervalMs > 0) {
      const checks = new Counter({
        name: 'snapcoord_consistency_checks_total',
        help: 'Cluster consistency checks run by this node (as leader), by result: consistent, divergent, inconclusive.',
        labelNames: ['result'],
        registers: o.registry !== undefined ? [o.registry] : [],
      });
      const divergent = new Gauge({
        name: 'snapcoord_consistency_divergent_members',
        help: 'Members whose state hash differed from the majority at the last conclusive consistency check (0: all equal).',
        registers: o.registry !== undefined ? [o.registry] : [],
      });
      // Every member, this one included, through its client plane: the same HashState path as `cluster check`.
      this.members = new MemberClients(
        {
          selfId: '',
          members: () => {
            const m = o.node.status().membership;
            return [...m.voters, ...m.learners];
          },
          clientAddressOf: (id) => (id === o.node.id ? o.selfClientAddress : o.clientAddressOf(id)),
          startIndex: () => o.node.status().commit,
        },
        o.connect,
        () => Promise.reject(new Error('unused')),
      );
      const members = this.members;
      this.monitor = new ConsistencyMonitor({
        intervalMs: o.consistencyCheckIntervalMs,
        isLeader: () => o.node.status().role === 'leader',
        check: async () => {
          const r = await checkConsistency(
            members.hashers(() => new grpc.Metadata()),
            o.node.status().commit,
            { waitMs: CHECK_WAIT_MS_DEFAULT, attempts: CHECK_ATTEMPTS_DEFAULT },
          );
          if (r.consistent || r.divergent) divergent.set(r.consistent ? 0 : r.differing.length);
          return r;
        },
        metrics: checks,
        log: o.log,
      });
      this.monitor.start();
    }
  }

  stop(): void {
    this.schedule?.stop();
    this.monitor?.stop();
    this.members?.close();
    this.destination?.close();
  }
}
