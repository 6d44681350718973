/**
 * Deliberately broken variants of the Raft core, each breaking one rule the
 * paper depends on, run inside the real node (NodeOptions.testOnlyBugs.core,
 * `npm run sim -- --broken-core NAME`), and of the simulated disk's state
 * image import (SimStorageOptions.brokenImport, `npm run sim --
 * --broken-image-import NAME`; ignoresRecordsDigest with
 * `--lying-image-export`). The simulator must catch every one of them
 * (negative controls: a checker that cannot fail is worth nothing).
 */
import { createHash } from 'node:crypto';

import { RaftNode, type HardState, type RaftBootState, type RaftConfig, type VoteRequest } from '../../src/raft/index.js';
import type { StateImageChunk, StateImageSource } from '../../src/storage/state-image.js';

/** BrokenCore: a RaftNode subclass the node runs instead of the core. */
export type BrokenCore = new (config: RaftConfig, boot: RaftBootState) => RaftNode;

/** CommitsEarlierTerms counts replicas to commit entries of earlier terms (breaks Raft §5.4.2, Figure 8). */
class CommitsEarlierTerms extends RaftNode {
  protected override isCommittable(index: number): boolean {
    return this.log.term(index) !== undefined;
  }
}

/** VotesTwice grants a vote to any up-to-date candidate, even after voting in the term (breaks Raft §5.2). */
class VotesTwice extends RaftNode {
  protected override canGrantVote(m: VoteRequest): boolean {
    return this.log.isUpToDate(m.lastLogIndex, m.lastLogTerm);
  }
}

/** ForgetsVote never persists its vote, so a restarted node may vote again in the same term (breaks Raft §5.2 / Figure 2). */
class ForgetsVote extends RaftNode {
  protected override hardStateToPersist(): HardState {
    return { ...this.hardState(), vote: '' };
  }
}

/** IgnoresLogCheck grants votes without the up-to-date check (breaks Raft §5.4.1, Leader Completeness). */
class IgnoresLogCheck extends RaftNode {
  protected override canGrantVote(m: VoteRequest): boolean {
    return this.vote === m.from || this.vote === '' || (m.preVote && m.term > this.term);
  }
}

/** BROKEN_CORES: every broken core by name. */
export const BROKEN_CORES: Readonly<Record<string, BrokenCore>> = {
  commitsEarlierTerms: CommitsEarlierTerms,
  votesTwice: VotesTwice,
  forgetsVote: ForgetsVote,
  ignoresLogCheck: IgnoresLogCheck,
};

/** BrokenImageImport: how a state image import is broken. */
export interface BrokenImageImport {
  /** source: what it does to the source it is given before it checks it. */
  readonly source?: (source: StateImageSource) => Promise<StateImageSource>;
  /** ignoresRecords: it leaves out the records check it is asked for (ImportImageOptions.verifyRecords). */
  readonly ignoresRecords?: boolean;
}

/**
 * trustsReceivedBytes checks each file of an image against the SHA-256 of
 * the bytes it received rather than the manifest's (the chunks read whole
 * first): a chunk changed on the way is taken as sent.
 */
async function trustsReceivedBytes(source: StateImageSource): Promise<StateImageSource> {
  const chunks: StateImageChunk[] = [];
  const hashes = source.files.map(() => createHash('sha256'));
  for await (const c of source.chunks) {
    chunks.push(c);
    hashes[c.file]?.update(c.data);
  }
  return {
    files: source.files.map((f, i) => ({ ...f, sha256: (hashes[i] as ReturnType<typeof createHash>).digest() })),
    chunks: (async function* () {
      yield* chunks;
    })(),
  };
}

/**
 * BROKEN_IMAGE_IMPORTS: every broken state image import by name.
 * - trustsReceivedBytes: see above;
 * - ignoresRecordsDigest: takes an image whose files are whole without
 *   checking its records against the restore entry's records digest: caught
 *   with exporters that lie (NodeControls.lyingImageExport: an image with
 *   one value changed, files and manifest consistent).
 */
export const BROKEN_IMAGE_IMPORTS: Readonly<Record<string, BrokenImageImport>> = {
  trustsReceivedBytes: { source: trustsReceivedBytes },
  ignoresRecordsDigest: { ignoresRecords: true },
};
