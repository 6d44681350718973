import assert from 'node:assert/strict';
import { StorageError } from '../../../src/storage/storage-error.js';

/** rejectsWith asserts that `promise` rejects with a StorageError of `code` (and a message matching `pattern`). */
export async function rejectsWith(promise: Promise<unknown>, code: string, pattern?: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof StorageError, `expected StorageError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (pattern !== undefined) assert.match(err.message, pattern);
    return true;
  });
}
