import assert from 'node:assert/strict';

import {
  RaftNode,
  defaultRaftConfig,
  type Entry,
  type HardState,
  type Membership,
  type Message,
  type NodeId,
  type RaftConfig,
  type ReadFailure,
  type ReadState,
  type SnapshotMeta,
} from '../../../src/raft/index.js';
import { SeededRng } from '../../harness/rng.js';

export function membership(voters: NodeId[], learners: NodeId[] = []): Membership {
  return { voters, learners, addresses: {} };
}

export function initialSnapshot(m: Membership): SnapshotMeta {
  return { index: 0, term: 0, membership: m, sizeBytes: 0, digest: '' };
}

/** Persisted is what one test node durably holds. */
interface Persisted {
  hardState: HardState;
  entries: Entry[];
  logBase: { index: number; term: number };
  snapshot: SnapshotMeta;
  applied: Entry[];
  appliedIndex: number;
}

/**
 * TestCluster runs real RaftNodes with a synchronous, in-order network that
 * tests can cut. It follows the Ready contract exactly: persist, send, apply, advance.
 */
export class TestCluster {
  readonly nodes = new Map<NodeId, RaftNode>();
  readonly persisted = new Map<NodeId, Persisted>();
  readonly readStates = new Map<NodeId, ReadState[]>();
  readonly readFailures = new Map<NodeId, ReadFailure[]>();
  /** snapshotsWanted: Ready.snapshot values seen per node, for the test to install. */
  readonly snapshotsWanted = new Map<NodeId, SnapshotMeta[]>();
  /** sent: every message delivered (or dropped), for assertions. */
  readonly sent: Message[] = [];
  /** drop: messages it returns true for are lost (besides cut links). */
  drop: ((m: Message) => boolean) | null = null;
  private cut = new Set<string>();
  private queue: Message[] = [];

  constructor(
    ids: NodeId[],
    private readonly overrides: Partial<RaftConfig> = {},
    initial: Membership = membership(ids),
  ) {
    for (const id of ids) {
      this.persisted.set(id, {
        hardState: { term: 0, vote: '', commit: 0 },
        entries: [],
        logBase: { index: 0, term: 0 },
        snapshot: initialSnapshot(initial),
        applied: [],
        appliedIndex: 0,
      });
      this.start(id);
    }
  }

  start(id: NodeId): RaftNode {
    const p = this.must(this.persisted.get(id));
    const seed = [...id].reduce((a, c) => a * 31 + c.charCodeAt(0), 7);
    const node = new RaftNode(defaultRaftConfig(id, new SeededRng(seed), this.overrides), {
      hardState: p.hardState,
      snapshot: p.snapshot,
      logBase: p.logBase,
      entries: p.entries,
      applied: p.appliedIndex,
    });
    this.nodes.set(id, node);
    this.readStates.set(id, []);
    this.readFailures.set(id, []);
    this.snapshotsWanted.set(id, []);
    return node;
  }

  node(id: NodeId): RaftNode {
    return this.must(this.nodes.get(id));
  }

  /** isolate cuts every link to and from id. */
  isolate(id: NodeId): void {
    for (const other of this.nodes.keys()) {
      if (other === id) continue;
      this.cut.add(`${id}>${other}`);
      this.cut.add(`${other}>${id}`);
    }
  }

  cutLink(from: NodeId, to: NodeId): void {
    this.cut.add(`${from}>${to}`);
  }

  heal(): void {
    this.cut.clear();
  }

  /** process runs every node's Ready and delivers messages until nothing is left (bounded). */
  stabilize(maxRounds = 10_000): void {
    for (let round = 0; round < maxRounds; round++) {
      let busy = false;
      for (const [id, node] of this.nodes) {
        if (node.hasReady()) {
          this.handleReady(id, node);
          busy = true;
        }
      }
      const q = this.queue;
      this.queue = [];
      for (const m of q) {
        busy = true;
        this.sent.push(m);
        if (this.cut.has(`${m.from}>${m.to}`) || this.drop?.(m) === true) continue;
        this.nodes.get(m.to)?.step(m);
      }
      if (!busy) return;
    }
    throw new Error('TestCluster: did not stabilize');
  }

  tick(id: NodeId, n = 1): void {
    for (let i = 0; i < n; i++) {
      this.node(id).tick();
      this.stabilize();
    }
  }

