/**
 * askWithin: one GetMembership ask (the transport's askMembership), given up after `timeoutMs` on the node's clock
 * whatever the transport does (a call it never ends, a synchronous throw). Used by the vouches (vouches.ts) and the
 * removal news (removal-news.ts).
 */
import type { MembershipAnswer, MembershipQuery } from '../transport/transport.js';
import type { Clock, TimerHandle } from './clock.js';

export function askWithin(clock: Clock, ask: (q: MembershipQuery, timeoutMs: number) => Promise<MembershipAnswer>, q: MembershipQuery, timeoutMs: number): Promise<MembershipAnswer> {
  let timer: TimerHandle | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = clock.setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
  });
  let asked: Promise<MembershipAnswer>;
  try {
    asked = ask(q, timeoutMs);
  } catch (err) {
    asked = Promise.reject(err instanceof Error ? err : new Error(String(err)));
  }
  return Promise.race([asked, timeout]).finally(() => clock.clearTimeout(timer));
}
