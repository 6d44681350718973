/**
 * The benches run snapcoord from dist/ (what an installed snapcoord runs:
 * compiled JavaScript, no TypeScript loader), built from this tree at the
 * bench's start. A member started under tsx compiles its modules with
 * esbuild as it loads them (~1-2 s of CPU at start-up, and again for every
 * module loaded later), which on a 2-core machine shared by three members
 * and the bench client shows up as write pauses that are the loader's, not
 * the server's.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { bundleCli, warmCodeCache } from '../../scripts/bundle-cli.js';
import { REPO_ROOT } from '../../test/harness/child.js';

/** DIST_CLI: the built CLI's entry (`node DIST_CLI serve …`). */
export const DIST_CLI = join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');

/**
 * buildDist builds dist/ from this tree as `npm run build` does: tsc (the
 * project's tsconfig), then the one-file bundle of the client commands and
 * its code cache (scripts/bundle-cli.ts). A type error still emits
 * JavaScript: then dist/ is used anyway (said through `log`) unless nothing
 * was emitted.
 */
export async function buildDist(log: (line: string) => void): Promise<void> {
  log('building dist/ (tsc, then the bundle of the client commands, as `npm run build` does)');
  try {
    await promisify(execFile)(process.execPath, [join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: REPO_ROOT, maxBuffer: 16 << 20 });
  } catch (err) {
    if (!existsSync(DIST_CLI)) throw err;
    const e = err as { stdout?: string; message: string };
    log(`tsc reported errors; using the emitted dist/ anyway: ${(e.stdout ?? e.message).slice(0, 300)}`);
  }
  const cliDir = join(REPO_ROOT, 'dist', 'src', 'cli');
  await bundleCli(join(cliDir, 'program.js'), cliDir);
  if (!(await warmCodeCache(DIST_CLI))) log('no code cache of the bundle was written: client commands start without it');
}
