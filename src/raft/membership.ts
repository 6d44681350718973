import type { ConfChange, Membership, NodeId } from './types.js';

/**
 * MEMBERSHIP_IDS_MAX, NODE_ID_CHARS_MAX, MEMBER_ADDRESS_CHARS_MAX: the limits
 * every membership keeps: at most MEMBERSHIP_IDS_MAX voters and as many
 * learners, twice that many addresses, node ids of at most NODE_ID_CHARS_MAX
 * characters and addresses of at most MEMBER_ADDRESS_CHARS_MAX. A snapshot's
 * meta.json holding more is refused (src/snapshot/archive-meta.ts), a change
 * that would pass them is refused when proposed (validateConfChange), and so
 * is a membership beyond them that a peer sends (src/transport/codec.ts).
 */
export const MEMBERSHIP_IDS_MAX = 1000;
export const NODE_ID_CHARS_MAX = 256;
export const MEMBER_ADDRESS_CHARS_MAX = 1024;
/**
 * MEMBERSHIP_PROOFS_MAX, MEMBERSHIP_PROOF_CHARS_MAX: a membership carries the
 * proofs of its last MEMBERSHIP_PROOFS_MAX configuration entries (older ones
 * are dropped as new ones come), each of at most MEMBERSHIP_PROOF_CHARS_MAX
 * characters; a conf entry whose proof is longer keeps its change and drops
 * the proof.
 */
export const MEMBERSHIP_PROOFS_MAX = 16;
export const MEMBERSHIP_PROOF_CHARS_MAX = 8192;
/**
 * MEMBERSHIP_PROOFS_CHARS_TOTAL_MAX: the most characters a membership's proofs
 * hold together. applyConfChange drops the oldest beyond it (the newest, at most
 * MEMBERSHIP_PROOF_CHARS_MAX, always fits). Without it 16 proofs of a large
 * configuration (or of big RSA certificates) reach 128 KiB, past an archive's
 * meta.json cap (META_BYTES_MAX, 64 KiB): every snapshot would fail to write.
 */
export const MEMBERSHIP_PROOFS_CHARS_TOTAL_MAX = 32 * 1024;

/** newestProofsWithinBudget: the newest of `proofs` (oldest first) that fit MEMBERSHIP_PROOFS_MAX and MEMBERSHIP_PROOFS_CHARS_TOTAL_MAX together. */
function newestProofsWithinBudget(proofs: readonly string[]): readonly string[] {
  let total = 0;
  let from = proofs.length;
  while (from > 0 && proofs.length - from < MEMBERSHIP_PROOFS_MAX) {
    const next = total + (proofs[from - 1]?.length ?? 0);
    if (next > MEMBERSHIP_PROOFS_CHARS_TOTAL_MAX) break;
    total = next;
    from--;
  }
  return from === 0 ? proofs : proofs.slice(from);
}

/** membershipOverLimits: which of the limits above m passes (a sentence naming it), or null when it keeps them all. */
export function membershipOverLimits(m: Membership): string | null {
  for (const [what, ids] of [['voters', m.voters], ['learners', m.learners]] as const) {
    if (ids.length > MEMBERSHIP_IDS_MAX) return `membership.${what}: ${ids.length} ids, more than MEMBERSHIP_IDS_MAX (${MEMBERSHIP_IDS_MAX})`;
    for (const id of ids) {
      if (id.length > NODE_ID_CHARS_MAX) return `membership.${what}: an id of ${id.length} characters, more than NODE_ID_CHARS_MAX (${NODE_ID_CHARS_MAX})`;
    }
  }
  const proofs = m.proofs ?? [];
  if (proofs.length > MEMBERSHIP_PROOFS_MAX) return `membership.proofs: ${proofs.length} proofs, more than MEMBERSHIP_PROOFS_MAX (${MEMBERSHIP_PROOFS_MAX})`;
  for (const p of proofs) {
    if (p.length > MEMBERSHIP_PROOF_CHARS_MAX) return `membership.proofs: a proof of ${p.length} characters, more than MEMBERSHIP_PROOF_CHARS_MAX (${MEMBERSHIP_PROOF_CHARS_MAX})`;
  }
  const addresses = Object.entries(m.addresses);
  if (addresses.length > 2 * MEMBERSHIP_IDS_MAX) return `membership.addresses: ${addresses.length} entries, more than 2 * MEMBERSHIP_IDS_MAX (${2 * MEMBERSHIP_IDS_MAX})`;
  for (const [id, address] of addresses) {
    if (id.length > NODE_ID_CHARS_MAX) return `membership.addresses: an id of ${id.length} characters, more than NODE_ID_CHARS_MAX (${NODE_ID_CHARS_MAX})`;
    if (address.length > MEMBER_ADDRESS_CHARS_MAX) return `membership.addresses: an address of ${address.length} characters, more than MEMBER_ADDRESS_CHARS_MAX (${MEMBER_ADDRESS_CHARS_MAX})`;
  }
  return null;
}

