/**
 * GatedIo (tests): nodeSnapshotIo whose gzip and gunzip wait while closed, so
 * a snapshot being made can be held part way (snapshot-supersede.spec,
 * serve-stop.spec).
 */
import { nodeSnapshotIo, type SnapshotIo } from '../../../src/snapshot/snapshot-io.js';

/** GatedIo: nodeSnapshotIo whose gzip and gunzip (a delta compressing its changed members) wait while the gate is closed. */
export class GatedIo {
  closed = false;
  /** waiting: calls held at the gate now. */
  waiting = 0;
  #open: (() => void)[] = [];
  readonly io: SnapshotIo = {
    ...nodeSnapshotIo,
    gzip: async (bytes, options) => {
      await this.#pass();
      return nodeSnapshotIo.gzip(bytes, options);
    },
    gunzip: async (bytes, options) => {
      await this.#pass();
      return nodeSnapshotIo.gunzip(bytes, options);
    },
  };
  async #pass(): Promise<void> {
    if (!this.closed) return;
    this.waiting++;
    await new Promise<void>((r) => this.#open.push(r));
    this.waiting--;
  }
  open(): void {
    this.closed = false;
    for (const r of this.#open.splice(0)) r();
  }
}