  tickAll(n = 1): void {
    for (let i = 0; i < n; i++) {
      for (const node of this.nodes.values()) node.tick();
      this.stabilize();
    }
  }

  /** elect makes id the leader by campaigning and delivering. */
  elect(id: NodeId): void {
    this.node(id).campaign();
    this.stabilize();
  }

  leaderId(): NodeId | undefined {
    for (const [id, n] of this.nodes) if (n.status().role === 'leader') return id;
    return undefined;
  }

  appliedData(id: NodeId): string[] {
    const dec = new TextDecoder();
    return this.must(this.persisted.get(id))
      .applied.filter((e) => e.type === 'normal' && e.data.length > 0)
      .map((e) => dec.decode(e.data));
  }

  /** takeSnapshot snapshots id's state at its applied index and compacts its log up to it. */
  takeSnapshot(id: NodeId): SnapshotMeta {
    const node = this.node(id);
    const p = this.must(this.persisted.get(id));
    const st = node.status();
    const meta: SnapshotMeta = {
      index: p.appliedIndex,
      term: this.must(node.logTerm(p.appliedIndex)),
      membership: node.membershipAt(p.appliedIndex),
      sizeBytes: 0,
      digest: `state@${p.appliedIndex}`,
    };
    node.setSnapshot(meta);
    p.snapshot = meta;
    const base = node.compact(meta.index);
    p.logBase = base;
    p.entries = p.entries.filter((e) => e.index > base.index);
    void st;
    return meta;
  }

  private handleReady(id: NodeId, node: RaftNode): void {
    const p = this.must(this.persisted.get(id));
    const rd = node.ready();
    if (rd.logReset !== null) {
      p.entries = [];
      p.logBase = rd.logReset;
      // At 0: the base membership a leader's first append brought (the membership is persisted with the base).
      if (rd.logReset.index === 0) p.snapshot = initialSnapshot(node.membershipAt(0));
    }
    if (rd.hardState !== null) p.hardState = rd.hardState;
    const first = rd.entries[0];
    if (first !== undefined) {
      p.entries = p.entries.filter((e) => e.index < first.index).concat(rd.entries);
    }
    for (const m of rd.messages) this.queue.push(m);
    if (rd.snapshot !== null) this.must(this.snapshotsWanted.get(id)).push(rd.snapshot);
    for (const e of rd.committedEntries) {
      if (e.index <= p.appliedIndex) continue;
      p.applied.push(e);
      p.appliedIndex = e.index;
    }
    this.must(this.readStates.get(id)).push(...rd.readStates);
    this.must(this.readFailures.get(id)).push(...rd.readFailures);
    node.advance(rd);
  }

  /** installSnapshot completes a snapshot fetch for id from the holder of meta. */
  installSnapshot(id: NodeId, meta: SnapshotMeta, holder: NodeId): boolean {
    const node = this.node(id);
    const p = this.must(this.persisted.get(id));
    const src = this.must(this.persisted.get(holder));
    const ok = node.restoreSnapshot(meta);
    if (ok) {
      p.applied = src.applied.filter((e) => e.index <= meta.index);
      p.appliedIndex = meta.index;
      p.snapshot = meta;
    }
    this.stabilize();
    return ok;
  }

  private must<T>(v: T | undefined): T {
    if (v === undefined) throw new Error('TestCluster: missing value');
    return v;
  }
}

/**
 * laggingFollower: a cluster of a, b, c where c was cut off while a (the
 * leader) wrote `n` entries, then snapshotted and compacted them all; c is
 * back and has been offered that snapshot (`meta`), which it has not fetched.
 */
export function laggingFollower(n: number, overrides: Partial<RaftConfig> = {}): { c: TestCluster; meta: SnapshotMeta } {
  const c = new TestCluster(['a', 'b', 'c'], overrides);
  c.elect('a');
  c.isolate('c');
  for (let i = 0; i < n; i++) c.node('a').propose(bytes(`v${i}`));
  c.stabilize();
  c.tickAll(1);
  const meta = c.takeSnapshot('a');
  c.heal();
  c.tickAll(2);
  assert.deepEqual(c.snapshotsWanted.get('c'), [meta], 'c is offered the snapshot');
  return { c, meta };
}

export function bytes(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}
