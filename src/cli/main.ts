#!/usr/bin/env node
/**
 * The `snapcoord` CLI (program.ts). Runs as `tsx src/cli/main.ts ...` and as
 * `node dist/src/cli/main.js ...`; from dist/ a client command runs from the
 * one-file bundle of program.ts with V8's code cache (fast-start.ts).
 */
import { startFromBundle } from './fast-start.js';

if (!startFromBundle(import.meta.url)) (await import('./program.js')).runCli();
