// Guards the ESLint rules that keep src/raft pure and the layers pointing one
// way (DESIGN.md), so the guard cannot silently rot.
import assert from 'node:assert/strict';
import { ESLint } from 'eslint';

const eslint = new ESLint({ cwd: process.cwd() });

async function ruleIds(filePath: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath });
  assert.ok(result, 'ESLint returned no result');
  const fatal = result.messages.filter((m) => m.fatal);
  assert.deepEqual(fatal, [], 'snippet failed to parse');
  return result.messages.filter((m) => m.severity === 2).map((m) => m.ruleId ?? '');
}

describe('eslint guard', () => {
  it('rejects node:*, packages, other layers, Date, Math.random and timers in src/raft', async () => {
    const ids = await ruleIds(
      'src/raft/x.ts',
      [
        "import { readFileSync } from 'node:fs';",
        "import pino from 'pino';",
        "import type { LogStore } from '../storage/log-store.js';",
        'export function f(s: LogStore): number {',
        '  void readFileSync; void pino; void s;',
        '  setTimeout(() => {}, 1);',
        '  return Date.now() + Math.random() + new Date().getTime() + process.pid;',
        '}',
      ].join('\n'),
    );
    const count = (id: string) => ids.filter((i) => i === id).length;
    assert.equal(count('no-restricted-imports'), 3, `imports: ${ids.join(', ')}`);
    assert.ok(count('no-restricted-properties') >= 1, `Math.random / Date.now: ${ids.join(', ')}`);
    // Date (twice), setTimeout, process
    assert.ok(count('no-restricted-globals') >= 4, `globals: ${ids.join(', ')}`);
  });

  it('allows relative imports that stay inside src/raft', async () => {
    assert.deepEqual(
      await ruleIds('src/raft/x.ts', "import type { Entry } from './types.js';\nexport type E = Entry;\n"),
      [],
    );
    assert.deepEqual(
      await ruleIds('src/raft/roles/leader.ts', "import type { Entry } from '../types.js';\nexport type E = Entry;\n"),
      [],
    );
    assert.deepEqual(
      await ruleIds('src/raft/roles/leader.ts', "import type { X } from '../../storage/x.js';\nexport type E = X;\n"),
      ['no-restricted-imports'],
    );
  });

  it('keeps the layers pointing one way', async () => {
    const snippet = (path: string) => `import type { X } from '${path}';\nexport type Y = X;\n`;
    assert.deepEqual(await ruleIds('src/storage/x.ts', snippet('../node/driver.js')), ['no-restricted-imports']);
    assert.deepEqual(await ruleIds('src/node/x.ts', snippet('../api/kv.js')), ['no-restricted-imports']);
    assert.deepEqual(await ruleIds('src/api/x.ts', snippet('../gateway/routes.js')), ['no-restricted-imports']);
    assert.deepEqual(await ruleIds('src/gateway/x.ts', snippet('../client/kv-client.js')), []);
    assert.deepEqual(await ruleIds('src/node/x.ts', snippet('../raft/types.js')), []);
  });
  it('keeps the driver on the clock and randomness it is given (src/node), except in the two real implementations', async () => {
    const code = [
      "import { randomBytes } from 'node:crypto';",
      "import { setTimeout as sleep } from 'node:timers/promises';",
      'export async function f(): Promise<number> {',
      '  void randomBytes; await sleep(1);',
      '  setTimeout(() => {}, 1); setInterval(() => {}, 1); setImmediate(() => {});',
      '  return Date.now() + Math.random() + performance.now() + new Date().getTime();',
      '}',
    ].join('\n');
    const ids = await ruleIds('src/node/x.ts', code);
    const count = (id: string) => ids.filter((i) => i === id).length;
    assert.equal(count('no-restricted-imports'), 2, `imports: ${ids.join(', ')}`);
    assert.ok(count('no-restricted-properties') >= 2, `Math.random / Date.now: ${ids.join(', ')}`);
    assert.ok(count('no-restricted-globals') >= 5, `globals: ${ids.join(', ')}`);
    assert.deepEqual(await ruleIds('src/node/clock.ts', 'export const nowMs = (): number => performance.now() + Date.now();\n'), []);
    assert.deepEqual(await ruleIds('src/node/crypto-rng.ts', "import { randomInt } from 'node:crypto';\nexport const r = (): number => randomInt(10);\n"), []);
    // The layer rule still holds in the same block.
    assert.deepEqual(await ruleIds('src/node/x.ts', "import type { X } from '../ops/tasks.js';\nexport type Y = X;\n"), ['no-restricted-imports']);
  });
  it('keeps the middle of the house: the bottom floor apart, ops and api over the driver, the client side through src/client', async () => {
    const snippet = (path: string) => `import type { X } from '${path}';\nexport type Y = X;\n`;
    const refused = async (file: string, path: string) => assert.deepEqual(await ruleIds(file, snippet(path)), ['no-restricted-imports'], `${file} -> ${path}`);
    const allowed = async (file: string, path: string) => assert.deepEqual(await ruleIds(file, snippet(path)), [], `${file} -> ${path}`);
    // storage, snapshot and transport do not import each other; fsm stays under the driver.
    await refused('src/storage/x.ts', '../snapshot/store.js');
    await refused('src/snapshot/x.ts', '../storage/types.js');
    await refused('src/snapshot/x.ts', '../fsm/sessions.js');
    await refused('src/transport/x.ts', '../snapshot/store.js');
    await refused('src/fsm/x.ts', '../node/node.js');
    await refused('src/storage/x.ts', '../fsm/state-machine.js');
    await refused('src/api/x.ts', '../storage/rocks-storage.js');
    await allowed('src/api/x.ts', '../fsm/types.js');
    await refused('src/api/x.ts', '../gateway/gateway.js');
    await allowed('src/fsm/x.ts', '../raft/types.js');
    // ops: over the driver, never the API or the process.
    await refused('src/ops/x.ts', '../api/server.js');
    await allowed('src/ops/x.ts', '../node/node.js');
    // The client library is a leaf; the gateway reaches the cluster only through it.
    await refused('src/client/x.ts', '../api/server.js');
    await refused('src/client/x.ts', '../node/node.js');
    await allowed('src/client/x.ts', '../gen/snapcoord/v1/kv.js');
    await refused('src/gateway/x.ts', '../api/kv-service.js');
    await refused('src/gateway/x.ts', '../node/disk-guard.js');
    await refused('src/gateway/x.ts', '../ops/task-queue.js');
    await allowed('src/gateway/x.ts', '../client/kv-client.js');
    // CLI client commands use src/client; only the entry points wire a node.
    await refused('src/cli/x.ts', '../node/node.js');
    await refused('src/cli/x.ts', '../api/server.js');
    await refused('src/cli/bench/x.ts', '../../storage/rocks.js');
    await refused('src/cli/x.ts', '../ops/task-queue.js');
    await allowed('src/cli/x.ts', '../ops/s3.js');
    await allowed('src/cli/x.ts', '../client/kv-client.js');
    await allowed('src/cli/serve.ts', '../node/node.js');
    await allowed('src/cli/local.ts', '../api/server.js');
  });
});
