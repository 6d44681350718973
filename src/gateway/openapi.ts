/**
 * OPENAPI: the OpenAPI 3 description of every gateway route (served at
 * GET /openapi.json). Hand-written; test/gateway checks that every route the
 * gateway registers appears here with its method.
 */

const jsonContent = (schema: Record<string, unknown>): Record<string, unknown> => ({ 'application/json': { schema } });
const textContent = { 'text/plain': { schema: { type: 'string' } } };

const typesenseError = { description: 'Error', content: jsonContent({ $ref: '#/components/schemas/TypesenseError' }) };
const meiliErrorResponse = { description: 'Error', content: jsonContent({ $ref: '#/components/schemas/MeilisearchError' }) };
const nomadError = { description: 'Error (plain text)', content: textContent };
const enqueued = { description: 'Task enqueued', content: jsonContent({ $ref: '#/components/schemas/SummarizedTask' }) };

const listParam = (name: string, description: string): Record<string, unknown> => ({
  name,
  in: 'query',
  required: false,
  description: `${description} (comma-separated; \`*\` matches everything)`,
  schema: { type: 'string' },
});
const dateParam = (name: string): Record<string, unknown> => ({
  name,
  in: 'query',
  required: false,
  description: 'YYYY-MM-DD or RFC 3339 date-time',
  schema: { type: 'string' },
});
const taskFilterParams = [
  listParam('uids', 'task uids'),
  listParam('batchUids', 'batch uids'),
  listParam('indexUids', 'index uids (snapcoord has no indexes: only `*`)'),
  listParam('statuses', 'enqueued, processing, succeeded, failed, canceled'),
  listParam('types', 'task types, e.g. snapshotCreation, taskCancelation'),
  listParam('canceledBy', 'uids of the canceling tasks'),
  dateParam('beforeEnqueuedAt'),
  dateParam('afterEnqueuedAt'),
  dateParam('beforeStartedAt'),
  dateParam('afterStartedAt'),
  dateParam('beforeFinishedAt'),
  dateParam('afterFinishedAt'),
];

const restoreOperation = (method: string): Record<string, unknown> => ({
  tags: ['Nomad'],
  summary: `Restore a snapshot (${method}): the raw archive as the body, whatever its Content-Type`,
  operationId: `restoreSnapshot${method}`,
  security: [{ nomadToken: [] }, { typesenseKey: [] }, { bearer: [] }],
  requestBody: { required: true, content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } } },
  responses: {
    '200': { description: 'Restored (empty body)', content: textContent },
    '400': nomadError,
    '403': nomadError,
    '413': nomadError,
  },
});

