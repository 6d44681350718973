/**
 * withFsm: a storage seen through a StateMachine opened on it, for specs that
 * drive the state machine and the storage under it as one (open, apply,
 * reopen, install): the state machine's methods (apply, get, range,
 * installState, lookupSession, ...) answer first, the storage's (load, save,
 * compact, close, dir, ...) the rest.
 */
import { StateMachine } from '../../../src/fsm/state-machine.js';
import type { NodeStorage } from '../../../src/storage/types.js';

/** FsmStore is a storage with the state machine's methods over it. */
export type FsmStore<S extends NodeStorage = NodeStorage> = StateMachine & Omit<S, keyof StateMachine> & { readonly storage: S };

export async function withFsm<S extends NodeStorage>(storage: S): Promise<FsmStore<S>> {
  const fsm = await StateMachine.open(storage);
  return new Proxy(storage, {
    get(target, prop) {
      if (prop === 'storage') return target;
      if (prop in fsm) {
        const v: unknown = Reflect.get(fsm, prop, fsm);
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(fsm) : v;
      }
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  }) as unknown as FsmStore<S>;
}
