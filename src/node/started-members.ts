/**
 * Which members this node has seen run with a log of their own: the evidence
 * that lets a member refuse to start on a new, empty data dir in place of the
 * one it ran on before (etcd's "member has already been bootstrapped" check,
 * made with what a peer can see).
 *
 * A voter that lost its data dir and comes back under its id, not removed
 * first, has forgotten every entry it acknowledged and every vote it gave:
 * counted again as a voter, it can elect a candidate that lacks a committed
 * write (the write is lost) or vote twice in a term. Nothing in its own empty
 * data dir can tell it apart from a member starting for the first time, so
 * it asks its peers (GetMembership, before it starts) and each answers whether
 * it has seen that member run with a non-empty log:
 *   - as leader, an append the member acknowledged at an index above 0 (its
 *     log held that entry durably before it answered), and
 *   - as follower, an append or heartbeat from the member as leader with a
 *     commit index above 0 (its log held committed entries).
 * Either means the member's data dir was no longer new. A member started for
 * the first time has sent neither, so a slow first start is never refused.
 *
 * The record is this node's own (a small file in its data dir, written
 * through a temp file, fsynced and renamed; not replicated): each id at most
 * once, off the Raft path. A member a membership change removes is dropped
 * from it as the change is applied (forget; serve wires Node's
 * onMemberRemoved), and one the configuration no longer names when a
 * GetMembership is answered (prune), so one removed and added again, as a
 * voter or a learner, starts afresh: a new member, as etcd's re-added one is.
 * It is evidence, not a guarantee: a member whose peers are all unreachable
 * while it starts, or that only ever talked to nodes that lost this file, is
 * not caught.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Message, NodeId } from '../raft/types.js';
import { writeFileAtomic } from '../tls/files.js';
import type { MembershipAnswer, MembershipQuery, RaftRequestHandler } from '../transport/transport.js';

/** STARTED_MEMBERS_FILE: the record's file name in the data dir. */
export const STARTED_MEMBERS_FILE = 'started-members.json';
/** STARTED_MEMBERS_MAX: the most ids the record holds (a cluster's members; more are not kept). */
export const STARTED_MEMBERS_MAX = 1024;
const FORMAT = 1;
const ID_BYTES_MAX = 256;

/** startedEvidence: the member a message shows running with a non-empty log (see above), or null. */
export function startedEvidence(m: Message): NodeId | null {
  switch (m.type) {
    case 'appendResp':
      return !m.reject && m.index > 0 ? m.from : null;
    case 'append':
    case 'heartbeat':
      return m.commit > 0 ? m.from : null;
    default:
      return null;
  }
}

export interface StartedMembersLog {
  warn(obj: object, msg: string): void;
}

export class StartedMembers {
  private readonly ids: Set<NodeId>;
  /** the write under way (one at a time), and whether another must follow it. */
  private writing: Promise<void> | null = null;
  private dirty = false;

  private constructor(
    private readonly path: string,
    ids: Iterable<NodeId>,
    private readonly log: StartedMembersLog,
  ) {
    this.ids = new Set(ids);
  }

