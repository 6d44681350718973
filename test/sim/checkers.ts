/**
 * Checkers: the simulator's oracles, kept apart from the fakes (cluster.ts).
 * The cluster reports what each node WRITES (persisted entries, log resets,
 * compactions, hard states), what it APPLIES, its role changes and the reads it
 * serves; the checkers keep their own shadow of every node's persisted log
 * (a chain hash per entry) and global knowledge (leaders per term, committed
 * entries, the one applied sequence), and throw a SafetyViolation the moment a
 * property breaks. Every hook runs inside the event that caused it, so every
 * property is checked after every event.
 *
 * Properties (Raft §5.2–§5.4, Figure 3): Election Safety, Leader Append-Only,
 * Log Matching, Leader Completeness, State Machine Safety; plus linearizable
 * ReadIndex, hard-state monotonicity and, after the faults heal, liveness.
 */
import type { Entry, HardState, Message, NodeId } from '../../src/raft/types.js';
import { hashMix } from '../harness/rng.js';

/** SafetyViolation names the property, the node(s) and the virtual time at which it broke. */
export class SafetyViolation extends Error {
  override readonly name = 'SafetyViolation';
  constructor(
    readonly property: string,
    readonly nodes: readonly NodeId[],
    readonly timeMs: number,
    readonly detail: string,
  ) {
    super(`${property} violated at t=${timeMs}ms on ${nodes.length > 0 ? nodes.join(',') : '(cluster)'}: ${detail}`);
  }
}

export const PROPERTY = {
  electionSafety: 'Election Safety',
  leaderAppendOnly: 'Leader Append-Only',
  logMatching: 'Log Matching',
  leaderCompleteness: 'Leader Completeness',
  commitRule: 'Leader Commit Rule',
  stateMachineSafety: 'State Machine Safety',
  linearizableRead: 'Linearizable Read',
  hardState: 'HardState Durability',
  driverContract: 'Ready Contract',
  coreException: 'Core Exception',
  liveness: 'Liveness',
  eventBudget: 'Event Budget',
} as const;

const TWO26 = 67108864;

/** entryHash: a 32-bit hash of an entry's term, type and data. */
export function entryHash(e: Entry): number {
  let h = hashMix(0x2545f491, e.term);
  h = hashMix(h, e.type === 'conf' ? 2 : 1);
  const d = e.data;
  h = hashMix(h, d.length);
  let i = 0;
  for (; i + 4 <= d.length; i += 4) {
    h = hashMix(h, ((d[i] as number) | ((d[i + 1] as number) << 8) | ((d[i + 2] as number) << 16) | ((d[i + 3] as number) << 24)) >>> 0);
  }
  for (; i < d.length; i++) h = hashMix(h, d[i] as number);
  return h;
}

/** chainNext: the 52-bit chain hash of the log prefix ending with (index, term, eh), from the previous one. */
export function chainNext(prev: number, index: number, term: number, eh: number): number {
  const lo = prev % TWO26;
  const hi = Math.floor(prev / TWO26);
  const a = hashMix(hashMix(hashMix(lo, index), term), eh);
  const b = hashMix(hashMix(hashMix(hi ^ 0x9e3779b9, eh), index), term ^ a);
  return (a & 0x3ffffff) * TWO26 + (b & 0x3ffffff);
}

function key(index: number, term: number): number {
  return index * 4194304 + term;
}

/** ShadowLog: what the checker knows of one node's persisted log. */
interface ShadowLog {
  baseIndex: number;
  baseTerm: number;
  baseChain: number;
  terms: number[];
  ehs: number[];
  chains: number[];
  /**
   * resetTerms: the terms of the entries the last reset discarded below its
   * base. A follower that begins installing a snapshot resets its log while
   * its apply worker may still apply committed entries saved before (the
   * install follows them): those are checked against these.
   */
  resetTerms?: Map<number, number>;
}

interface Registered {
  eh: number;
  ch: number;
  node: NodeId;
}

