// The entry of a sim worker thread: tsx's loader is registered per thread, so this plain
// module registers it, then loads the TypeScript worker (node-worker.ts).
import { register } from 'tsx/esm/api';

register();
await import('./node-worker.ts');
