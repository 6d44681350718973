import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { isRetryableWriteError, retryWrite } from '../../../src/client/retry-write.js';

function failure(code: grpc.status): grpc.ServiceError {
  return Object.assign(new Error(grpc.status[code]), { code, details: grpc.status[code], metadata: new grpc.Metadata() });
}

describe('client: retryWrite', () => {
  it('retries UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED and RESOURCE_EXHAUSTED until the write succeeds, telling onRetry each time', async () => {
    const codes = [grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED, grpc.status.ABORTED, grpc.status.RESOURCE_EXHAUSTED];
    const told: number[] = [];
    const result = await retryWrite(
      (n) => {
        const code = codes[n - 1];
        return code === undefined ? Promise.resolve(`ok after ${n}`) : Promise.reject(failure(code));
      },
      { attempts: 5, backoffMs: 1, onRetry: (_err, n) => told.push(n) },
    );
    assert.equal(result, 'ok after 5');
    assert.deepEqual(told, [1, 2, 3, 4]);
  });

  it('does not retry a failure after which the write surely did not apply (INVALID_ARGUMENT, FAILED_PRECONDITION, ...)', async () => {
    for (const code of [grpc.status.INVALID_ARGUMENT, grpc.status.FAILED_PRECONDITION, grpc.status.PERMISSION_DENIED, grpc.status.UNAUTHENTICATED]) {
      let calls = 0;
      await assert.rejects(
        retryWrite(() => {
          calls++;
          return Promise.reject(failure(code));
        }, { attempts: 4, backoffMs: 1 }),
        (err: grpc.ServiceError) => err.code === code,
      );
      assert.equal(calls, 1, grpc.status[code]);
      assert.equal(isRetryableWriteError(failure(code)), false);
    }
    assert.equal(isRetryableWriteError(new Error('no code')), false);
  });

  it('gives up after `attempts` calls with the last error', async () => {
    let calls = 0;
    await assert.rejects(
      retryWrite(() => Promise.reject(failure(++calls === 3 ? grpc.status.ABORTED : grpc.status.UNAVAILABLE)), { attempts: 3, backoffMs: 1 }),
      (err: grpc.ServiceError) => err.code === grpc.status.ABORTED,
    );
    assert.equal(calls, 3);
  });
});
