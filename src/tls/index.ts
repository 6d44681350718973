/**
 * src/tls: certificates and TLS credentials (a bottom layer: node modules,
 * @grpc/grpc-js and @peculiar/x509 only). certs.ts issues and writes
 * certificates; credentials.ts turns files into reloading gRPC credentials,
 * checks them (checkTlsFiles) and reads a peer's member id (memberIdOf).
 */
export * from './certs.js';
export * from './credentials.js';
export { MEMBER_URI_PREFIX, MEMBER_ID_PATTERN, checkMemberId, memberUri, subjectAltNames, type SubjectAltNames } from './names.js';
export * from './crl.js';
