/** The REST gateway: see gateway.ts (createGateway), auth.ts (keys) and the *-routes.ts files (one per product style). */
export { createGateway, localTarget, DEFAULT_JSON_BYTES_MAX, type Gateway, type GatewayOptions } from './gateway.js';
export { ACTIONS, KeyRing, parseApiKeys, type Action, type ApiKeySpec, type AuthConfig } from './auth.js';
export { DEFAULT_RESTORE_BYTES_MAX } from './nomad-routes.js';
export { DEFAULT_CONNECTIONS_MAX, DEFAULT_IDLE_TIMEOUT_MS, DEFAULT_KEEP_ALIVE_TIMEOUT_MS, type ConnectionStats } from './connection-guard.js';
export { runGateway, type RunGatewayOptions } from './run-gateway.js';
