export * from './types.js';
export * from './errors.js';
export { RaftNode, defaultRaftConfig, PENDING_READS_MAX_DEFAULT, CONF_CHANGE_HEARD_ELECTION_TIMEOUTS } from './raft.js';
export type { RaftConfig, RaftBootState, RaftStatus, RaftBrief, ProgressStatus } from './raft.js';
export type { LogPosition } from './log.js';
export { MembershipChangeError, encodeConfChange, decodeConfChange, applyConfChange, isVoter, isMember, quorum, sameMembership } from './membership.js';
export type { ProgressState } from './progress.js';
