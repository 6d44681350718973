/** toApiError: the one mapping from node, storage and command errors to gRPC status codes. */
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { toApiError } from '../../../src/api/api-error.js';
import { ERROR_CODE_METADATA_KEY, LEADER_METADATA_KEY } from '../../../src/client/error-metadata.js';
import { NodeError, type NodeErrorCode } from '../../../src/node/errors.js';
import { KvCommandError } from '../../../src/fsm/kv-command.js';
import { StorageError } from '../../../src/storage/storage-error.js';

describe('api: toApiError', () => {
  const cases: [NodeErrorCode, grpc.status][] = [
    ['timeout', grpc.status.DEADLINE_EXCEEDED],
    ['lost', grpc.status.ABORTED],
    ['busy', grpc.status.RESOURCE_EXHAUSTED],
    ['invalid', grpc.status.INVALID_ARGUMENT],
    ['shuttingDown', grpc.status.UNAVAILABLE],
    ['unavailable', grpc.status.UNAVAILABLE],
  ];
  for (const [code, status] of cases) {
    it(`NodeError ${code} -> ${grpc.status[status]}`, () => {
      const e = toApiError(new NodeError(code, 'why'));
      assert.equal(e.code, status);
      assert.equal(e.details, 'why');
    });
  }

  it('notLeader -> FAILED_PRECONDITION naming the leader, with x-snapcoord-leader trailer', () => {
    const e = toApiError(new NodeError('notLeader', 'x', 'n2', '127.0.0.1:7002'));
    assert.equal(e.code, grpc.status.FAILED_PRECONDITION);
    assert.equal(e.details, 'not the leader; the leader is n2 at 127.0.0.1:7002');
    assert.deepEqual(e.metadata.get(LEADER_METADATA_KEY), ['n2@127.0.0.1:7002']);
  });

  it('notLeader with no leader known -> UNAVAILABLE', () => {
    assert.equal(toApiError(new NodeError('notLeader', 'x')).code, grpc.status.UNAVAILABLE);
  });

  it('bad commands and storage arguments -> INVALID_ARGUMENT; a closed store -> UNAVAILABLE; others INTERNAL', () => {
    assert.equal(toApiError(new KvCommandError('emptyKey', 'k')).code, grpc.status.INVALID_ARGUMENT);
    assert.equal(toApiError(new StorageError('invalidArgument', 's')).code, grpc.status.INVALID_ARGUMENT);
    assert.equal(toApiError(new StorageError('closed', 's')).code, grpc.status.UNAVAILABLE);
    assert.equal(toApiError(new StorageError('io', 's')).code, grpc.status.INTERNAL);
    assert.equal(toApiError(new Error('boom')).code, grpc.status.INTERNAL);
  });

  it('a forwarded call\'s ServiceError keeps its code, details and x-snapcoord-* trailers only', () => {
    const md = new grpc.Metadata();
    md.set(LEADER_METADATA_KEY, 'n3@h:1');
    md.set('content-type', 'application/grpc');
    const e = toApiError(Object.assign(new Error('x'), { code: grpc.status.ABORTED, details: 'lost', metadata: md }));
    assert.equal(e.code, grpc.status.ABORTED);
    assert.equal(e.details, 'lost');
    assert.deepEqual(Object.keys(e.metadata.getMap()), [LEADER_METADATA_KEY]);
  });

  it('a full disk (NodeError diskFull, an ENOSPC, RocksDB out of space) -> RESOURCE_EXHAUSTED disk_full', () => {
    const enospc = Object.assign(new Error("ENOSPC: no space left on device, write '/d/state.bin'"), { code: 'ENOSPC', syscall: 'write' });
    const rocks = new StorageError('io', 'rocksdb: put failed on /d: IO error: No space left on device: While appending to file: /d/000012.log', {
      cause: new Error('IO error: No space left on device'),
    });
    for (const err of [new NodeError('diskFull', 'disk full: 1.0 MiB free on /d'), enospc, rocks]) {
      const e = toApiError(err);
      assert.equal(e.code, grpc.status.RESOURCE_EXHAUSTED, err.message);
      assert.equal(e.details, err.message);
      assert.deepEqual(e.metadata.get(ERROR_CODE_METADATA_KEY), ['disk_full']);
    }
    // A node that failed for lack of space is unavailable, not "retry when space is back".
    assert.equal(toApiError(new NodeError('unavailable', 'the node failed: IO error: No space left on device')).code, grpc.status.UNAVAILABLE);
    assert.deepEqual(toApiError(new NodeError('busy', 'too many')).metadata.get(ERROR_CODE_METADATA_KEY), []);
  });
});
