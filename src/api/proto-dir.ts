import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** PROTO_FILES: the public and internal protos, relative to the proto dir. */
export const PROTO_FILES = [
  'snapcoord/v1/raft.proto',
  'snapcoord/v1/kv.proto',
  'snapcoord/v1/cluster.proto',
  'snapcoord/v1/snapshot.proto',
] as const;

/**
 * protoDir finds `<package root>/proto`: it walks up from this module's file
 * to the directory whose package.json names "snapcoord", so it works from
 * src/api (tsx) and from dist/src/api alike. Throws when it finds none.
 */
export function protoDir(from: string = import.meta.url): string {
  let dir = dirname(fileURLToPath(from));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && existsSync(join(dir, 'proto'))) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: unknown }).name === 'snapcoord') return join(dir, 'proto');
      } catch {
        // not our package.json: keep walking up
      }
    }
    const up = dirname(dir);
    if (up === dir) throw new Error(`cannot find the snapcoord proto directory above ${fileURLToPath(from)}`);
    dir = up;
  }
}
