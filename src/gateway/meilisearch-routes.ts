/**
 * Meilisearch-style routes (snapshots and tasks):
 *
 * - POST /snapshots -> SnapshotService.CreateSnapshot{task:true}: 202 summarized task.
 * - GET /tasks/:uid -> TaskService.GetTask: the task; 404 task_not_found.
 * - GET /tasks -> TaskService.ListTasks: {results,total,limit,from,next}.
 * - POST /tasks/cancel -> TaskService.CancelTasks: 202 summarized taskCancelation task.
 *
 * Bad parameters answer 400 with Meilisearch's codes (invalid_task_uids ...).
 */
import type { FastifyReply } from 'fastify';
import type { Task } from '../gen/snapcoord/v1/snapshot.js';
import { TaskQueryError, cancelFilterOf, listTasksRequestOf, summarizedTaskJson, taskJson } from './meili-tasks.js';
import type { RouteContext, RouteSpec } from './route-spec.js';
import { meiliError, sendGrpcError, sendJson, sendMeiliError } from './styles.js';

/** TASK_DEADLINE_MS: deadline of the task calls (they only enqueue or read). */
export const TASK_DEADLINE_MS = 10_000;

type Query = Readonly<Record<string, unknown>>;

function missingTask(reply: FastifyReply, what: string): FastifyReply {
  return sendMeiliError(reply, 500, meiliError('internal', `the node answered without ${what}`, 'internal'));
}

function enqueued(reply: FastifyReply, task: Task | undefined): FastifyReply {
  if (task === undefined) return missingTask(reply, 'a task');
  return sendJson(reply, 202, summarizedTaskJson(task));
}

export function meilisearchRoutes(ctx: RouteContext): RouteSpec[] {
  const { snapshots, tasks } = ctx.clients;
  return [
    {
      method: 'POST',
      url: '/snapshots',
      style: 'meilisearch',
      action: 'snapshots.write',
      handler: async (req, reply) => {
        try {
          const res = await snapshots.createSnapshot({ task: true }, { deadlineMs: TASK_DEADLINE_MS, metadata: ctx.callMetadata(req) });
          return enqueued(reply, res.task);
        } catch (err) {
          return sendGrpcError(reply, 'meilisearch', err);
        }
      },
    },
    {
      method: 'GET',
      url: '/tasks/:uid',
      style: 'meilisearch',
      action: 'snapshots.read',
      handler: async (req, reply) => {
        const text = (req.params as { uid: string }).uid;
        if (!/^\d{1,19}$/.test(text) || BigInt(text) > 0xffff_ffff_ffff_ffffn) {
          return sendMeiliError(
            reply,
            400,
            meiliError('invalid_task_uids', `Invalid value in parameter \`taskUid\`: could not parse \`${text}\` as a positive integer`),
          );
        }
        try {
          const res = await tasks.getTask(BigInt(text), { deadlineMs: TASK_DEADLINE_MS, metadata: ctx.callMetadata(req) });
          if (res.task === undefined) return missingTask(reply, 'the task');
          return sendJson(reply, 200, taskJson(res.task));
        } catch (err) {
          return sendGrpcError(reply, 'meilisearch', err, { notFoundCode: 'task_not_found' });
        }
      },
    },
    {
      method: 'GET',
      url: '/tasks',
      style: 'meilisearch',
      action: 'snapshots.read',
      handler: async (req, reply) => {
        let listReq;
        try {
          listReq = listTasksRequestOf(req.query as Query);
        } catch (err) {
          if (err instanceof TaskQueryError) return sendMeiliError(reply, 400, err.body);
          throw err;
        }
        try {
          const res = await tasks.listTasks(listReq, { deadlineMs: TASK_DEADLINE_MS, metadata: ctx.callMetadata(req) });
          return sendJson(reply, 200, {
            results: res.results.map(taskJson),
            total: Number(res.total),
            limit: res.limit,
            from: res.from === undefined ? null : Number(res.from),
            next: res.next === undefined ? null : Number(res.next),
          });
        } catch (err) {
          return sendGrpcError(reply, 'meilisearch', err);
        }
      },
    },
    {
      method: 'POST',
      url: '/tasks/cancel',
      style: 'meilisearch',
      action: 'snapshots.write',
      handler: async (req, reply) => {
        let filter;
        try {
          filter = cancelFilterOf(req.query as Query);
        } catch (err) {
          if (err instanceof TaskQueryError) return sendMeiliError(reply, 400, err.body);
          throw err;
        }
        try {
          const res = await tasks.cancelTasks(filter, { deadlineMs: TASK_DEADLINE_MS, metadata: ctx.callMetadata(req) });
          return enqueued(reply, res.task);
        } catch (err) {
          return sendGrpcError(reply, 'meilisearch', err);
        }
      },
    },
  ];
}
