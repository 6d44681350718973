/**
 * heapRetained: the V8 heap that what `make` builds keeps reachable, per item
 * (`items` of them), measured after full collections (--expose-gc is set at
 * run time): `make` runs once first so compiled code and the like are not
 * counted, then again with the heap measured before and after. Answers what
 * the second run built (hold it to keep it alive) and the bytes per item.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

export function heapRetained<T>(items: number, make: () => T): { readonly held: T; readonly bytesPerItem: number } {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  make();
  gc();
  gc();
  const before = process.memoryUsage().heapUsed;
  const held = make();
  gc();
  gc();
  return { held, bytesPerItem: (process.memoryUsage().heapUsed - before) / items };
}
