import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';

import { configReference } from '../../../src/cli/config-reference.js';
import { SERVE_OPTIONS } from '../../../src/cli/config.js';

describe('README', () => {
  it('holds the configuration reference generated from the CLI (npm run docs:config)', async () => {
    const readme = await readFile(new URL('../../../README.md', import.meta.url), 'utf8');
    assert.ok(readme.includes(configReference()), 'README.md is out of date: paste the output of `npm run docs:config` into its Configuration section');
    for (const o of SERVE_OPTIONS) {
      assert.ok(readme.includes(`--${o.flag}`), `--${o.flag} missing`);
      assert.ok(readme.includes(o.env), `${o.env} missing`);
    }
  });

  it('keeps the two-command quick start', async () => {
    const readme = await readFile(new URL('../../../README.md', import.meta.url), 'utf8');
    const quick = readme.slice(readme.indexOf('## Quick start'), readme.indexOf('## The HTTP endpoints'));
    assert.match(quick, /npm ci && npm start/);
    assert.match(quick, /npm test/);
  });
});