  /**
   * open reads the record in `dataDir` (none yet: empty). A file this build
   * cannot read is logged and taken as empty: the record only adds a check,
   * and the next member seen writes it afresh.
   */
  static async open(dataDir: string, log: StartedMembersLog): Promise<StartedMembers> {
    const path = join(dataDir, STARTED_MEMBERS_FILE);
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new StartedMembers(path, [], log);
      throw err;
    }
    try {
      const v = JSON.parse(text) as unknown;
      if (typeof v !== 'object' || v === null || (v as { format?: unknown }).format !== FORMAT) throw new Error(`not format ${FORMAT}`);
      const members = (v as { members?: unknown }).members;
      if (!Array.isArray(members) || members.length > STARTED_MEMBERS_MAX || !members.every((id) => typeof id === 'string' && id !== '' && id.length <= ID_BYTES_MAX)) {
        throw new Error('members is not a list of ids');
      }
      return new StartedMembers(path, members as NodeId[], log);
    } catch (err) {
      log.warn({ path, err: (err as Error).message }, 'the record of members seen running is unreadable; starting it afresh');
      return new StartedMembers(path, [], log);
    }
  }

  has(id: NodeId): boolean {
    return this.ids.has(id);
  }

  /** members: the ids recorded, sorted. */
  members(): NodeId[] {
    return [...this.ids].sort();
  }

  /**
   * observe records the member `m` shows running with a non-empty log
   * (startedEvidence), when `isMember` says the configuration names it;
   * written in the background. A member removed is forgotten as the removal
   * applies (forget), but its answers to appends sent before the removal took
   * effect can arrive after that: taken, they recorded it again, and its
   * re-add as a voter on a new data dir was refused by chance.
   */
  observe(m: Message, isMember: (id: NodeId) => boolean = () => true): void {
    const id = startedEvidence(m);
    if (id === null || this.ids.has(id) || this.ids.size >= STARTED_MEMBERS_MAX || id.length > ID_BYTES_MAX || !isMember(id)) return;
    this.ids.add(id);
    this.save();
  }

  /** forget drops `id` (a membership change removed it: added back, it is a new member). */
  forget(id: NodeId): void {
    if (this.ids.delete(id)) this.save();
  }

  /** prune drops the ids that are not in `members` (removed from the configuration). */
  prune(members: ReadonlySet<NodeId>): void {
    let dropped = false;
    for (const id of this.ids) {
      if (!members.has(id)) {
        this.ids.delete(id);
        dropped = true;
      }
    }
    if (dropped) this.save();
  }

  /** flushed resolves once what is recorded now is on disk (or its write failed, logged). */
  async flushed(): Promise<void> {
    while (this.writing !== null) await this.writing;
  }

  private save(): void {
    if (this.writing !== null) {
      this.dirty = true;
      return;
    }
    const text = JSON.stringify({ format: FORMAT, members: this.members() });
    this.writing = writeFileAtomic(this.path, text, 0o600)
      .catch((err: unknown) => this.log.warn({ path: this.path, err: (err as Error).message }, 'cannot write the record of members seen running'))
      .finally(() => {
        this.writing = null;
        if (this.dirty) {
          this.dirty = false;
          this.save();
        }
      });
  }
}

/**
 * recordingHandler: `inner` (the node, serving RaftService) with the record
 * kept: every request it steps is observed (an append or heartbeat of a
 * leader with a commit above 0, from a member `isMember` names), and GetMembership answers whether the asker
 * is recorded, after dropping the ids the configuration no longer names.
 * Every other method is the node's own (bound to it).
 */
export function recordingHandler(inner: RaftRequestHandler, started: StartedMembers, isMember?: (id: NodeId) => boolean): RaftRequestHandler {
  // Made once, not per access: the peer plane looks its handler's methods up for every message it steps.
  const handleRequest = (m: Message): Promise<Message[]> => {
    started.observe(m, isMember);
    return inner.handleRequest(m);
  };
  const answer = inner.membershipFor;
  const membershipFor =
    answer === undefined
      ? undefined
      : (q: MembershipQuery): MembershipAnswer => {
          const a = answer.call(inner, q);
          started.prune(new Set([...a.membership.voters, ...a.membership.learners]));
          return { ...a, askerStarted: started.has(q.from) };
        };
  const bound = new Map<PropertyKey, unknown>();
  return new Proxy(inner, {
    get(target, prop): unknown {
      if (prop === 'handleRequest') return handleRequest;
      if (prop === 'membershipFor') return membershipFor;
      const known = bound.get(prop);
      if (known !== undefined) return known;
      const v: unknown = Reflect.get(target, prop, target);
      if (typeof v !== 'function') return v;
      const f = (v as (...args: unknown[]) => unknown).bind(target);
      bound.set(prop, f);
      return f;
    },
  });
}
