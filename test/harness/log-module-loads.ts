/**
 * log-module-loads: given to a CLI child as a `nodeImports` module, makes it
 * print "module-load <url>" on stderr for every module it loads (through
 * module-load-hook.mjs), so a test can check what a command loads.
 */
import { register } from 'node:module';

register('./module-load-hook.mjs', import.meta.url);

/** loadedModules: the URLs a child's stderr names as loaded (see the file comment). */
export function loadedModules(stderr: string): string[] {
  return [...stderr.matchAll(/^module-load (\S+)$/gm)].map((m) => m[1] as string);
}
