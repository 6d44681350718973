// Registers the simulator's TypeScript hooks (sim-loader.mjs: esbuild as tsx uses it, without tsx's keepNames
// wrappers) in this thread, source maps on. The campaign's workers load it (node-worker-boot.mjs); a tool that
// measures seeds in its own process loads it too (`node --import ./test/sim/sim-register.mjs test/sim/sim-cost.ts`),
// so it runs the code as the workers do: under tsx the same seeds cost 15-20% more CPU (clients only, Dec 7).
import { register } from 'node:module';
import process from 'node:process';

process.setSourceMapsEnabled(true);
register('./sim-loader.mjs', import.meta.url);
