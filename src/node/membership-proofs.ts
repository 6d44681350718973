/**
 * Membership proofs: how a member that missed configuration changes can
 * still tell a member added in them from a stranger when no voter of its own
 * configuration answers (src/node/vouches.ts asks them first).
 *
 * The leader that appends a configuration entry signs a statement of it
 * (MembershipStatement: cluster, index, term, voters, learners, signer) with
 * its own key, the one its peer certificate is issued for, and the entry
 * carries it (ConfChange.proof): an "appended" statement. Once the entry is
 * committed, a leader signs a "committed" statement of it (the same fields,
 * marked committed, over bytes of their own) and appends it in an `attest`
 * entry (Raft.proposeAttestation: a conf entry that changes no member), so it
 * joins the configuration's proofs the same way. Every configuration then
 * carries the proofs of its last MEMBERSHIP_PROOFS_MAX entries of both kinds
 * (Membership.proofs, at most MEMBERSHIP_PROOFS_CHARS_TOTAL_MAX characters):
 * through the log, snapshots, compactions and GetMembership answers, so a
 * member added after a compaction holds them too.
 *
 * A node whose configuration C (at index i) does not name a sender asks the
 * sender for its configuration and walks its COMMIT statements in index order
 * from the first after i (verifyChain): each must verify (a certificate the
 * cluster's CA issued to its signer, not revoked) and be signed by a voter of
 * the configuration before it in the walk (C for the first). The sender is
 * vouched for when the last configuration reached names it.
 *
 * Why commit statements, not the appended ones alone: an appended entry may
 * never commit (its leader deposed, the next leader's log without it, the
 * entry cut off everywhere), and a member whose add was so cut off kept a
 * signed chain naming it: a receiver that heard no voter followed a
 * non-member. A committed entry stays in every later leader's log (Raft
 * §5.4), so a chain of commit statements names only configurations that were
 * the cluster's. Who signs: etcd and hashicorp/raft do not sign, but both act
 * on a configuration only once committed (etcd applies a ConfChange after
 * commit; hashicorp keeps `committed` beside `latest` and snapshots the
 * committed one); the signature is what carries that knowledge to a member
 * that cannot ask a voter. A quorum's signatures of "I hold it" would need a
 * round of asks the receiver cannot make (it hears no voter) or a sender
 * collecting them; one leader's statement is enough because a leader's commit
 * index is committed by definition, and costs one entry per change.
 * - The signer of a commit statement must be a voter of the configuration
 *   before the entry (as the appender must): a member a change adds leads the
 *   configuration after it and could attest its own add; the statement it
 *   signs for its own add is not taken (the link waits for a leader of the
 *   configuration before).
 * - A leader that committed an entry and fell before attesting it: every
 *   leader, once this term's first entry committed, attests the newest
 *   appended statement of its committed configuration that has no commit
 *   statement yet (attestationTarget), so the next one does.
 * - Chains from builds before commit statements (appended only) vouch for
 *   nobody here (a receiver then rests on voters' answers: a member whose
 *   configured voters are all gone must be re-added); those builds skip
 *   attest entries and commit statements. Finish a rolling upgrade before
 *   changing members.
 * - Budget: two proofs per change, so MEMBERSHIP_PROOFS_MAX (16) covers the
 *   last 8 changes, within the same 32 KiB.
 * - Plaintext clusters (no peer certificate) sign nothing and append no
 *   attest entry: vouching there rests on voters' answers alone.
 *
 * What it does not prove: that the sender is still a member. A member removed
 * later, whose certificate is not revoked, holds a chain naming it up to its
 * removal; so vouches.ts takes a chain only when no voter of C answered with
 * a configuration as new that leaves the sender out, and the CRL
 * (--peer-crl) is what keeps a removed member out for good.
 */
import type { Membership, NodeId } from '../raft/types.js';
import { readStatement, type ProofToSign, type SignedStatement } from '../tls/membership-proof.js';

export type { ProofToSign };

