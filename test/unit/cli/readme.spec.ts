import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';

import { configReference } from '../../../src/cli/config-reference.js';
import { SERVE_OPTIONS } from '../../../src/cli/config.js';
import { NODE_MALLOC_ENV, NODE_V8_FLAGS } from '../../../src/cli/node-runtime.js';

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

  it('starts a node on several hosts with the memory settings the image and `snapcoord local` use (NODE_V8_FLAGS, NODE_MALLOC_ENV)', async () => {
    const readme = await readFile(new URL('../../../README.md', import.meta.url), 'utf8');
    const section = readme.slice(readme.indexOf('## Running on several hosts'));
    const block = section.slice(section.indexOf('```sh'), section.indexOf('```', section.indexOf('```sh') + 5));
    // The command that serves: from the line that sets the environment to the end of its continuation lines.
    const lines = block.split('\n');
    const start = lines.findIndex((l) => l.includes('MALLOC_') || /(^|\s)serve\s/.test(l));
    assert.ok(start >= 0, 'no serve command in the several-hosts section');
    let end = start;
    while (end < lines.length - 1 && (lines[end] ?? '').trimEnd().endsWith('\\')) end++;
    const command = lines.slice(start, end + 1).join(' ');
    assert.match(command, /\sserve\s/);
    for (const f of NODE_V8_FLAGS) assert.ok(command.includes(f), `${f} missing from: ${command}`);
    for (const [k, v] of Object.entries(NODE_MALLOC_ENV)) assert.ok(command.includes(`${k}=${v}`), `${k}=${v} missing from: ${command}`);
  });
});
