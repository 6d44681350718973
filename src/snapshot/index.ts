/** src/snapshot: the snapshot archive format, the state stream and the snapshot store. */
export * from './archive.js';
export * from './archive-delta.js';
export * from './archive-meta.js';
export * from './errors.js';
export * from './failpoint.js';
export * from './state-format.js';
export * from './store.js';
export * from './record-tee.js';
