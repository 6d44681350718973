import assert from 'node:assert/strict';
import { RequestIds } from '../../../src/client/request-ids.js';

describe('client: RequestIds', () => {
  it('hands out serial request ids from 1 under one client id', () => {
    const ids = new RequestIds('cli-test');
    assert.deepEqual([ids.next(), ids.next(), ids.next()], [1n, 2n, 3n].map((requestId) => ({ clientId: 'cli-test', requestId })));
  });

  it('gives two writers two different client ids by default', () => {
    const a = new RequestIds();
    const b = new RequestIds();
    assert.match(a.clientId, /^c-[0-9a-f-]{36}$/);
    assert.notEqual(a.clientId, b.clientId);
  });
});
