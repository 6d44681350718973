/**
 * followerInstall: mocha hooks for a test of a follower's install of a
 * fetched snapshot: before each test a MemoryStorage holding one key at
 * applied index 3 and a SnapshotManager over a temp dir; closed and removed
 * after it. The returned object's fields are set once the hook has run.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { silentLogger } from '../../../src/node/logger.js';
import { systemClock } from '../../../src/node/clock.js';
import { DEFAULT_SNAPSHOT_POLICY, SnapshotManager } from '../../../src/node/snapshots.js';
import { MemoryStorage } from '../../../src/storage/memory-storage.js';

const FOLLOWER_MEMBERSHIP = { voters: ['n1', 'n2', 'n3'], learners: [], addresses: { n1: '127.0.0.1:7001', n2: '127.0.0.1:7002', n3: '127.0.0.1:7003' } };

export interface FollowerInstall {
  storage: MemoryStorage;
  sm: SnapshotManager;
}

export function followerInstall(prefix: string): FollowerInstall {
  const ctx = {} as FollowerInstall & { dir: string };
  beforeEach(async () => {
    ctx.dir = await mkdtemp(join(tmpdir(), prefix));
    ctx.storage = await MemoryStorage.open();
    await ctx.storage.installState([[{ key: new TextEncoder().encode('own/a'), value: new TextEncoder().encode('1') }]], { appliedIndex: 3, membership: FOLLOWER_MEMBERSHIP });
    ctx.sm = await SnapshotManager.open(ctx.dir, ctx.storage, { ...DEFAULT_SNAPSHOT_POLICY, snapshotEntries: 1_000_000 }, silentLogger, 'test', systemClock);
  });
  afterEach(async () => {
    await ctx.sm.close();
    await ctx.storage.close();
    await rm(ctx.dir, { recursive: true, force: true });
  });
  return ctx;
}