export class Checkers {
  now = 0;
  private readonly shadows = new Map<NodeId, ShadowLog>();
  /** leaderOfTerm: Election Safety, every leader ever seen. */
  readonly leaderOfTerm = new Map<number, NodeId>();
  /** registry: (index, term) -> entry hash and chain hash, as first written by any node. */
  private readonly registry = new Map<number, Registered>();
  /** committedChain: index -> chain hash of the committed prefix ending there. */
  private readonly committedChain = new Map<number, number>();
  maxCommitted = 0;
  /** committedInTerm: term X -> highest index some node in term X knew to be committed. */
  private readonly committedInTerm = new Map<number, number>();
  /** termOf / voteOf: each node's persisted term and vote. */
  private readonly termOf = new Map<NodeId, number>();
  private readonly voteOf = new Map<NodeId, { readonly term: number; readonly vote: NodeId }>();
  /** votesOf: each node's durable vote in every term it persisted one in (a grant may leave after a later term's save). */
  private readonly votesOf = new Map<NodeId, Map<number, NodeId>>();
  /** countAt: applied index -> commands in a state machine that applied exactly up to it. */
  private readonly countAt = new Map<number, number>();
  /** globalIds: the one sequence of proposal ids that every state machine is a prefix of. */
  readonly globalIds: number[] = [];

  constructor(nodeIds: readonly NodeId[]) {
    for (const id of nodeIds) this.shadows.set(id, { baseIndex: 0, baseTerm: 0, baseChain: 0, terms: [], ehs: [], chains: [] });
  }

  /** addNode: a node joins (a fresh data dir: an empty log). */
  addNode(id: NodeId): void {
    if (!this.shadows.has(id)) this.shadows.set(id, { baseIndex: 0, baseTerm: 0, baseChain: 0, terms: [], ehs: [], chains: [] });
  }

  private fail(property: string, nodes: readonly NodeId[], detail: string): never {
    throw new SafetyViolation(property, nodes, this.now, detail);
  }

  private shadow(id: NodeId): ShadowLog {
    const s = this.shadows.get(id);
    if (s === undefined) this.fail(PROPERTY.driverContract, [id], `unknown node ${id}`);
    return s;
  }

  lastIndex(id: NodeId): number {
    const s = this.shadow(id);
    return s.baseIndex + s.terms.length;
  }

  /** chainAt: the chain hash of node id's persisted log at index, or undefined if not held. */
  chainAt(id: NodeId, index: number): number | undefined {
    const s = this.shadow(id);
    if (index === s.baseIndex) return s.baseChain;
    if (index < s.baseIndex || index > s.baseIndex + s.terms.length) return undefined;
    return s.chains[index - s.baseIndex - 1];
  }

  termAt(id: NodeId, index: number): number | undefined {
    const s = this.shadow(id);
    if (index === s.baseIndex) return s.baseTerm;
    if (index < s.baseIndex || index > s.baseIndex + s.terms.length) return undefined;
    return s.terms[index - s.baseIndex - 1];
  }

  // ---- Election Safety (Raft §5.2) ----

  /** onLeader: node id became leader of term. At most one leader per term, ever. Also checks Leader Completeness. */
  onLeader(id: NodeId, term: number): void {
    const prev = this.leaderOfTerm.get(term);
    if (prev !== undefined && prev !== id) {
      this.fail(PROPERTY.electionSafety, [prev, id], `two leaders in term ${term}: ${prev} and ${id}`);
    }
    this.leaderOfTerm.set(term, id);
    this.checkLeaderCompleteness(id, term);
  }

  /**
   * onLeaderMessage: node id sent a leader-only message (append, heartbeat,
   * snapshot, timeoutNow) in term: an Election Safety sensor independent of
   * the role the core reports.
   */
  onLeaderMessage(id: NodeId, term: number): void {
    const prev = this.leaderOfTerm.get(term);
    if (prev === undefined) this.leaderOfTerm.set(term, id);
    else if (prev !== id) this.fail(PROPERTY.electionSafety, [prev, id], `${id} sent leader messages in term ${term}, whose leader is ${prev}`);
  }

