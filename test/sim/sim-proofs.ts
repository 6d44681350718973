/**
 * SimMembershipProofs: the simulator's model of members' signed
 * configuration proofs (src/node/membership-proofs.ts; in production
 * src/tls/membership-proof.ts signs with the peer certificate's key). Here a
 * member signs as itself only: its "signature" is a SHA-256 keyed with a
 * secret of its own id that only the simulated cluster knows, and verify
 * recomputes it. The statement and its bytes are production's
 * (statementBytes, parseStatement), both kinds: appended, and committed
 * (signed by a leader once the entry commits, carried by an `attest` entry);
 * only the key material is modelled.
 */
import { createHash } from 'node:crypto';
import { parseStatement, statementArray, statementBytes, type ProofToSign, type SignedStatement } from '../../src/tls/membership-proof.js';

const SCHEME = 'sim.';

function mac(signer: string, s: SignedStatement): string {
  return createHash('sha256').update(`simulated key of ${signer}\n`).update(statementBytes(s)).digest('base64url');
}

export class SimMembershipProofs {
  constructor(
    private readonly selfId: string,
    private readonly clusterId = 'sim',
  ) {}

  /** sign: as production's (X509MembershipProofs.sign): an appended statement, or with `committed` a commit statement (its own bytes). */
  sign(s: ProofToSign): string {
    const base: SignedStatement = { clusterId: this.clusterId, index: s.index, term: s.term, voters: [...s.voters], learners: [...s.learners], signer: this.selfId };
    const st: SignedStatement = s.committed === true ? { ...base, committed: true } : base;
    const body = { s: statementArray(st), mac: mac(this.selfId, st) };
    return SCHEME + Buffer.from(JSON.stringify(body), 'utf8').toString('base64url');
  }

  verify(proof: string): SignedStatement | Error {
    try {
      if (!proof.startsWith(SCHEME)) return new Error('not a simulated proof');
      const body = JSON.parse(Buffer.from(proof.slice(SCHEME.length), 'base64url').toString('utf8')) as { s?: unknown; mac?: unknown };
      const s = parseStatement(body.s);
      if (s.clusterId !== this.clusterId) return new Error('another cluster\'s proof');
      if (body.mac !== mac(s.signer, s)) return new Error(`the signature of ${s.signer}'s proof does not hold`);
      return s;
    } catch (e) {
      return e instanceof Error ? e : new Error(String(e));
    }
  }
}