/** MembershipChangeError: a ConfChange that cannot be applied to the current membership. */
export class MembershipChangeError extends Error {
  override readonly name = 'MembershipChangeError';
}

export function isVoter(m: Membership, id: NodeId): boolean {
  return m.voters.includes(id);
}

export function isMember(m: Membership, id: NodeId): boolean {
  return m.voters.includes(id) || m.learners.includes(id);
}

export function members(m: Membership): NodeId[] {
  return [...m.voters, ...m.learners];
}

/** quorum: the number of voters that makes a majority (Raft §5.2). */
export function quorum(m: Membership): number {
  return Math.floor(m.voters.length / 2) + 1;
}

/**
 * validateConfChange throws MembershipChangeError when cc makes no sense
 * against m: adding a voter twice, demoting a voter to learner, removing an
 * unknown node or the last voter; or when the membership after it would pass
 * the limits every membership keeps (MEMBERSHIP_IDS_MAX, NODE_ID_CHARS_MAX,
 * MEMBER_ADDRESS_CHARS_MAX).
 */
export function validateConfChange(m: Membership, cc: ConfChange): void {
  if (cc.nodeId === '') throw new MembershipChangeError('node id is empty');
  if (cc.op === 'attest') throw new MembershipChangeError('an attest entry is no membership change (the leader appends it: Raft.proposeAttestation)');
  if (cc.op !== 'removeNode') {
    if (cc.nodeId.length > NODE_ID_CHARS_MAX) throw new MembershipChangeError(`node id: ${cc.nodeId.length} characters, more than NODE_ID_CHARS_MAX (${NODE_ID_CHARS_MAX})`);
    if ((cc.address ?? '').length > MEMBER_ADDRESS_CHARS_MAX) {
      throw new MembershipChangeError(`address: ${(cc.address ?? '').length} characters, more than MEMBER_ADDRESS_CHARS_MAX (${MEMBER_ADDRESS_CHARS_MAX})`);
    }
  }
  switch (cc.op) {
    case 'addVoter':
      if (isVoter(m, cc.nodeId)) throw new MembershipChangeError(`${cc.nodeId} is already a voter`);
      if (m.voters.length >= MEMBERSHIP_IDS_MAX) throw new MembershipChangeError(`the membership has ${m.voters.length} voters, MEMBERSHIP_IDS_MAX`);
      return;
    case 'addLearner':
      if (isVoter(m, cc.nodeId)) throw new MembershipChangeError(`${cc.nodeId} is a voter; remove it before adding it as a learner`);
      if (m.learners.includes(cc.nodeId)) throw new MembershipChangeError(`${cc.nodeId} is already a learner`);
      if (m.learners.length >= MEMBERSHIP_IDS_MAX) throw new MembershipChangeError(`the membership has ${m.learners.length} learners, MEMBERSHIP_IDS_MAX`);
      return;
    case 'removeNode':
      if (!isMember(m, cc.nodeId)) throw new MembershipChangeError(`${cc.nodeId} is not a member`);
      if (m.voters.length === 1 && m.voters[0] === cc.nodeId) throw new MembershipChangeError('cannot remove the last voter');
      return;
  }
}

/**
 * applyConfChange returns the membership after cc. It is total (never throws):
 * entries in the log are applied as they are, whatever was validated when
 * they were proposed. A learner added as a voter is promoted.
 */