  // ---- Leader Completeness (Raft §5.4) ----

  /**
   * checkLeaderCompleteness: Figure 3 — an entry committed in term X is in the log of
   * every leader of a term > X. An entry seen committed by a node in term X was
   * committed in a term <= X, so leaders of terms > X are checked (a paused node may
   * legitimately win an older term later: it need not hold what newer terms committed).
   */
  private checkLeaderCompleteness(id: NodeId, term: number): void {
    let c = 0;
    for (const [t, index] of this.committedInTerm) if (t < term && index > c) c = index;
    if (c === 0) return;
    const s = this.shadow(id);
    if (c < s.baseIndex) return; // covered by its snapshot (whose content State Machine Safety checks)
    const last = s.baseIndex + s.terms.length;
    if (c > last) {
      this.fail(PROPERTY.leaderCompleteness, [id], `new leader of term ${term} has last index ${last} < committed index ${c}`);
    }
    const mine = this.chainAt(id, c);
    const want = this.committedChain.get(c);
    if (want !== undefined && mine !== want) {
      this.fail(PROPERTY.leaderCompleteness, [id], `new leader of term ${term} holds a different entry (term ${this.termAt(id, c)}) at committed index ${c}`);
    }
  }

  /**
   * onLeaderCommit: a leader advanced its commit index to index. Raft §5.4.2: a leader
   * commits by counting replicas only entries of its own term (earlier ones follow
   * implicitly); committing an earlier-term entry by counting is Figure 8's bug.
   */
  onLeaderCommit(id: NodeId, index: number, term: number): void {
    const t = this.termAt(id, index);
    if (t !== undefined && t !== term) {
      this.fail(PROPERTY.commitRule, [id], `leader of term ${term} advanced its commit index to ${index}, an entry of term ${t} (Raft §5.4.2, Figure 8)`);
    }
  }

  // ---- persisted writes: Log Matching (§5.3), Leader Append-Only (§5.3) ----

  /** onLogReset: node discarded its persisted log and made (index, term) its base (snapshot install). */
  onLogReset(id: NodeId, base: { index: number; term: number }, isLeader: boolean): void {
    if (isLeader) this.fail(PROPERTY.leaderAppendOnly, [id], `leader reset its log to (${base.index}, ${base.term})`);
    const s = this.shadow(id);
    let ch = 0;
    if (base.index !== 0) {
      const r = this.registry.get(key(base.index, base.term));
      if (r === undefined) {
        this.fail(PROPERTY.logMatching, [id], `log reset to base (${base.index}, ${base.term}), an entry no node ever held`);
      }
      ch = r.ch;
      const cc = this.committedChain.get(base.index);
      if (cc !== undefined && cc !== ch) {
        this.fail(PROPERTY.stateMachineSafety, [id], `log reset to base (${base.index}, ${base.term}) which differs from the committed entry there`);
      }
    }
    const dropped = new Map<number, number>();
    s.terms.forEach((t, i) => {
      const index = s.baseIndex + 1 + i;
      if (index < base.index) dropped.set(index, t);
    });
    s.resetTerms = dropped;
    s.baseIndex = base.index;
    s.baseTerm = base.term;
    s.baseChain = ch;
    s.terms = [];
    s.ehs = [];
    s.chains = [];
  }

  /**
   * onCompactOrReset: node made base its log base with LogStore.compact,
   * which discards the whole log when base is beyond it or its entry there
   * differs (a snapshot install, Raft §7): a reset then, else a compaction.
   */
  onCompactOrReset(id: NodeId, base: { index: number; term: number }, isLeader: boolean): void {
    const s = this.shadow(id);
    if (base.index <= s.baseIndex) return;
    const last = s.baseIndex + s.terms.length;
    if (base.index > last || s.terms[base.index - s.baseIndex - 1] !== base.term) this.onLogReset(id, base, isLeader);
    else this.onCompact(id, base);
  }

  /** countAtIndex: the commands a state machine at index holds, as the first node to apply it there saw (undefined: none did). */
  countAtIndex(index: number): number | undefined {
    return this.countAt.get(index);
  }

