import { open } from 'node:fs/promises';

/**
 * flipByte changes one byte in the middle of a file in place (XOR `mask`),
 * as a disk that rots would: the file keeps its size, its other bytes and
 * whatever hashes were recorded of it.
 */
export async function flipByte(file: string, mask = 0xff): Promise<void> {
  const h = await open(file, 'r+');
  try {
    const at = Math.floor((await h.stat()).size / 2);
    const b = Buffer.alloc(1);
    await h.read(b, 0, 1, at);
    b[0] = (b[0] ?? 0) ^ mask;
    await h.write(b, 0, 1, at);
  } finally {
    await h.close();
  }
}
