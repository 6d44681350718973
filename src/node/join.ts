/**
 * Joining a running cluster (`serve --join`), as etcd's new member learns the
 * cluster from the peers its --initial-cluster names: a node whose data dir is
 * new asks the members its --peers name for the cluster's configuration
 * (GetMembership) and starts from the one that names it, rather than from its
 * --peers. A node takes Raft messages only from the members it knows, so a
 * joiner whose --peers left the leader out would otherwise refuse it for good.
 *
 * The members answer only a node they know (their peer guard), so it must be
 * added first (`cluster add ID ADDR --learner`); until one of them names it,
 * the joiner asks again, for at most `waitMs`. Of the answers that name it, the
 * one of the highest term is taken (the freshest view). Its address in that
 * configuration must be the one it advertises: a node added at another address
 * would never be reached there.
 */
import type { Clock } from './clock.js';
import type { Logger } from './logger.js';
import type { Membership, NodeId } from '../raft/types.js';
import type { MembershipAnswer, MembershipQuery } from '../transport/transport.js';

/** JOIN_WAIT_MS_DEFAULT: how long a joiner asks before it gives up (the operator adds it meanwhile). */
export const JOIN_WAIT_MS_DEFAULT = 60_000;
/** JOIN_ASK_TIMEOUT_MS: each question's deadline. */
export const JOIN_ASK_TIMEOUT_MS = 2_000;
/** JOIN_ROUND_MS: the pause between two rounds of questions. */
export const JOIN_ROUND_MS = 500;

/** JoinError: no member named in --peers gave a configuration this node can start from (a configuration error: exit code 2). */
export class JoinError extends Error {
  override readonly name = 'JoinError';
}

export interface JoinOptions {
  readonly selfId: NodeId;
  /** peers: --peers (id -> peer address), this node included at the address it advertises. */
  readonly peers: Readonly<Record<NodeId, string>>;
  /** ask: one GetMembership call (askMembership over the peer plane). */
  readonly ask: (address: string, q: MembershipQuery, timeoutMs: number) => Promise<MembershipAnswer>;
  readonly clock: Clock;
  readonly log: Logger;
  readonly waitMs?: number;
}

/**
 * joinMembership resolves with the configuration to start from: the
 * highest-term answer of a member named in --peers that names this node.
 * Rejects with JoinError when --peers names no other member, when the
 * configuration names this node at another address than it advertises, or
 * when no member named it within waitMs (each member's last error said).
 */
export async function joinMembership(o: JoinOptions): Promise<Membership> {
  const self = o.selfId;
  const own = o.peers[self];
  const others = Object.entries(o.peers).filter(([id]) => id !== self);
  if (own === undefined || own === '') throw new JoinError(`--join: --peers must name this node (${self}=host:port, the peer address it was added at)`);
  if (others.length === 0) throw new JoinError(`--join: --peers names no member but ${self}; name at least one member of the running cluster`);
  const waitMs = o.waitMs ?? JOIN_WAIT_MS_DEFAULT;
  const deadline = o.clock.nowMs() + waitMs;
  const lastError = new Map<NodeId, string>();
  for (let round = 0; ; round++) {
    const answers = await Promise.all(
      others.map(async ([id, address]) => {
        try {
          return await o.ask(address, { from: self, to: id }, JOIN_ASK_TIMEOUT_MS);
        } catch (err) {
          lastError.set(id, oneLine((err as { details?: string }).details ?? (err as Error).message));
          return null;
        }
      }),
    );
    let best: MembershipAnswer | null = null;
    for (const a of answers) {
      if (a === null) continue;
      const m = a.membership;
      if (!m.voters.includes(self) && !m.learners.includes(self)) {
        lastError.set(a.from, `its configuration (term ${a.term}) does not name ${self} yet`);
        continue;
      }
      if (best === null || a.term > best.term) best = a;
    }
    if (best !== null) {
      const at = best.membership.addresses[self] ?? '';
      if (at !== own) {
        throw new JoinError(`--join: ${best.from} knows ${self} at ${JSON.stringify(at)}, but this node advertises ${own} in --peers; remove it and add it again at ${own}, or start it with that address`);
      }
      o.log.info({ from: best.from, term: best.term, voters: best.membership.voters, learners: best.membership.learners }, 'joining: starting from the configuration of a member');
      return best.membership;
    }
    if (o.clock.nowMs() >= deadline) {
      const why = others.map(([id, address]) => `${id} (${address}): ${lastError.get(id) ?? 'no answer'}`).join('; ');
      throw new JoinError(
        `--join: no member named in --peers knows ${self} after ${Math.round(waitMs / 1000)} s (${why}); add it first: snapcoord cluster add ${self} ${own} --learner`,
      );
    }
    if (round === 0) o.log.info({ peers: others.map(([id]) => id) }, 'joining: waiting for a member that knows this node (cluster add)');
    await o.clock.sleep(Math.min(JOIN_ROUND_MS, Math.max(0, deadline - o.clock.nowMs())));
  }
}

