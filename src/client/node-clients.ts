/**
 * NodeClients: the Cluster, Snapshot and Task clients of one node, opened and
 * closed together (the gateway holds one set per target).
 */
import { ClusterClient } from './cluster-client.js';
import type { ClientDial } from './dial.js';
import { SnapshotClient } from './snapshot-client.js';
import { TaskClient } from './task-client.js';

/** NodeClients: a Cluster, Snapshot and Task client, all to one node (what the gateway uses). */
export interface NodeClients {
  readonly cluster: Pick<ClusterClient, 'status' | 'vote' | 'close'>;
  readonly snapshots: Pick<SnapshotClient, 'createSnapshot' | 'getSnapshot' | 'restoreSnapshot' | 'close'>;
  readonly tasks: Pick<TaskClient, 'getTask' | 'listTasks' | 'cancelTasks' | 'close'>;
}

/** connectClients opens ClusterService, SnapshotService and TaskService clients to `target` ("host:port"). */
export function connectClients(target: string, dial: ClientDial = {}): NodeClients {
  return {
    cluster: new ClusterClient(target, dial),
    snapshots: new SnapshotClient(target, dial),
    tasks: new TaskClient(target, dial),
  };
}

/** closeClients closes every client of `clients`. */
export function closeClients(clients: NodeClients): void {
  clients.cluster.close();
  clients.snapshots.close();
  clients.tasks.close();
}
