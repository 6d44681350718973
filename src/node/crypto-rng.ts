import { randomInt } from 'node:crypto';

import type { Rng } from '../raft/types.js';

/**
 * cryptoRng: the real Rng (crypto.randomInt), chosen by the process wiring
 * for NodeOptions.rng; the simulator and tests pass a seeded one instead.
 */
export const cryptoRng: Rng = { nextInt: (n: number) => randomInt(n) };
