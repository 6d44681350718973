/**
 * StacklessError: an Error that captures no stack trace, for errors that are
 * answers, not faults: a node is not the leader, a proposal was dropped, a
 * node operation timed out, a file does not exist. Callers branch on them
 * (clients at a follower are told notLeader at every write) and read only
 * their name, code and message, which say everything; capturing a stack
 * costs several times the rest of the error and nobody reads it. `stack` is
 * just "Name: message". Errors that report a fault (a bug, a disk error, a
 * broken invariant) stay plain Errors with their stacks.
 *
 * Error.stackTraceLimit is set to 0 only while the Error constructor runs
 * and restored after it, whatever it was (a process that wants no stacks at
 * all keeps its setting).
 */
export class StacklessError extends Error {
  constructor(message?: string, options?: ErrorOptions) {
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    try {
      super(message, options);
    } finally {
      Error.stackTraceLimit = limit;
    }
  }
}