export function applyConfChange(m: Membership, cc: ConfChange): Membership {
  if (cc.op === 'attest') {
    // No member changes; the proof (a commit statement) joins the configuration's proofs.
    if (cc.proof === undefined) return m;
    return { voters: m.voters, learners: m.learners, addresses: m.addresses, proofs: newestProofsWithinBudget([...(m.proofs ?? []), cc.proof]) };
  }
  const voters = m.voters.filter((v) => v !== cc.nodeId);
  const learners = m.learners.filter((v) => v !== cc.nodeId);
  const addresses: Record<NodeId, string> = { ...m.addresses };
  switch (cc.op) {
    case 'addVoter':
      voters.push(cc.nodeId);
      break;
    case 'addLearner':
      learners.push(cc.nodeId);
      break;
    case 'removeNode':
      delete addresses[cc.nodeId];
      break;
    // 'attest' returned above.
  }
  if (cc.op !== 'removeNode' && cc.address !== undefined && cc.address !== '') addresses[cc.nodeId] = cc.address;
  // Removing the last voter would leave a cluster that can never make progress.
  if (voters.length === 0) return m;
  const proofs = cc.proof === undefined ? (m.proofs ?? []) : newestProofsWithinBudget([...(m.proofs ?? []), cc.proof]);
  return proofs.length === 0 ? { voters, learners, addresses } : { voters, learners, addresses, proofs };
}

/** sameMembership: the same voters, learners and addresses, whatever their order. */
export function sameMembership(a: Membership, b: Membership): boolean {
  return membershipKey(a) === membershipKey(b);
}

function membershipKey(m: Membership): string {
  const addresses = Object.entries(m.addresses).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return JSON.stringify([[...m.voters].sort(), [...m.learners].sort(), addresses]);
}

/** wellFormedMembership: at least one voter, no empty id, and no id twice (a voter is not also a learner). */
export function wellFormedMembership(m: Membership): boolean {
  const ids = [...m.voters, ...m.learners];
  return m.voters.length > 0 && ids.every((id) => id !== '') && new Set(ids).size === ids.length;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/** encodeConfChange serialises a ConfChange into the data of a `conf` entry. */
export function encodeConfChange(cc: ConfChange): Uint8Array {
  const o = { op: cc.op, nodeId: cc.nodeId, address: cc.address ?? '' };
  return encoder.encode(JSON.stringify(cc.proof === undefined ? o : { ...o, proof: cc.proof }));
}

/** decodeConfChange parses the data of a `conf` entry; throws MembershipChangeError when it is malformed. */
export function decodeConfChange(data: Uint8Array): ConfChange {
  let v: unknown;
  try {
    v = JSON.parse(decoder.decode(data));
  } catch {
    throw new MembershipChangeError('conf entry is not valid JSON');
  }
  if (typeof v !== 'object' || v === null) throw new MembershipChangeError('conf entry is not an object');
  const o = v as Record<string, unknown>;
  // 'attest' (a commit statement, no change) is unknown to builds before it: they skip it as malformed.
  if (o.op !== 'addVoter' && o.op !== 'addLearner' && o.op !== 'removeNode' && o.op !== 'attest') {
    throw new MembershipChangeError(`conf entry has unknown op ${String(o.op)}`);
  }
  if (typeof o.nodeId !== 'string' || o.nodeId === '') throw new MembershipChangeError('conf entry has no nodeId');
  const address = typeof o.address === 'string' && o.address !== '' ? o.address : undefined;
  const cc: ConfChange = address === undefined ? { op: o.op, nodeId: o.nodeId } : { op: o.op, nodeId: o.nodeId, address };
  // A proof that is not a string of the allowed length is dropped, the change kept: only vouching reads proofs.
  return typeof o.proof === 'string' && o.proof !== '' && o.proof.length <= MEMBERSHIP_PROOF_CHARS_MAX ? { ...cc, proof: o.proof } : cc;
}

/** decodeConfChangeOrNull: like decodeConfChange, but a malformed entry is skipped (null) rather than fatal. */
export function decodeConfChangeOrNull(data: Uint8Array): ConfChange | null {
  try {
    return decodeConfChange(data);
  } catch {
    return null;
  }
}
