/**
 * sha256 / sha256Hex: the SHA-256 of bytes (or of a string's UTF-8) in one
 * call: crypto.hash where Node has it (20.12 and later), no Hash object made
 * (~1 against ~4 µs for small inputs hashed whole: chunk-hash files, member
 * tables, tar members, API keys); createHash otherwise. Same digests either
 * way. src/hash is a bottom layer (packages only), shared by src/snapshot and
 * src/auth.
 */
import crypto from 'node:crypto';

export function sha256(data: Uint8Array | string): Buffer {
  if (typeof crypto.hash === 'function') return crypto.hash('sha256', data, 'buffer');
  return crypto.createHash('sha256').update(data).digest();
}

export function sha256Hex(data: Uint8Array | string): string {
  if (typeof crypto.hash === 'function') return crypto.hash('sha256', data, 'hex');
  return crypto.createHash('sha256').update(data).digest('hex');
}