  /** onCompact: node dropped persisted entries up to base.index. */
  onCompact(id: NodeId, base: { index: number; term: number }): void {
    const s = this.shadow(id);
    if (base.index <= s.baseIndex) return;
    const last = s.baseIndex + s.terms.length;
    if (base.index > last) this.fail(PROPERTY.driverContract, [id], `compact to ${base.index} beyond persisted last index ${last}`);
    const k = base.index - s.baseIndex;
    const t = s.terms[k - 1];
    if (t !== base.term) this.fail(PROPERTY.driverContract, [id], `compact returned base (${base.index}, ${base.term}) but the persisted entry there has term ${t}`);
    s.baseChain = s.chains[k - 1] as number;
    s.baseIndex = base.index;
    s.baseTerm = base.term;
    s.terms.splice(0, k);
    s.ehs.splice(0, k);
    s.chains.splice(0, k);
  }

  /** onPersistEntries: node wrote ents, truncating its persisted log from ents[0].index first. */
  onPersistEntries(id: NodeId, ents: readonly Entry[], isLeader: boolean): void {
    const first = ents[0];
    if (first === undefined) return;
    const s = this.shadow(id);
    const last = s.baseIndex + s.terms.length;
    if (first.index <= s.baseIndex) {
      this.fail(PROPERTY.driverContract, [id], `entries from ${first.index} written at or below the log base ${s.baseIndex} (compacted, committed region)`);
    }
    if (first.index > last + 1) this.fail(PROPERTY.driverContract, [id], `gap: entries from ${first.index} written after last index ${last}`);
    for (let i = 1; i < ents.length; i++) {
      if ((ents[i] as Entry).index !== first.index + i) this.fail(PROPERTY.driverContract, [id], `entries to persist are not contiguous at ${first.index + i}`);
    }
    const hashes = ents.map(entryHash);
    if (isLeader && first.index <= last) {
      const lastNew = first.index + ents.length - 1;
      for (let i = 0; i < ents.length && first.index + i <= last; i++) {
        if (s.ehs[first.index + i - s.baseIndex - 1] !== hashes[i]) {
          this.fail(PROPERTY.leaderAppendOnly, [id], `leader overwrote its entry at index ${first.index + i}`);
        }
      }
      if (lastNew < last) this.fail(PROPERTY.leaderAppendOnly, [id], `leader truncated its log from ${lastNew + 1} to ${last}`);
    }
    const keep = first.index - s.baseIndex - 1;
    s.terms.length = keep;
    s.ehs.length = keep;
    s.chains.length = keep;
    let prev = keep === 0 ? s.baseChain : (s.chains[keep - 1] as number);
    for (let i = 0; i < ents.length; i++) {
      const e = ents[i] as Entry;
      const eh = hashes[i] as number;
      const ch = chainNext(prev, e.index, e.term, eh);
      const k = key(e.index, e.term);
      const r = this.registry.get(k);
      if (r === undefined) {
        this.registry.set(k, { eh, ch, node: id });
      } else if (r.eh !== eh) {
        this.fail(PROPERTY.logMatching, [r.node, id], `two different entries at index ${e.index} term ${e.term}`);
      } else if (r.ch !== ch) {
        this.fail(PROPERTY.logMatching, [r.node, id], `entries at index ${e.index} term ${e.term} match but their logs differ before it`);
      }
      s.terms.push(e.term);
      s.ehs.push(eh);
      s.chains.push(ch);
      prev = ch;
    }
  }

