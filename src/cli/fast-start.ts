/**
 * Fast start of the client commands (snapshot, kv, cluster, tasks): most of a
 * save of an unchanged state was the CLI's start-up, and most of that was
 * loading and compiling ~130 modules (grpc-js alone 68 files). The build
 * (scripts/bundle-cli.ts) writes program.ts and everything it loads as one
 * CommonJS file beside main.js (BUNDLE_FILE); main.ts runs such a command
 * from it with V8's code cache of that file (CODE_CACHE_FILE), which skips
 * the compilation of every function the cache holds.
 *
 * Only node: built-ins here: main.ts loads this module before anything else.
 * Without the bundle (running from the sources, or a dist/ compiled again
 * after it was bundled: a bundle older than main.js may hold older code), for
 * any other command, or with a cache V8 rejects (another Node version or V8
 * flags), the command runs as before: from program.js, or from the bundle
 * compiled afresh; a missing or rejected cache is written again at exit when
 * the directory is writable.
 */
import { accessSync, constants as fsConstants, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Script } from 'node:vm';

/** BUNDLE_FILE: program.ts and what it loads, one CommonJS file, beside main.js. */
export const BUNDLE_FILE = 'program.bundle.cjs';

/** CODE_CACHE_FILE: V8's code cache of BUNDLE_FILE, beside it. */
export const CODE_CACHE_FILE = `${BUNDLE_FILE}.cache`;

/** BUNDLE_COMMANDS: the top-level commands run from the bundle (clients: no server, worker thread or native module). */
export const BUNDLE_COMMANDS: readonly string[] = ['snapshot', 'kv', 'cluster', 'tasks'];

/** firstWord: the first word of `argv` (process.argv: node, script, words) that is not an option: the command. */
export function firstWord(argv: readonly string[]): string | undefined {
  return argv.slice(2).find((w) => !w.startsWith('-'));
}

/** BundleExports: what the bundle exports (program.ts). */
interface BundleExports {
  runCli?: () => void;
}

/**
 * startFromBundle runs the command `argv` names from the bundle beside
 * `entryUrl` (main.js's import.meta.url) and returns true; false, having run
 * nothing, when the command is not one of BUNDLE_COMMANDS or there is no
 * bundle as new as the entry.
 */
export function startFromBundle(entryUrl: string, argv: readonly string[] = process.argv): boolean {
  if (!BUNDLE_COMMANDS.includes(firstWord(argv) ?? '')) return false;
  const entry = fileURLToPath(entryUrl);
  const dir = dirname(entry);
  const bundle = join(dir, BUNDLE_FILE);
  let source: string;
  try {
    if (statSync(bundle).mtimeMs < statSync(entry).mtimeMs) return false;
    source = readFileSync(bundle, 'utf8');
  } catch {
    return false;
  }
  const cacheFile = join(dir, CODE_CACHE_FILE);
  let cachedData: Buffer | undefined;
  try {
    cachedData = readFileSync(cacheFile);
  } catch {
    cachedData = undefined;
  }
  // The wrapper of a CommonJS module, on the bundle's first line (its line numbers stay those of the file).
  // The bundle holds no import() (the build turns those into require()), so no loader for them is asked for.
  const script = new Script(`(function (exports, require, module, __filename, __dirname) {${source}\n})`, {
    filename: bundle,
    ...(cachedData !== undefined ? { cachedData } : {}),
  });
  if (cachedData === undefined || script.cachedDataRejected === true) keepCodeCacheAtExit(script, cacheFile);
  const module = { exports: {} as BundleExports };
  (script.runInThisContext() as (...args: unknown[]) => void).call(module.exports, module.exports, createRequire(bundle), module, bundle, dir);
  if (typeof module.exports.runCli !== 'function') throw new Error(`${bundle} exports no runCli: rebuild it (npm run build)`);
  module.exports.runCli();
  return true;
}

/**
 * keepCodeCacheAtExit writes the script's code cache to `file` when the
 * process exits (then it holds every function the command compiled), by a
 * rename, so that a concurrent CLI reads a whole file or none. Nothing when
 * the directory is not writable.
 */
function keepCodeCacheAtExit(script: Script, file: string): void {
  try {
    accessSync(dirname(file), fsConstants.W_OK);
  } catch {
    return;
  }
  process.once('exit', () => {
    const tmp = `${file}.${process.pid}.tmp`;
    try {
      writeFileSync(tmp, script.createCachedData());
      renameSync(tmp, file);
    } catch {
      try {
        unlinkSync(tmp);
      } catch {
        // nothing written
      }
    }
  });
}