/** oneLine: an error's text on one line, bounded. */
function oneLine(s: string): string {
  return s.replace(/\s+/g, ' ').trim().slice(0, 300);
}

export interface LogNotLostOptions {
  readonly selfId: NodeId;
  /** peers: --peers (id -> peer address); this node's own entry is not asked. */
  readonly peers: Readonly<Record<NodeId, string>>;
  /** ask: one GetMembership call (askMembership over the peer plane). */
  readonly ask: (address: string, q: MembershipQuery, timeoutMs: number) => Promise<MembershipAnswer>;
  readonly log: Logger;
  /** timeoutMs: each question's deadline (default JOIN_ASK_TIMEOUT_MS); the members are asked at once. */
  readonly timeoutMs?: number;
  /**
   * own: the log of a data dir that is not new (its last index, its hard state's term); absent: a new data dir. A
   * leader of that term or a later one holding an acknowledgement past the last index means the data dir is older
   * than the one this member ran on (a copy or a backup put back): refused as a new one would be.
   */
  readonly own?: { readonly lastIndex: number; readonly term: number };
}

/**
 * checkLogNotLost: a node starting from a new data dir asks the members its
 * --peers name, once and at once, what they know of its log: a leader holds
 * its acknowledgement of log entries (GetMembership's askerMatchIndex, kept
 * in memory), or a member has seen it run with a log of its own before
 * (askerStarted: src/node/started-members.ts, kept on disk, so a member
 * answers it after restarts and elections too; counted only from a member
 * that has it as a voter). A node that acknowledged entries and comes back
 * without them (a lost disk or volume, the same id and --peers) would vote
 * as if it held them: its vote elects a candidate that lacks writes
 * committed with its acknowledgement, and those writes are lost. Rejects
 * with JoinError naming who knows and what to do; resolves when no member
 * that answered says so (members that do not answer, as in a new cluster
 * whose members start together, are skipped, as etcd's bootstrap check
 * does: best effort). With `own`, a data dir that is not new is checked the
 * same way against its last index: a copy or a backup of it put back lacks
 * entries it acknowledged just as an empty one does.
 */
export async function checkLogNotLost(o: LogNotLostOptions): Promise<void> {
  const self = o.selfId;
  const others = Object.entries(o.peers).filter(([id]) => id !== self);
  const answers = await Promise.all(
    others.map(async ([id, address]) => {
      try {
        return await o.ask(address, { from: self, to: id }, o.timeoutMs ?? JOIN_ASK_TIMEOUT_MS);
      } catch {
        return null;
      }
    }),
  );
  const todo =
    `Start it on its old data dir, or replace it: remove it (snapcoord cluster remove ${self}), then add it again as a learner ` +
    `(snapcoord cluster add ${self} ${o.peers[self] ?? 'ADDR'} --learner) and start it with --join`;
  const own = o.own ?? { lastIndex: 0, term: 0 };
  for (const a of answers) {
    const match = a?.askerMatchIndex ?? 0;
    // A leader of an earlier term may hold a match this node's log has since lost rightly (a later leader's
    // entries replaced the ones it acknowledged): only a leader of its term or a later one counts.
    if (a === null || match <= own.lastIndex || a.term < own.term) continue;
    if (o.own !== undefined) {
      o.log.warn({ leader: a.from, term: a.term, acknowledged: match, lastIndex: own.lastIndex }, 'this node\'s log ends before entries it acknowledged to the leader: its data dir is older than the one it ran on');
      throw new JoinError(
        `the data dir's log ends at entry ${own.lastIndex}, but ${a.from} (leader of term ${a.term}) holds ${self}'s acknowledgement of the log up to entry ${match}: ` +
          `this data dir is older than the one this node ran on (a copy or a backup put back?), and voting without those entries could lose committed writes. ${todo.replace('on its old data dir', 'on its latest data dir')}`,
      );
    }
    o.log.warn({ leader: a.from, term: a.term, acknowledged: match }, 'this node\'s data dir is new, but the leader holds its acknowledgement of log entries it no longer has');
    throw new JoinError(
      `the data dir is new, but ${a.from} (leader of term ${a.term}) holds ${self}'s acknowledgement of the log up to entry ${match}: ` +
        `this node lost a log it acknowledged, and voting without it could lose committed writes. ${todo}`,
    );
  }
  if (o.own !== undefined) return;
  const saw = answers.filter((a): a is MembershipAnswer => a !== null && a.askerStarted === true && a.membership.voters.includes(self)).map((a) => a.from);
  if (saw.length > 0) {
    o.log.warn({ sawItRun: saw }, 'this node\'s data dir is new, but members saw it run before with a log of its own');
    throw new JoinError(
      `the data dir is new, but ${saw.join(', ')} saw ${self} run before with a log of its own, as a voter: ` +
        `this node lost a log it acknowledged, and voting without it could lose committed writes. ${todo}`,
    );
  }
}