  /** onHardState: node persisted next over prev (what its disk held). Terms never go back; one vote per term. */
  onHardState(id: NodeId, prev: HardState, next: HardState): void {
    if (next.term < prev.term) this.fail(PROPERTY.hardState, [id], `term went back from ${prev.term} to ${next.term}`);
    if (next.term === prev.term && prev.vote !== '' && next.vote !== prev.vote) {
      // One vote per term (Raft §5.2) is what Election Safety rests on: report it under that name.
      this.fail(PROPERTY.electionSafety, [id], `${id} voted twice in term ${next.term}: for ${prev.vote}, then for ${next.vote || '(nobody)'}`);
    }
    if (next.commit < prev.commit) this.fail(PROPERTY.hardState, [id], `commit went back from ${prev.commit} to ${next.commit}`);
    const last = this.lastIndex(id);
    if (next.commit > last) this.fail(PROPERTY.driverContract, [id], `persisted commit ${next.commit} beyond persisted last index ${last}`);
    // The leader of a term advances its own commit index (no one else does in that term): the commit rule.
    if (next.commit > prev.commit && this.leaderOfTerm.get(next.term) === id) this.onLeaderCommit(id, next.commit, next.term);
    this.termOf.set(id, next.term);
    this.voteOf.set(id, { term: next.term, vote: next.vote });
    let votes = this.votesOf.get(id);
    if (votes === undefined) this.votesOf.set(id, (votes = new Map()));
    if (next.vote !== '') votes.set(next.term, next.vote);
    this.noteCommitted(id, next.commit);
  }

  /**
   * forgetHardState: node's disk went back to a hard state of `term` (only a
   * lying disk, a negative control, does that: the simulator follows the disk,
   * and lets the Raft properties catch the consequences).
   */
  forgetHardState(id: NodeId, term: number): void {
    this.termOf.set(id, term);
    this.voteOf.delete(id);
    this.votesOf.delete(id);
  }

  /**
   * onDepart: message m leaves node id. What it depends on must be durable
   * first (Raft §5.1, Figure 2: "respond to RPCs only after updating stable
   * storage"): its term (pre-vote messages excepted: they change no term), the
   * vote a grant promises, and the entries an append ack promises (held up to
   * its index, and not replaced there by a later term's).
   */
  onDepart(id: NodeId, m: Message): void {
    const preVote = (m.type === 'vote' || m.type === 'voteResp') && m.preVote;
    const durableTerm = this.termOf.get(id) ?? 0;
    if (!preVote && m.term > durableTerm) {
      this.fail(PROPERTY.hardState, [id], `${id} sent ${m.type} to ${m.to} in term ${m.term} while its durable term was ${durableTerm}`);
    }
    if (m.type === 'voteResp' && m.granted && !m.preVote) {
      // The grant's own term must hold that durable vote; a grant held for its save may leave after a later
      // term's save too (the vote it promises stays durable: seed 20916 of 5 nodes).
      const v = this.voteOf.get(id);
      if (v !== undefined && this.votesOf.get(id)?.get(m.term) !== m.to) {
        this.fail(PROPERTY.hardState, [id], `${id} granted its vote in term ${m.term} to ${m.to} while its durable vote was for ${v.vote || '(nobody)'} in term ${v.term}`);
      }
    }
    if (m.type === 'appendResp' && !m.reject) {
      if (m.index > this.lastIndex(id)) {
        this.fail(PROPERTY.hardState, [id], `${id} acknowledged entries up to ${m.index} while its durable log ended at ${this.lastIndex(id)}`);
      }
      // The ack promises the entries of its term's leader; a durable entry there of a later term replaced them
      // (a newer leader's append truncated them, the ack held for a save left after it: seed 621018's kind).
      const t = this.termAt(id, m.index);
      if (t !== undefined && t > m.term) {
        this.fail(PROPERTY.hardState, [id], `${id} acknowledged entries up to ${m.index} in term ${m.term} while its durable entry there is of term ${t}`);
      }
    }
  }

  private noteCommittedInTerm(id: NodeId, index: number): void {
    const t = this.termOf.get(id) ?? 0;
    if ((this.committedInTerm.get(t) ?? 0) < index) this.committedInTerm.set(t, index);
    if (index > this.maxCommitted) this.maxCommitted = index;
  }