/** OPENAPI: the document. */
export const OPENAPI = {
  openapi: '3.0.3',
  info: {
    title: 'snapcoord REST gateway',
    version: '1',
    description:
      'Typesense-, Meilisearch- and Nomad-style HTTP endpoints mapped onto the snapcoord gRPC API. ' +
      'An API key may be sent as X-TYPESENSE-API-KEY (or ?x-typesense-api-key=), Authorization: Bearer, or X-Nomad-Token on any route.',
  },
  components: {
    securitySchemes: {
      typesenseKey: { type: 'apiKey', in: 'header', name: 'X-TYPESENSE-API-KEY' },
      bearer: { type: 'http', scheme: 'bearer' },
      nomadToken: { type: 'apiKey', in: 'header', name: 'X-Nomad-Token' },
    },
    schemas: {
      TypesenseError: { type: 'object', required: ['message'], properties: { message: { type: 'string' } } },
      MeilisearchError: {
        type: 'object',
        required: ['message', 'code', 'type', 'link'],
        properties: { message: { type: 'string' }, code: { type: 'string' }, type: { type: 'string' }, link: { type: 'string' } },
      },
      SummarizedTask: {
        type: 'object',
        properties: {
          taskUid: { type: 'integer' },
          indexUid: { type: 'string', nullable: true },
          status: { type: 'string' },
          type: { type: 'string' },
          enqueuedAt: { type: 'string', format: 'date-time' },
        },
      },
      Task: {
        type: 'object',
        properties: {
          uid: { type: 'integer' },
          batchUid: { type: 'integer', nullable: true },
          indexUid: { type: 'string', nullable: true },
          status: { type: 'string', enum: ['enqueued', 'processing', 'succeeded', 'failed', 'canceled'] },
          type: { type: 'string' },
          canceledBy: { type: 'integer', nullable: true },
          details: { type: 'object', nullable: true },
          error: { $ref: '#/components/schemas/MeilisearchError' },
          duration: { type: 'string', nullable: true },
          enqueuedAt: { type: 'string', format: 'date-time' },
          startedAt: { type: 'string', format: 'date-time', nullable: true },
          finishedAt: { type: 'string', format: 'date-time', nullable: true },
        },
      },
    },
  },
  paths: {
    '/operations/snapshot': {
      post: {
        tags: ['Typesense'],
        summary: 'Create a point-in-time snapshot in a directory on the node',
        operationId: 'typesenseSnapshot',
        security: [{ typesenseKey: [] }],
        parameters: [
          { name: 'snapshot_path', in: 'query', required: true, description: 'absolute directory under an allowed snapshot root', schema: { type: 'string' } },
        ],
        responses: {
          '201': { description: 'Written', content: jsonContent({ type: 'object', properties: { success: { type: 'boolean' } } }) },
          '400': typesenseError,
          '401': typesenseError,
          '409': typesenseError,
        },
      },
    },
    '/operations/vote': {
      post: {
        tags: ['Typesense'],
        summary: 'Make this node (a follower) the leader',
        operationId: 'typesenseVote',
        security: [{ typesenseKey: [] }],
        responses: {
          '200': { description: 'success true on a follower that now leads, false on a leader', content: jsonContent({ type: 'object', properties: { success: { type: 'boolean' } } }) },
          '401': typesenseError,
        },
      },
    },
    '/health': {
      get: {
        tags: ['Typesense'],
        summary: 'Health: available when the node knows a leader (no key needed)',
        operationId: 'health',
        security: [],
        responses: {
          '200': { description: 'Available', content: jsonContent({ type: 'object', properties: { ok: { type: 'boolean' }, status: { type: 'string' } } }) },
          '503': { description: 'Unavailable', content: jsonContent({ type: 'object', properties: { ok: { type: 'boolean' }, status: { type: 'string' } } }) },
        },
      },
    },
    '/debug': {
      get: {
        tags: ['Typesense'],
        summary: 'Version and Raft state (1 leader, 3 candidate, 4 follower, 6 uninitialized)',
        operationId: 'debug',
        security: [{ typesenseKey: [] }],
        responses: {
          '200': { description: 'OK', content: jsonContent({ type: 'object', properties: { version: { type: 'string' }, state: { type: 'integer' } } }) },
          '401': typesenseError,
        },
      },
    },
    '/snapshots': {
      post: {
        tags: ['Meilisearch'],
        summary: 'Enqueue a snapshotCreation task (writes <snapshot-dir>/<db-name>.snapshot)',
        operationId: 'createSnapshotTask',
        security: [{ bearer: [] }],
        responses: { '202': enqueued, '401': meiliErrorResponse, '403': meiliErrorResponse },
      },
    },
    '/tasks': {
      get: {
        tags: ['Meilisearch'],
        summary: 'List tasks, newest first',
        operationId: 'listTasks',
        security: [{ bearer: [] }],
        parameters: [
          { name: 'limit', in: 'query', required: false, schema: { type: 'integer', default: 20 } },
          { name: 'from', in: 'query', required: false, schema: { type: 'integer' } },
          { name: 'reverse', in: 'query', required: false, schema: { type: 'boolean' } },
          ...taskFilterParams,
        ],
        responses: {
          '200': {
            description: 'A page of tasks',
            content: jsonContent({
              type: 'object',
              properties: {
                results: { type: 'array', items: { $ref: '#/components/schemas/Task' } },
                total: { type: 'integer' },
                limit: { type: 'integer' },
                from: { type: 'integer', nullable: true },
                next: { type: 'integer', nullable: true },
              },
            }),
          },
          '400': meiliErrorResponse,
          '401': meiliErrorResponse,
          '403': meiliErrorResponse,
        },
      },
    },
    '/tasks/{uid}': {
      get: {
        tags: ['Meilisearch'],
        summary: 'One task',
        operationId: 'getTask',
        security: [{ bearer: [] }],
        parameters: [{ name: 'uid', in: 'path', required: true, schema: { type: 'integer' } }],
        responses: {
          '200': { description: 'The task', content: jsonContent({ $ref: '#/components/schemas/Task' }) },
          '400': meiliErrorResponse,
          '404': meiliErrorResponse,
        },
      },
    },
    '/tasks/cancel': {
      post: {
        tags: ['Meilisearch'],
        summary: 'Cancel enqueued tasks matching the filters (at least one filter)',
        operationId: 'cancelTasks',
        security: [{ bearer: [] }],
        parameters: taskFilterParams,
        responses: { '202': enqueued, '400': meiliErrorResponse, '401': meiliErrorResponse, '403': meiliErrorResponse },
      },
    },
    '/v1/operator/snapshot': {
      get: {
        tags: ['Nomad'],
        summary: 'Download a fresh point-in-time snapshot (tar.gz: meta.json, state.bin, SHA256SUMS)',
        operationId: 'getSnapshot',
        security: [{ nomadToken: [] }],
        parameters: [{ name: 'stale', in: 'query', required: false, description: 'let a follower answer from its own state', schema: { type: 'string' } }],
        responses: {
          '200': {
            description: 'The archive',
            headers: {
              Digest: { schema: { type: 'string' }, description: 'sha-256=<base64>' },
              'X-Nomad-Index': { schema: { type: 'integer' } },
              'X-Nomad-KnownLeader': { schema: { type: 'boolean' } },
              'X-Nomad-LastContact': { schema: { type: 'integer' } },
            },
            content: { 'application/x-gzip': { schema: { type: 'string', format: 'binary' } } },
          },
          '403': nomadError,
        },
      },
      put: restoreOperation('PUT'),
      post: restoreOperation('POST'),
    },
    '/metrics': {
      get: {
        tags: ['Meta'],
        summary:
          "Prometheus metrics: the node's (embedded gateway) or the gateway process's (standalone); any valid key, whatever its actions (no key with --metrics-open)",
        operationId: 'metrics',
        security: [{ typesenseKey: [] }, { bearer: [] }, { nomadToken: [] }],
        responses: { '200': { description: 'Prometheus text format', content: textContent }, '401': typesenseError },
      },
    },
    '/openapi.json': {
      get: {
        tags: ['Meta'],
        summary: 'This document (no key needed)',
        operationId: 'openapi',
        security: [],
        responses: { '200': { description: 'OpenAPI 3 document', content: jsonContent({ type: 'object' }) } },
      },
    },
  },
} as const;

/** openApiPath converts a fastify path (`/tasks/:uid`) to OpenAPI's (`/tasks/{uid}`). */
export function openApiPath(url: string): string {
  return url.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
}
