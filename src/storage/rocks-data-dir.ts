import { RocksDb } from './rocks.js';
import { RocksStorage } from './rocks-storage.js';

/**
 * rocksDataDir is the RocksDB side of a data directory as the operator jobs
 * see it (src/ops DataDirStorage; the process wiring passes it): `open`
 * opens (creating when new) the node storage of the data dir `dir`;
 * `lockHeld` probes whether a process holds the RocksDB lock of the
 * database at `dir` by opening it without creating it and closing it at
 * once (true when the open fails for its lock; any other failure, e.g. no
 * database there, is false). The probe cannot see a lock this process holds
 * under another path, and closing it would drop such a lock (POSIX locks are
 * per process): callers prefer /proc/locks where it can be read.
 */
export const rocksDataDir = {
  open: (dir: string): Promise<RocksStorage> => RocksStorage.open(dir),
  async lockHeld(dir: string): Promise<boolean> {
    try {
      const db = await RocksDb.open(dir, { createIfMissing: false });
      await db.close();
      return false;
    } catch (err) {
      return /lock/i.test((err as Error).message);
    }
  },
};
