/**
 * x509: @peculiar/x509, ready to use on Node's WebCrypto. Import the library
 * through this file only: @peculiar/x509 resolves its algorithms with
 * tsyringe, which needs the `Reflect` metadata polyfill loaded before it
 * (ESM evaluates sibling imports in order, so 'reflect-metadata' comes first),
 * and its crypto provider must be set once.
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export { x509 };

/** subtle: Node's WebCrypto SubtleCrypto (the one @peculiar/x509 signs with). */
export const subtle = webcrypto.subtle;
