// Guards the ESLint rule that keeps src/tls a bottom layer (node:*, @grpc/grpc-js and the x509 library only).
import assert from 'node:assert/strict';
import { ESLint } from 'eslint';

const eslint = new ESLint({ cwd: process.cwd() });

async function ruleIds(filePath: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath });
  assert.ok(result, 'ESLint returned no result');
  assert.deepEqual(result.messages.filter((m) => m.fatal), [], 'snippet failed to parse');
  return result.messages.filter((m) => m.severity === 2).map((m) => m.ruleId ?? '');
}

describe('eslint guard: src/tls is a bottom layer', function () {
  this.timeout(60_000);
  const snippet = (path: string): string => `import type { X } from '${path}';\nexport type Y = X;\n`;

  it('refuses imports of the layers above it', async () => {
    for (const layer of ['node', 'api', 'gateway', 'cli', 'storage', 'snapshot', 'transport', 'raft', 'client', 'gen']) {
      assert.deepEqual(await ruleIds('src/tls/x.ts', snippet(`../${layer}/x.js`)), ['no-restricted-imports'], layer);
    }
  });

  it('allows its own files, node modules and packages', async () => {
    assert.deepEqual(await ruleIds('src/tls/x.ts', snippet('./names.js')), []);
    assert.deepEqual(await ruleIds('src/tls/x.ts', snippet('node:tls')), []);
    assert.deepEqual(await ruleIds('src/tls/x.ts', snippet('@grpc/grpc-js')), []);
    assert.deepEqual(await ruleIds('src/cli/x.ts', snippet('../tls/index.js')), []);
  });
});
