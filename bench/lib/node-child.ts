/**
 * runAsNodeChild: this bench script run again, as `--role ROLE`, in a process started as a node is (the V8 flags
 * and malloc environment of src/cli/node-runtime.ts): what bench/full-snapshot.ts and bench/delta-snapshot.ts
 * measure in a fresh process. Returns its stdout (stderr passes through); throws if it fails.
 */
import { spawnSync } from 'node:child_process';

import { NODE_V8_FLAGS, nodeProcessEnv } from '../../src/cli/node-runtime.js';

export function runAsNodeChild(role: string, extra: readonly string[]): string {
  const r = spawnSync(process.execPath, [...NODE_V8_FLAGS, '--import', 'tsx', process.argv[1] as string, ...process.argv.slice(2), '--role', role, ...extra], {
    env: nodeProcessEnv(process.env),
    stdio: ['ignore', 'pipe', 'inherit'],
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`${role} exited with ${r.status ?? r.signal}`);
  return r.stdout;
}
