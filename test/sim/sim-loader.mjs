// The module hooks of a sim worker thread (registered by node-worker-boot.mjs): TypeScript compiled by
// esbuild as tsx does it (same target, same compiler options, inline source maps), but without tsx's
// keepNames, which wraps every function and class the code creates in a __name() call (a defineProperty
// each: ~4% of a seed's CPU in a profile of seeds 1-300). The names are the same without it: a file
// compiled alone, neither bundled nor minified, has nothing renamed. An import of './x.js' that does not
// exist is resolved to './x.ts' (TypeScript's nodenext convention, as tsx does).
import { readFileSync } from 'node:fs';
import process from 'node:process';
import { URL, fileURLToPath } from 'node:url';

import { transformSync } from 'esbuild';

const { compilerOptions } = JSON.parse(readFileSync(new URL('../../tsconfig.json', import.meta.url), 'utf8'));

export async function resolve(specifier, context, next) {
  try {
    return await next(specifier, context);
  } catch (err) {
    if (err?.code !== 'ERR_MODULE_NOT_FOUND' || !specifier.endsWith('.js') || context.parentURL?.endsWith('.ts') !== true) throw err;
    return next(`${specifier.slice(0, -3)}.ts`, context);
  }
}

export async function load(url, context, next) {
  if (!url.startsWith('file:') || !url.endsWith('.ts')) return next(url, context);
  const path = fileURLToPath(url);
  const { code } = transformSync(readFileSync(path, 'utf8'), {
    loader: 'ts',
    format: 'esm',
    target: `node${process.versions.node}`,
    sourcemap: 'inline',
    sourcefile: path,
    tsconfigRaw: { compilerOptions },
  });
  return { format: 'module', source: code, shortCircuit: true };
}
