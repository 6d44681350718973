import type { ConfChange, Membership, NodeId } from './types.js';

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
 * unknown node or the last voter.
 */
export function validateConfChange(m: Membership, cc: ConfChange): void {
  if (cc.nodeId === '') throw new MembershipChangeError('node id is empty');
  switch (cc.op) {
    case 'addVoter':
      if (isVoter(m, cc.nodeId)) throw new MembershipChangeError(`${cc.nodeId} is already a voter`);
      return;
    case 'addLearner':
      if (isVoter(m, cc.nodeId)) throw new MembershipChangeError(`${cc.nodeId} is a voter; remove it before adding it as a learner`);
      if (m.learners.includes(cc.nodeId)) throw new MembershipChangeError(`${cc.nodeId} is already a learner`);
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
  }
  if (cc.op !== 'removeNode' && cc.address !== undefined && cc.address !== '') addresses[cc.nodeId] = cc.address;
  // Removing the last voter would leave a cluster that can never make progress.
  if (voters.length === 0) return m;
  return { voters, learners, addresses };
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
  return encoder.encode(JSON.stringify({ op: cc.op, nodeId: cc.nodeId, address: cc.address ?? '' }));
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
  if (o.op !== 'addVoter' && o.op !== 'addLearner' && o.op !== 'removeNode') {
    throw new MembershipChangeError(`conf entry has unknown op ${String(o.op)}`);
  }
  if (typeof o.nodeId !== 'string' || o.nodeId === '') throw new MembershipChangeError('conf entry has no nodeId');
  const address = typeof o.address === 'string' && o.address !== '' ? o.address : undefined;
  return address === undefined ? { op: o.op, nodeId: o.nodeId } : { op: o.op, nodeId: o.nodeId, address };
}

/** decodeConfChangeOrNull: like decodeConfChange, but a malformed entry is skipped (null) rather than fatal. */
export function decodeConfChangeOrNull(data: Uint8Array): ConfChange | null {
  try {
    return decodeConfChange(data);
  } catch {
    return null;
  }
}
