import { readFileSync } from 'node:fs';

/** SNAPCOORD_VERSION is the package version, read once from package.json (works from src via tsx and from dist). */
export const SNAPCOORD_VERSION: string = (() => {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'snapcoord' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // try the next location
    }
  }
  return '0.0.0';
})();
