/**
 * TaskClient: TaskService as promises. Every call has a deadline
 * (`deadlineMs`, default DEFAULT_DEADLINE_MS) and rejects with the call's
 * grpc-js ServiceError.
 */
import {
  TaskFilter,
  TaskServiceClient,
  type CancelTasksResponse,
  type GetTaskResponse,
  type ListTasksRequest,
  type ListTasksResponse,
} from '../gen/snapcoord/v1/snapshot.js';
import { dialChannel, type ClientDial } from './dial.js';
import { callUnary, type CallOptions } from './unary-call.js';

/** emptyTaskFilter: a TaskFilter that matches every task. */
export function emptyTaskFilter(): TaskFilter {
  return TaskFilter.fromPartial({});
}

/** TaskClient: TaskService as promises. */
export class TaskClient {
  readonly raw: TaskServiceClient;

  constructor(address: string, dial: ClientDial = {}) {
    const { credentials, options } = dialChannel(dial);
    this.raw = new TaskServiceClient(address, credentials, options);
  }

  getTask(uid: bigint, opts?: CallOptions): Promise<GetTaskResponse> {
    return callUnary(this.raw.getTask.bind(this.raw), { uid }, opts);
  }

  listTasks(req: Partial<ListTasksRequest>, opts?: CallOptions): Promise<ListTasksResponse> {
    return callUnary(this.raw.listTasks.bind(this.raw), { filter: emptyTaskFilter(), limit: 0, reverse: false, ...req }, opts);
  }

  cancelTasks(filter: TaskFilter, opts?: CallOptions): Promise<CancelTasksResponse> {
    return callUnary(this.raw.cancelTasks.bind(this.raw), { filter }, opts);
  }

  close(): void {
    this.raw.close();
  }
}
