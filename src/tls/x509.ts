/**
 * x509: @peculiar/x509, loaded on first use and ready to use on Node's
 * WebCrypto. Reach the library through x509() only:
 * - it resolves its algorithms with tsyringe, which needs the `Reflect`
 *   metadata polyfill loaded before it, and its crypto provider must be set
 *   once;
 * - loading it costs a few hundred milliseconds, which every CLI command
 *   would pay at start if it were a static import; only issuing and reading
 *   SANs need it.
 */
import { webcrypto } from 'node:crypto';
import { createRequire } from 'node:module';
import type * as X509 from '@peculiar/x509';

export type { X509 };

let loaded: typeof X509 | null = null;

/** x509 returns the @peculiar/x509 module, loading it (after reflect-metadata) and setting its crypto provider the first time. */
export function x509(): typeof X509 {
  if (loaded === null) {
    const load = createRequire(import.meta.url);
    load('reflect-metadata');
    const lib = load('@peculiar/x509') as typeof X509;
    lib.cryptoProvider.set(webcrypto as unknown as Parameters<typeof lib.cryptoProvider.set>[0]);
    loaded = lib;
  }
  return loaded;
}

/** subtle: Node's WebCrypto SubtleCrypto (the one @peculiar/x509 signs with). */
export const subtle = webcrypto.subtle;
