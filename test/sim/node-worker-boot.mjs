// The entry of a sim worker thread: registers the sim's TypeScript hooks (sim-loader.mjs: esbuild as tsx
// uses it, without its keepNames wrappers) in the thread, then loads the TypeScript worker (node-worker.ts).
import { register } from 'node:module';
import process from 'node:process';

process.setSourceMapsEnabled(true);
register('./sim-loader.mjs', import.meta.url);
await import('./node-worker.ts');
