// The entry of a sim worker thread: registers the sim's TypeScript hooks (sim-register.mjs: esbuild as tsx
// uses it, without its keepNames wrappers) in the thread, then loads the TypeScript worker (node-worker.ts).
import './sim-register.mjs';

await import('./node-worker.ts');
