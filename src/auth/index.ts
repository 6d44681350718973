/** src/auth: the key model (keys, actions, constant-time lookup) and the Bearer scheme; the bottom layer. */
export {
  ACTIONS,
  API_KEY_BYTES_MAX,
  API_KEY_CHARS_MIN,
  KeyRing,
  allows,
  isAction,
  parseApiKeys,
  type Action,
  type ApiKeySpec,
  type AuthVerdict,
  type KeyRingConfig,
  type Need,
} from './keys.js';
export { bearerToken } from './bearer.js';
