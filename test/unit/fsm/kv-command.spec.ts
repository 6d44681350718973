import assert from 'node:assert/strict';

import {
  BATCH_OPS_MAX,
  COMMAND_BYTES_MAX,
  decodeCommand,
  encodeCommand,
  KEY_BYTES_MAX,
  KvCommandError,
  VALUE_BYTES_MAX,
  type KvCommand,
} from '../../../src/fsm/kv-command.js';

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

function throwsCode(fn: () => unknown, code: string, pattern?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof KvCommandError, `expected KvCommandError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (pattern !== undefined) assert.match(err.message, pattern);
    return true;
  });
}

describe('kv-command codec', () => {
  it('exports the documented limits', () => {
    assert.equal(KEY_BYTES_MAX, 4096);
    assert.equal(VALUE_BYTES_MAX, 1024 * 1024);
  });

  it('round-trips put, delete and batch, with binary keys and values', () => {
    const commands: KvCommand[] = [
      { op: 'put', key: Uint8Array.of(0, 255, 7), value: Uint8Array.of(0, 0, 1) },
      { op: 'put', key: bytes('empty-value'), value: new Uint8Array(0) },
      { op: 'delete', key: bytes('gone') },
      { op: 'batch', ops: [] },
      {
        op: 'batch',
        ops: [
          { op: 'put', key: bytes('a'), value: bytes('1') },
          { op: 'delete', key: bytes('b') },
        ],
      },
    ];
    for (const command of commands) {
      const decoded = decodeCommand(encodeCommand(command));
      assert.deepEqual(JSON.stringify(decoded, (_k, v: unknown) => (v instanceof Uint8Array ? [...v] : v)),
        JSON.stringify(command, (_k, v: unknown) => (v instanceof Uint8Array ? [...v] : v)));
    }
  });

  it('is compact: a put costs 7 bytes of framing', () => {
    assert.equal(encodeCommand({ op: 'put', key: bytes('key'), value: bytes('value') }).length, 7 + 3 + 5);
    assert.equal(encodeCommand({ op: 'delete', key: bytes('key') }).length, 3 + 3);
  });

  it('accepts keys and values at the limits, refuses one byte more on encode and decode', () => {
    const key = new Uint8Array(KEY_BYTES_MAX).fill(1);
    const value = new Uint8Array(VALUE_BYTES_MAX).fill(2);
    const ok = decodeCommand(encodeCommand({ op: 'put', key, value }));
    assert.equal(ok.op === 'put' && ok.value.length, VALUE_BYTES_MAX);

    throwsCode(() => encodeCommand({ op: 'put', key: new Uint8Array(KEY_BYTES_MAX + 1), value }), 'keyTooLong', /4097 bytes, more than 4096/);
    throwsCode(() => encodeCommand({ op: 'put', key, value: new Uint8Array(VALUE_BYTES_MAX + 1) }), 'valueTooLong');
    throwsCode(() => encodeCommand({ op: 'delete', key: new Uint8Array(0) }), 'emptyKey');

    // hand-made oversize frames
    const longKey = new Uint8Array(3 + KEY_BYTES_MAX + 1);
    longKey[0] = 0x02;
    new DataView(longKey.buffer).setUint16(1, KEY_BYTES_MAX + 1);
    throwsCode(() => decodeCommand(longKey), 'keyTooLong');
    const longValue = Uint8Array.of(0x01, 0, 1, 0x61, 0, 0x10, 0, 1);
    throwsCode(() => decodeCommand(longValue), 'valueTooLong', /1048577 bytes/);
    throwsCode(() => decodeCommand(new Uint8Array(COMMAND_BYTES_MAX + 1)), 'tooLarge');
  });

  it('refuses truncated input at every cut with a clear error', () => {
    const full = encodeCommand({
      op: 'batch',
      ops: [
        { op: 'put', key: bytes('key'), value: bytes('value') },
        { op: 'delete', key: bytes('k2') },
      ],
    });
    for (let cut = 0; cut < full.length; cut++) {
      throwsCode(() => decodeCommand(full.subarray(0, cut)), 'truncated', /truncated at byte \d+: .* needs \d+ bytes/);
    }
  });

  it('refuses unknown ops, nested batches, trailing bytes and oversize batches', () => {
    throwsCode(() => decodeCommand(Uint8Array.of(0x09)), 'unknownOp', /0x09 at byte 0/);
    throwsCode(() => decodeCommand(Uint8Array.of(0x03, 0, 0, 0, 1, 0x03, 0, 0, 0, 0)), 'unknownOp', /at byte 5/);
    throwsCode(() => decodeCommand(Uint8Array.of(0x02, 0, 1, 0x61, 0xee)), 'trailingBytes');
    throwsCode(() => decodeCommand(Uint8Array.of(0x03, 0xff, 0xff, 0xff, 0xff)), 'tooManyOps');
    const ops = Array.from({ length: BATCH_OPS_MAX + 1 }, () => ({ op: 'delete' as const, key: bytes('k') }));
    throwsCode(() => encodeCommand({ op: 'batch', ops }), 'tooManyOps');
    throwsCode(() => decodeCommand(Uint8Array.of(0x02, 0, 0)), 'emptyKey');
  });

  it('decodes views into the input without copying', () => {
    const encoded = encodeCommand({ op: 'put', key: bytes('k'), value: bytes('v') });
    const decoded = decodeCommand(encoded);
    assert.ok(decoded.op === 'put');
    assert.equal(decoded.value.buffer, encoded.buffer);
  });
});

describe('prefixEnd', () => {
  it('does not modify the caller\'s prefix, even a Buffer', async () => {
    const { prefixEnd } = await import('../../../src/storage/key-range.js');
    const prefix = Buffer.from('r/');
    const end = prefixEnd(prefix);
    assert.equal(Buffer.from(prefix).toString(), 'r/');
    assert.equal(Buffer.from(end ?? []).toString(), 'r0');
  });
});
