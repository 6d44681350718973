import assert from 'node:assert/strict';

import { boundClientId } from '../../../src/api/bound-client-id.js';
import { CLIENT_ID_CHARS_MAX, sessionStampProblem } from '../../../src/fsm/sessions.js';

describe('boundClientId: a client id as recorded, bound to the API key that sent it', () => {
  it('the same key and client id give the same id on every call; another key another one; every form is a valid client id', () => {
    const short = boundClientId('key-a', 'c-1');
    assert.match(short, /^[A-Za-z0-9_-]{8}:c-1$/);
    assert.equal(boundClientId('key-a', 'c-1'), short);
    assert.notEqual(boundClientId('key-b', 'c-1'), short);
    assert.ok(!short.includes('key-a'));
    const fits = 'x'.repeat(CLIENT_ID_CHARS_MAX - 9);
    assert.equal(boundClientId('', fits).length, CLIENT_ID_CHARS_MAX);
    // Too long to fit beside the tag: its digest instead (still one per key and client id).
    const long = 'y'.repeat(CLIENT_ID_CHARS_MAX);
    const bound = boundClientId('key-a', long);
    assert.match(bound, /^[A-Za-z0-9_-]{8}#[A-Za-z0-9_-]{43}$/);
    assert.notEqual(boundClientId('key-a', `${long.slice(1)}z`), bound);
    assert.notEqual(boundClientId('key-b', long), bound);
    for (const id of [short, boundClientId('', fits), bound]) assert.equal(sessionStampProblem({ clientId: id, seq: 1 }), null, id);
  });
});
