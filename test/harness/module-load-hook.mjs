// module-load-hook.mjs: a module customization hook (node:module register) that prints "module-load <url>"
// on stderr for every module loaded, for tests of what a command loads (log-module-loads.ts registers it).
import process from 'node:process';

export async function load(url, context, nextLoad) {
  process.stderr.write(`module-load ${url}\n`);
  return nextLoad(url, context);
}