  /** noteCommitted: node knows index to be committed; its persisted entry there is committed. */
  noteCommitted(id: NodeId, index: number): void {
    if (index === 0) return;
    const ch = this.chainAt(id, index);
    if (ch === undefined) return; // compacted: covered by a snapshot
    const known = this.committedChain.get(index);
    this.noteCommittedInTerm(id, index);
    if (known === undefined) {
      this.committedChain.set(index, ch);
    } else if (known !== ch) {
      this.fail(PROPERTY.stateMachineSafety, [id], `node holds a different entry (term ${this.termAt(id, index)}) at committed index ${index}`);
    }
  }

  // ---- State Machine Safety (§5.4.3) ----

  /**
   * onApply: node applied entry e on top of a state machine at (appliedBefore, countBefore).
   * `id` is the proposal id carried by a normal entry, or -1 for a no-op or conf entry.
   */
  onApply(node: NodeId, e: Entry, appliedBefore: number, countBefore: number, proposalId: number): void {
    if (e.index !== appliedBefore + 1) {
      this.fail(PROPERTY.stateMachineSafety, [node], `applied entry ${e.index} right after ${appliedBefore} (a gap)`);
    }
    const sh = this.shadow(node);
    const t = this.termAt(node, e.index) ?? (e.index < sh.baseIndex ? sh.resetTerms?.get(e.index) : undefined);
    if (t === undefined) {
      this.fail(PROPERTY.driverContract, [node], `applied entry ${e.index} that is not in its persisted log (base ${this.shadow(node).baseIndex}, last ${this.lastIndex(node)})`);
    }
    if (t !== e.term) this.fail(PROPERTY.driverContract, [node], `applied entry ${e.index} term ${e.term} but persisted term ${t}`);
    this.noteCommitted(node, e.index);
    const countAfter = countBefore + (proposalId >= 0 ? 1 : 0);
    const known = this.countAt.get(e.index);
    if (known === undefined) this.countAt.set(e.index, countAfter);
    else if (known !== countAfter) {
      this.fail(PROPERTY.stateMachineSafety, [node], `state machine at index ${e.index} holds ${countAfter} commands, another held ${known}`);
    }
    if (proposalId >= 0) {
      if (countBefore < this.globalIds.length) {
        const want = this.globalIds[countBefore];
        if (want !== proposalId) {
          this.fail(PROPERTY.stateMachineSafety, [node], `applied proposal #${proposalId} (index ${e.index}) as its ${countBefore + 1}th command, where another node applied #${want}`);
        }
      } else if (countBefore === this.globalIds.length) {
        this.globalIds.push(proposalId);
      } else {
        this.fail(PROPERTY.stateMachineSafety, [node], `state machine holds ${countBefore} commands, more than were ever applied (${this.globalIds.length})`);
      }
    }
  }

  /** onInstall: node replaced its state machine (at appliedBefore) with a snapshot at index holding count commands. */
  onInstall(node: NodeId, appliedBefore: number, index: number, count: number): void {
    if (index < appliedBefore) {
      this.fail(PROPERTY.stateMachineSafety, [node], `snapshot install at ${index} rewinds a state machine that had applied ${appliedBefore}`);
    }
    if (count > this.globalIds.length) this.fail(PROPERTY.stateMachineSafety, [node], `snapshot holds ${count} commands, more than ever applied`);
    const known = this.countAt.get(index);
    if (known !== undefined && known !== count) {
      this.fail(PROPERTY.stateMachineSafety, [node], `snapshot at index ${index} holds ${count} commands, a state machine at that index held ${known}`);
    }
    this.noteCommittedInTerm(node, index);
  }

  // ---- Linearizable ReadIndex (dissertation §6.4) ----

  onReadState(node: NodeId, context: string, index: number, ackedIndexAtStart: number): void {
    if (index < ackedIndexAtStart) {
      this.fail(PROPERTY.linearizableRead, [node], `read ${context} got read index ${index}, below ${ackedIndexAtStart}, a write acknowledged before the read started`);
    }
  }

  // ---- budgets and liveness ----

  failLiveness(nodes: readonly NodeId[], detail: string): never {
    this.fail(PROPERTY.liveness, nodes, detail);
  }

  failContract(property: string, nodes: readonly NodeId[], detail: string): never {
    this.fail(property, nodes, detail);
  }
}
