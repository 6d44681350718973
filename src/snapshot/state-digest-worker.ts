/**
 * The state digest worker (state-digest.ts, startWorkerStateDigest): a
 * localStateDigest on this thread, driven by the parent's messages in order.
 * A wanted member's bytes are copied into memory of their own and moved to
 * the parent (the member buffers here are reused).
 *
 * Its dead Buffers are bounded as a node's main thread bounds its own
 * (ExternalMemoryGc): zlib hands each member over in fresh 112 KiB pieces,
 * copied out and dropped, a GB of them per delta of a 1 GB state, and V8
 * left alone collected them once 64 MiB had gathered: 6-37 MiB of
 * ArrayBuffers in this isolate during a delta (issue 15, bench:snapshot-
 * cluster 1M x 1 KiB, sampled), in the glibc heap they were allocated from.
 * Here the bound is checked as each member is done (every ~1 MiB of output),
 * not on a timer: a scavenge of this isolate's small heap is cheap. And each
 * piece is noted dead once copied (garbageMade): a scavenge every 4 MiB of
 * them, so a few MiB of pieces are dead at a time, not the bound's 16 MiB,
 * and glibc hands their memory to the next ones instead of growing its heap
 * (the process's heap grew ~35 MiB over 4 deltas of a 1M x 1 KiB base
 * without it, ~18 with it).
 */
import { parentPort } from 'node:worker_threads';

import { ExternalMemoryGc, v8Probe } from './external-memory-gc.js';
import { DIGEST_WORKER_BLOCK_BYTES, errorReply, localStateDigest, type DigestReply, type DigestRequest } from './state-digest.js';
import { nodeSnapshotIo } from './snapshot-io.js';
import type { InstallReadControl, InstallReadReply } from './install-read.js';
import type { InstallReadJob } from './install-read-job.js';

const port = parentPort;
if (port === null) throw new Error('state-digest-worker.ts runs only as a worker thread');
const memory = new ExternalMemoryGc(v8Probe());
// Each zlib piece is noted dead once copied: a scavenge every GARBAGE_SCAVENGE_BYTES_DEFAULT of them.
const digest = localStateDigest(nodeSnapshotIo, DIGEST_WORKER_BLOCK_BYTES, (bytes) => memory.garbageMade(bytes));
const reply = (m: DigestReply, transfer: ArrayBuffer[] = []): void => port.postMessage(m, transfer);
const hashed = (): void => reply({ t: 'hashed' });
const asBuffer = (u: Uint8Array): Buffer => Buffer.from(u.buffer, u.byteOffset, u.length);

/** installJob: this thread's install read (install-read.ts), once asked; its module is loaded then, not by a delta's digest. */
let installJob: Promise<InstallReadJob> | null = null;

port.on('message', (m: DigestRequest | InstallReadControl) => {
  try {
    switch (m.t) {
      case 'installRead':
        installJob = import('./install-read-job.js').then((j) =>
          j.runInstallRead(
            m,
            (r: InstallReadReply, transfer: ArrayBuffer[] = []) => port.postMessage(r, transfer),
            (bytes) => {
              memory.garbageMade(bytes);
              memory.check();
            },
          ),
        );
        installJob.catch((err: unknown) => port.postMessage({ t: 'installError', error: { kind: 'other', code: null, message: (err as Error).message, offset: 0, errno: null } } satisfies InstallReadReply));
        break;
      case 'installCredit':
        void installJob?.then((j) => j.credit(m.buffer instanceof ArrayBuffer ? m.buffer : null));
        break;
      case 'inflate': {
        const entry = { stateBytes: m.stateBytes, keys: m.keys, firstKey: asBuffer(m.firstKey), compressedBytes: m.compressed.length };
        digest.inflate(asBuffer(m.compressed), entry, m.want).then(
          ({ lastKey, state }) => {
            memory.check();
            // Copies of exactly these bytes: a view posted as it is clones all the memory it lies in.
            const key = new Uint8Array(lastKey);
            if (state === null) {
              reply({ t: 'inflated', id: m.id, lastKey: key, state: null }, [key.buffer]);
              return;
            }
            const moved = new Uint8Array(new ArrayBuffer(state.length));
            moved.set(state);
            digest.release(state);
            reply({ t: 'inflated', id: m.id, lastKey: key, state: moved }, [key.buffer, moved.buffer]);
          },
          (err: unknown) => reply(errorReply(m.id, err)),
        );
        break;
      }
      case 'hashMember':
        digest.hashMember().then(hashed, (err: unknown) => reply(errorReply(null, err)));
        break;
      case 'hashBlock':
        digest.hashBlock(asBuffer(m.block)).then(hashed, (err: unknown) => reply(errorReply(null, err)));
        break;
      case 'digest':
        digest.digest().then(
          (hex) => reply({ t: 'digest', hex, gc: { scavenges: memory.scavenges, garbageScavenges: memory.garbageScavenges, collections: memory.collections } }),
          (err: unknown) => reply(errorReply(null, err)),
        );
        break;
    }
  } catch (err) {
    reply(errorReply(null, err));
  }
});