/** MembershipStatement: what a proof says: the configuration an entry at `index` (term `term`) of cluster `clusterId` makes, signed by `signer` (its bytes: statementBytes). */
export type MembershipStatement = SignedStatement;

/**
 * MembershipProofs: this node's signer and the cluster's verifier
 * (src/tls/membership-proof.ts with the peer plane's certificate and CA; the
 * simulator's own model). sign returns null when this node cannot sign
 * (then its configuration changes carry no proof). s.committed: a commit
 * statement (attestationTarget's), else an appended one.
 */
export interface MembershipProofs {
  sign(s: ProofToSign): string | null;
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
 * configuration `own` (at `ownIndex`): in index order, the commit statements
 * after ownIndex, each verified and signed by a voter of the configuration
 * reached before it; a proof that fails ends the walk (what follows it cannot
 * be reached). Appended statements are not links: an entry appended but not
 * committed may have been cut off. The verdict is the last configuration
 * reached, or an error when none was.
 */
export function verifyChain(own: Membership, ownIndex: number, proofs: readonly string[], sender: NodeId, verify: MembershipProofs['verify']): ChainVerdict {
  const statements: MembershipStatement[] = [];
  const failures: string[] = [];
  /** appendedOnly: indexes after ownIndex with an appended statement and (so far) no commit statement. */
  const appended = new Set<number>();
  for (const p of proofs) {
    const s = verify(p);
    if (s instanceof Error) failures.push(s.message.slice(0, 200));
    else if (s.index <= ownIndex) continue;
    else if (s.committed === true) statements.push(s);
    else appended.add(s.index);
  }
  for (const s of statements) appended.delete(s.index);
  if (appended.size > 0) {
    const shown = [...appended].sort((a, b) => a - b).slice(0, 4);
    failures.push(`the entr${appended.size === 1 ? 'y' : 'ies'} at ${shown.join(', ')}${appended.size > shown.length ? ', ...' : ''} carr${appended.size === 1 ? 'ies' : 'y'} an appended statement and no commit statement (not known committed; or from a build before commit statements)`);
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

/**
 * attestationTarget: what this node, leading with commit index `commit`, should sign a commit statement of: the
 * newest appended statement among `proofs` (its configuration's as of `commit`: Raft.membershipAt(commit), every
 * one from an entry of its own committed log) at or below `commit` that has no commit statement of the same index
 * and term among them signed by a voter of the configuration before it (where known); null when there is none (all attested, or no appended statement). One a round: older ones
 * left unattested (a leader fell before it attested them) are taken after the newer. The statements are read, not
 * verified: they come from this node's own committed log (an expired signer's certificate does not make its entry
 * any less committed).
 */
export function attestationTarget(proofs: readonly string[], commit: number): ProofToSign | null {
  const appended: SignedStatement[] = [];
  const commitStatements: SignedStatement[] = [];
  for (const p of proofs) {
    const s = readStatement(p);
    if (s === null || s.index > commit) continue;
    if (s.committed === true) commitStatements.push(s);
    else appended.push(s);
  }
  // A commit statement counts as done only when verifyChain would take it as a link: signed by a voter of the
  // configuration before its entry (the newest appended statement below it, where the proofs still hold one). A new
  // member that led next and attested its own add signed one no receiver takes: a leader of the configuration before
  // signs again (commitproof30's finding: else that link stayed unusable until it aged out of the proofs).
  const committed = new Set<string>();
  for (const c of commitStatements) {
    let before: SignedStatement | null = null;
    for (const a of appended) if (a.index < c.index && (before === null || a.index > before.index || (a.index === before.index && a.term > before.term))) before = a;
    if (before !== null && !before.voters.includes(c.signer)) continue;
    committed.add(`${c.index}/${c.term}`);
  }
  let newest: SignedStatement | null = null;
  for (const s of appended) {
    if (committed.has(`${s.index}/${s.term}`)) continue;
    if (newest === null || s.index > newest.index || (s.index === newest.index && s.term > newest.term)) newest = s;
  }
  if (newest === null) return null;
  return { index: newest.index, term: newest.term, voters: newest.voters, learners: newest.learners, committed: true };
}
