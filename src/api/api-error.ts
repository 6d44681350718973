/**
 * ApiError: the gRPC status every API call fails with, and the one mapping
 * from node, storage and command errors to gRPC codes (DESIGN.md: "errors
 * carry their gRPC status").
 */
import * as grpc from '@grpc/grpc-js';
import { DISK_FULL_ERROR_CODE, ERROR_CODE_METADATA_KEY, LEADER_METADATA_KEY } from '../client/error-metadata.js';
import { isNoSpace } from '../node/disk-guard.js';
import { NodeError, type NodeErrorCode } from '../node/errors.js';
import { KvCommandError } from '../fsm/kv-command.js';
import { StorageError } from '../storage/storage-error.js';


/** ApiError is a grpc-js ServiceError-shaped Error: grpc-js sends `code`, `details` and `metadata` (as trailers). */
export class ApiError extends Error implements Partial<grpc.StatusObject> {
  override readonly name = 'ApiError';
  readonly code: grpc.status;
  readonly details: string;
  readonly metadata: grpc.Metadata;

  constructor(code: grpc.status, details: string, metadata: grpc.Metadata = new grpc.Metadata()) {
    super(details);
    this.code = code;
    this.details = details;
    this.metadata = metadata;
  }
}

const NODE_CODES: Readonly<Record<NodeErrorCode, grpc.status>> = {
  notLeader: grpc.status.FAILED_PRECONDITION,
  failedPrecondition: grpc.status.FAILED_PRECONDITION,
  timeout: grpc.status.DEADLINE_EXCEEDED,
  lost: grpc.status.ABORTED,
  shuttingDown: grpc.status.UNAVAILABLE,
  busy: grpc.status.RESOURCE_EXHAUSTED,
  diskFull: grpc.status.RESOURCE_EXHAUSTED,
  invalid: grpc.status.INVALID_ARGUMENT,
  unavailable: grpc.status.UNAVAILABLE,
};

/** invalidArgument is the INVALID_ARGUMENT error for a bad request field. */
export function invalidArgument(message: string): ApiError {
  return new ApiError(grpc.status.INVALID_ARGUMENT, message);
}

/**
 * notLeaderError is the answer of a non-leader that may not forward:
 * FAILED_PRECONDITION "not the leader; the leader is <id> at <addr>" with
 * trailing metadata `x-snapcoord-leader: id@addr`. With no leader known it is
 * UNAVAILABLE (retry later).
 */
export function notLeaderError(leaderId: string, leaderAddress: string): ApiError {
  if (leaderId === '') return new ApiError(grpc.status.UNAVAILABLE, 'not the leader; no leader is known (election in progress?)');
  const md = new grpc.Metadata();
  md.set(LEADER_METADATA_KEY, `${leaderId}@${leaderAddress}`);
  return new ApiError(
    grpc.status.FAILED_PRECONDITION,
    `not the leader; the leader is ${leaderId} at ${leaderAddress || '(unknown address)'}`,
    md,
  );
}

/** noSpaceError: RESOURCE_EXHAUSTED with `x-snapcoord-error-code: disk_full`. */
function noSpaceError(message: string): ApiError {
  const md = new grpc.Metadata();
  md.set(ERROR_CODE_METADATA_KEY, DISK_FULL_ERROR_CODE);
  return new ApiError(grpc.status.RESOURCE_EXHAUSTED, message, md);
}

/**
 * toApiError maps any error to its gRPC status: NodeError by its code,
 * KvCommandError to INVALID_ARGUMENT, StorageError (`invalidArgument` to
 * INVALID_ARGUMENT, `closed` to UNAVAILABLE, others INTERNAL), an error that
 * already carries a numeric gRPC code (an ApiError, or a forwarded call's
 * ServiceError) keeps its code, details and metadata; anything else is
 * INTERNAL. A full disk (NodeError `diskFull`, or an ENOSPC from the file
 * system or RocksDB) is RESOURCE_EXHAUSTED with trailing metadata
 * `x-snapcoord-error-code: disk_full` (DISK_FULL_ERROR_CODE).
 */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof NodeError) {
    if (err.code === 'notLeader') return notLeaderError(err.leaderId, err.leaderAddress);
    if (err.code === 'diskFull') return noSpaceError(err.message);
    return new ApiError(NODE_CODES[err.code], err.message);
  }
  if (err instanceof KvCommandError) return invalidArgument(err.message);
  if (err instanceof StorageError) {
    if (err.code === 'invalidArgument') return invalidArgument(err.message);
    if (err.code === 'closed') return new ApiError(grpc.status.UNAVAILABLE, err.message);
    if (isNoSpace(err)) return noSpaceError(err.message);
    return new ApiError(grpc.status.INTERNAL, err.message);
  }
  const e = err as { code?: unknown; details?: unknown; metadata?: unknown; message?: unknown } | null;
  if (e !== null && typeof e === 'object' && typeof e.code === 'number' && Number.isInteger(e.code) && e.code > 0 && e.code <= 16) {
    const details = typeof e.details === 'string' ? e.details : String(e.message ?? '');
    // Keep only our own trailers (a forwarded call's answer also holds transport headers).
    const md = new grpc.Metadata();
    if (e.metadata instanceof grpc.Metadata) {
      for (const [k, v] of Object.entries(e.metadata.getMap())) if (k.startsWith('x-snapcoord-')) md.set(k, v);
    }
    return new ApiError(e.code as grpc.status, details, md);
  }
  if (isNoSpace(err)) return noSpaceError((err as Error).message);
  return new ApiError(grpc.status.INTERNAL, err instanceof Error ? err.message : String(err));
}
