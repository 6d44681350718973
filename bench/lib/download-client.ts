/**
 * download-client: bench/download-memory.ts's client process. `download-client.ts ADDRESS ID P` downloads
 * snapshot ID from ADDRESS (plaintext, no key: the bench's in-process node) P times at once, reading as fast as
 * it can and keeping nothing; exits 1 when a download fails or comes back short.
 */
import * as grpc from '@grpc/grpc-js';

import { SnapshotServiceClient, type GetSnapshotResponse } from '../../src/gen/snapcoord/v1/snapshot.js';

async function main(): Promise<void> {
  const [address, id, p] = process.argv.slice(2);
  if (address === undefined || id === undefined) throw new Error('usage: download-client.ts ADDRESS ID [P]');
  const c = new SnapshotServiceClient(address, grpc.credentials.createInsecure(), { 'grpc.max_receive_message_length': 8 << 20 });
  try {
    await Promise.all(
      Array.from({ length: Number(p ?? 1) }, async () => {
        let size = -1;
        let bytes = 0;
        for await (const m of c.getSnapshot({ stale: true, id, offset: 0n, length: 0n }) as AsyncIterable<GetSnapshotResponse>) {
          if (m.info !== undefined) size = Number(m.info.sizeBytes);
          if (m.data !== undefined) bytes += m.data.length;
        }
        if (bytes !== size) throw new Error(`downloaded ${bytes} of ${size} bytes`);
      }),
    );
  } finally {
    c.close();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
