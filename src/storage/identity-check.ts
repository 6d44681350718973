import { StorageError } from './storage-error.js';
import { FORMAT_VERSION, type Identity } from './types.js';

/**
 * checkIdentityMatch throws unless `stored` is the identity `expected` asks
 * for. Errors: StorageError `unknownFormat` (either formatVersion is not
 * FORMAT_VERSION), `identityMismatch` (nodeId or clusterId differ). The
 * message names the data dir and both values.
 */
export function checkIdentityMatch(stored: Identity, expected: Identity, dataDir: string): void {
  for (const [who, identity] of [
    ['data dir', stored],
    ['caller', expected],
  ] as const) {
    if (identity.formatVersion !== FORMAT_VERSION) {
      throw new StorageError(
        'unknownFormat',
        `data dir ${dataDir}: ${who} has format version ${identity.formatVersion}; this build reads only ${FORMAT_VERSION}`,
        { path: dataDir },
      );
    }
  }
  if (stored.nodeId !== expected.nodeId || stored.clusterId !== expected.clusterId) {
    throw new StorageError(
      'identityMismatch',
      `data dir ${dataDir} belongs to node ${JSON.stringify(stored.nodeId)} of cluster ${JSON.stringify(stored.clusterId)}, ` +
        `not node ${JSON.stringify(expected.nodeId)} of cluster ${JSON.stringify(expected.clusterId)}`,
      { path: dataDir },
    );
  }
}

/** missingIdentity is the error for a data dir with no identity that may not be created here. */
export function missingIdentity(dataDir: string, isNew: boolean): StorageError {
  return new StorageError(
    'identityMismatch',
    isNew
      ? `data dir ${dataDir} has no identity (new data dir; pass createIfNew to initialise it)`
      : `data dir ${dataDir} holds data but no identity; refusing to adopt it`,
    { path: dataDir },
  );
}

/** parseIdentity decodes stored identity JSON, throwing StorageError `corrupt` when it is not an Identity. */
export function parseIdentity(text: string, dataDir: string): Identity {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new StorageError('corrupt', `data dir ${dataDir}: identity is not JSON`, { path: dataDir, cause: err });
  }
  const v = value as Partial<Record<keyof Identity, unknown>> | null;
  if (
    v === null ||
    typeof v !== 'object' ||
    typeof v.nodeId !== 'string' ||
    typeof v.clusterId !== 'string' ||
    typeof v.formatVersion !== 'number'
  ) {
    throw new StorageError('corrupt', `data dir ${dataDir}: identity is malformed: ${text.slice(0, 200)}`, {
      path: dataDir,
    });
  }
  return { nodeId: v.nodeId, clusterId: v.clusterId, formatVersion: v.formatVersion };
}
