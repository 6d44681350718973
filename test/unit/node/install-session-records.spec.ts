/**
 * A follower's install of a fetched snapshot writes the archive's state
 * straight into its store (SnapshotManager.install -> StateStore.installState),
 * not through the state machine, which decodes the client session records
 * only when it opens on the state. A snapshot holding a session record that
 * does not decode (found by test/unit/node/install-fuzz.spec.ts, seed 5100000)
 * was installed, and then the state machine failed at the node's next apply
 * and at every restart (StorageError `corrupt`). It is refused at install now,
 * as content (StorageError `invalidArgument`: the node asks its leader again),
 * the state unchanged.
 */
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';

import { StateMachine } from '../../../src/fsm/state-machine.js';
import { encodeClientSession, SESSION_CLIENTS_MAX, sessionKey } from '../../../src/fsm/sessions.js';
import { StorageError } from '../../../src/storage/storage-error.js';
import { goodEntries, rawState, tarGz } from '../snapshot/helpers.js';
import { followerInstall } from './follower-install.js';

const enc = new TextEncoder();

describe('a follower installs a snapshot whose session records the state machine cannot read', function () {
  this.timeout(20_000);
  const f = followerInstall('snapcoord-install-sessions-');

  const install = async (recs: { key: Buffer; value: Buffer }[]): Promise<void> => {
    const sorted = [...recs].sort((a, b) => Buffer.compare(a.key, b.key)); // in key order, as state.bin must be
    const archive = await tarGz(goodEntries(rawState(sorted), sorted.length).entries);
    await f.sm.install(await f.sm.store.importArchive(Readable.from([archive]), { maxBytes: 1e8 }));
  };
  const session = (clientId: string, value?: Uint8Array): { key: Buffer; value: Buffer } => ({
    key: Buffer.from(sessionKey(clientId)),
    value: Buffer.from(value ?? encodeClientSession({ clientId, lastIndex: 10, floorSeq: 0, results: [{ seq: 1, index: 10 }] })),
  });

  for (const [name, record, message] of [
    ['a client id that is not printable ASCII', () => session('\x00\xff'), /session record of client "\\u0000ÿ": client id must be printable ASCII/],
    ['a value of an unknown version', () => session('t:c1', Uint8Array.from([9, ...new Uint8Array(18)])), /session record of client "t:c1": unknown version 9/],
    ['a truncated value', () => session('t:c1', new Uint8Array(5)), /session record of client "t:c1": truncated/],
  ] as const) {
    it(`refuses ${name}: the state unchanged, the state machine opens and applies`, async () => {
      const before = await f.storage.stateDigest();
      await assert.rejects(
        install([session('t:c0'), record(), { key: Buffer.from('k/a'), value: Buffer.from('v') }]),
        (e: unknown) => e instanceof StorageError && e.code === 'invalidArgument' && message.test(e.message),
      );
      assert.equal(await f.storage.stateDigest(), before);
      assert.equal(f.storage.appliedIndex(), 3);
      const fsm = await StateMachine.open(f.storage); // what a restart does
      assert.equal(await fsm.get(enc.encode('own/a')).then((v) => Buffer.from(v ?? []).toString()), '1');
    });
  }

  it(`refuses more than SESSION_CLIENTS_MAX (${SESSION_CLIENTS_MAX}) session records; installs one with valid ones`, async () => {
    const many = Array.from({ length: SESSION_CLIENTS_MAX + 1 }, (_, i) => session(`t:c${String(i).padStart(6, '0')}`));
    await assert.rejects(install(many), (e: unknown) => e instanceof StorageError && e.code === 'invalidArgument' && /more than \d+ session records/.test(e.message));
    assert.equal(f.storage.appliedIndex(), 3);
    await install([session('t:c0'), { key: Buffer.from('k/a'), value: Buffer.from('v') }]);
    assert.equal(f.storage.appliedIndex(), 42);
    const fsm = await StateMachine.open(f.storage);
    assert.equal(fsm.lookupSession({ clientId: 't:c0', seq: 1 }).kind, 'seen');
  });
});
