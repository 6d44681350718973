export * from './transport.js';
export * from './codec.js';
export { createRaftService, statusError, toStatusError } from './raft-service.js';
export type { RaftServiceOptions, StatusError } from './raft-service.js';
export { GrpcTransport, channelOptions } from './grpc-transport.js';
export type { GrpcTransportOptions, PeerInfo } from './grpc-transport.js';
export { MemoryNetwork, MemoryTransport } from './memory-transport.js';
export type { MemoryNetworkOptions, MemoryTransportOptions } from './memory-transport.js';
