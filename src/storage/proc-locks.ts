import { readFile } from 'node:fs/promises';

/**
 * lockedInodes returns the inodes that hold a POSIX or flock lock anywhere on
 * this machine (Linux /proc/locks), or null where that is not known. RocksDB
 * holds an fcntl lock on <db>/LOCK for as long as the database is open, by
 * this process or another; /proc/locks shows both.
 */
export async function lockedInodes(): Promise<Set<bigint> | null> {
  let text: string;
  try {
    text = await readFile('/proc/locks', 'utf8');
  } catch {
    return null;
  }
  const out = new Set<bigint>();
  for (const line of text.split('\n')) {
    // "1: POSIX  ADVISORY  WRITE 8690 fe:00:2146373 0 EOF" (blocked waiters start with "1: ->")
    const m = /\s([0-9a-f]+):([0-9a-f]+):(\d+)\s/.exec(line);
    if (m?.[3] !== undefined) out.add(BigInt(m[3]));
  }
  return out;
}
