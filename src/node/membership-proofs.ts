/**
 * Membership proofs: how a member that missed configuration changes can
 * still tell a member added in them from a stranger when no voter of its own
 * configuration answers (src/node/vouches.ts asks them first).
 *
 * The leader that appends a configuration entry signs a statement of it
 * (MembershipStatement: cluster, index, term, voters, learners, signer) with
 * its own key, the one its peer certificate is issued for, and the entry
 * carries it (ConfChange.proof). Every configuration then carries the proofs
 * of its last MEMBERSHIP_PROOFS_MAX changes (Membership.proofs): through the
 * log, snapshots, compactions and GetMembership answers, so a member added
 * after a compaction holds them too.
 *
 * A node whose configuration C (at index i) does not name a sender asks the
 * sender for its configuration and walks its proofs in index order from the
 * first after i (verifyChain): each must verify (a certificate the cluster's
 * CA issued to its signer, not revoked) and be signed by a voter of the
 * configuration before it in the walk (C for the first): the leader that
 * appends an entry leads the configuration before it, so an honest chain
 * always passes, and one reaches the sender only through members C trusts.
 * The sender is vouched for when the last configuration reached names it.
 *
 * What it does not prove: that the sender is still a member. A member removed
 * later, whose certificate is not revoked, holds a chain naming it up to its
 * removal; so vouches.ts takes a chain only when no voter of C answered with
 * a configuration as new that leaves the sender out, and the CRL
 * (--peer-crl) is what keeps a removed member out for good.
 */
import type { Membership, NodeId } from '../raft/types.js';
import type { SignedStatement } from '../tls/membership-proof.js';

/** MembershipStatement: what a proof says: the configuration an entry at `index` (term `term`) of cluster `clusterId` makes, signed by `signer` (its bytes: statementBytes). */
export type MembershipStatement = SignedStatement;

/**
 * MembershipProofs: this node's signer and the cluster's verifier
 * (src/tls/membership-proof.ts with the peer plane's certificate and CA; the
 * simulator's own model). sign returns null when this node cannot sign
 * (then its configuration changes carry no proof).
 */
export interface MembershipProofs {
  sign(s: { readonly index: number; readonly term: number; readonly voters: readonly NodeId[]; readonly learners: readonly NodeId[] }): string | null;
  /** verify: the statement the proof carries when its signature holds; an Error saying why not. */
  verify(proof: string): MembershipStatement | Error;
}

/** ChainVerdict: the configuration the chain reached (its index and whether it names the sender), or why none. */
export type ChainVerdict = { readonly index: number; readonly names: boolean } | { readonly error: string };

function names(voters: readonly NodeId[], learners: readonly NodeId[], id: NodeId): boolean {
  return voters.includes(id) || learners.includes(id);
}

/**
 * verifyChain walks `proofs` (a sender's Membership.proofs) from this node's
 * configuration `own` (at `ownIndex`): in index order, those after ownIndex,
 * each verified and signed by a voter of the configuration reached before it;
 * a proof that fails ends the walk (what follows it cannot be reached). The
 * verdict is the last configuration reached, or an error when none was.
 */
export function verifyChain(own: Membership, ownIndex: number, proofs: readonly string[], sender: NodeId, verify: MembershipProofs['verify']): ChainVerdict {
  const statements: MembershipStatement[] = [];
  const failures: string[] = [];
  for (const p of proofs) {
    const s = verify(p);
    if (s instanceof Error) failures.push(s.message.slice(0, 200));
    else if (s.index > ownIndex) statements.push(s);
  }
  // In index order; of two at one index the higher term first: a log's entry at an index is replaced only by a later
  // leader's (higher term), so the lower-term one is an entry that was cut off (never committed), and a sender must not
  // choose it by the order it lists its proofs in.
  statements.sort((a, b) => a.index - b.index || b.term - a.term);
  let voters: readonly NodeId[] = own.voters;
  let reached: MembershipStatement | null = null;
  for (const s of statements) {
    if (reached !== null && s.index === reached.index) continue;
    // Terms never fall along one log: a later index of a lower term is of another branch (a spliced chain).
    if (reached !== null && s.term < reached.term) {
      failures.push(`the proof of index ${s.index} is of term ${s.term}, lower than ${reached.term} of index ${reached.index} before it (not one log)`);
      break;
    }
    if (!voters.includes(s.signer)) {
      failures.push(`the proof of index ${s.index} is signed by ${s.signer}, no voter of the configuration before it (${voters.join(', ')})`);
      break;
    }
    reached = s;
    voters = s.voters;
  }
  if (reached === null) {
    return { error: failures.length > 0 ? failures.slice(0, 3).join('; ') : `no proof of a configuration after index ${ownIndex}` };
  }
  return { index: reached.index, names: names(reached.voters, reached.learners, sender) };
}
