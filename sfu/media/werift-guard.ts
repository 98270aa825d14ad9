/**
 * The module that reaches into werift's private fields to guard its UDP sockets (werift
 * 0.25.2; werift-internals.ts lists every private field the SFU touches and where). The patch
 * states the private shape it needs, the shape is checked once per instance, and a patch that
 * cannot be installed is logged (and, for the shape of werift's classes, reported at start by
 * `createWeriftGuard`).
 *
 * What werift 0.25.2 does without this (its ice/src/ice.ts and dtls/src/socket.ts): every
 * non-STUN datagram that reaches an ICE socket goes to DTLS or SRTP whatever address it came
 * from, and werift's DTLS closes the session on a plaintext alert (content type 21, epoch 0) or
 * a record of unknown content type, and renegotiates (drops its keys) on a plaintext
 * ClientHello; it also answers and pairs with any STUN binding request without checking its
 * MESSAGE-INTEGRITY. One 15-byte datagram from anywhere silenced a call for good.
 *
 * What the guard lets through, per datagram (RFC 7983 demultiplexing by the first byte):
 * - STUN (0–3): binding requests only when USERNAME names this agent's ufrag and
 *   MESSAGE-INTEGRITY verifies with its password (RFC 8445 §7.3, RFC 5389 §10.1.2): those may
 *   come from a new address (peer-reflexive candidates, ICE restart, nomination); everything
 *   else STUN is left to werift (responses are matched to its transactions and verified there).
 * - Anything else only from the selected (nominated) pair's remote address, on that pair's
 *   socket; before a pair is selected nothing else is accepted (werift starts DTLS only then).
 * - DTLS (20–63) after the handshake: only records of the session's epoch (≥ 1) that are
 *   handshake (werift decrypts them, which authenticates them; the peer's retransmitted final
 *   flight) or application data (SCTP; decrypted likewise), and alerts that decrypt under the
 *   session's keys. Plaintext records, unknown content types and unauthenticated alerts are
 *   dropped. During the handshake records pass unchanged (from the selected pair only).
 * - SRTP/SRTCP (128–191) pass to werift, which authenticates each packet and drops failures.
 *
 * Lifecycle: one guard per transport factory (`createWeriftGuard`); `protect(pc)` is called by
 * the transport after each local description has gathered its candidates (sockets exist then,
 * and no remote peer knows them before), idempotent per socket.
 */
import { isIP } from 'node:net';
import { Connection, StunProtocol, parseMessage, type RTCDtlsTransport, type RTCPeerConnection } from 'werift';
import type { Logger } from '../../common/logger.ts';

export type GuardDropReason = 'foreign_address' | 'stun_unauthenticated' | 'dtls_unauthenticated';

type Address = readonly [string, number];

/** werift's StunProtocol (ice/src/stun/protocol.ts): the UDP socket of one local candidate. */
interface ProtocolInternals {
  datagramReceived(data: Buffer, addr: Address): void;
}

/** werift's ICE Connection (ice/src/ice.ts) fields the guard reads. */
interface ConnectionInternals {
  protocols: unknown[];
  nominated?: { protocol: unknown; remoteAddr: Address };
  localUsername: string;
  localPassword: string;
  userHistory?: Record<string, string>;
}

/** werift's DtlsSocket (dtls/src/socket.ts) fields the guard reads. */
interface DtlsSocketInternals {
  connected: boolean;
  cipher: { decryptPacket(record: DtlsRecord): Buffer };
}

/** The record shape werift's CipherContext.decryptPacket reads. */
interface DtlsRecord {
  recordLayerHeader: {
    contentType: number;
    protocolVersion: { major: number; minor: number };
    epoch: number;
    sequenceNumber: number;
  };
  fragment: Buffer;
}

const CONTENT_ALERT = 21;
const CONTENT_HANDSHAKE = 22;
const CONTENT_APPLICATION_DATA = 23;
const RECORD_HEADER = 13;
const STUN_BINDING_REQUEST = 0x0001;
const STUN_COOKIE = 0x2112a442;

export interface WeriftGuard {
  /** What in werift's shape the guard does not recognise ([] when every guard installs). */
  readonly problems: readonly string[];
  /**
   * Guards every UDP socket of `pc`'s ICE transports (new ones only). False when a socket could
   * not be guarded (logged once per guard).
   */
  protect(pc: RTCPeerConnection): boolean;
}

export interface WeriftGuardDeps {
  logger: Logger;
  /** Called for each datagram the guard drops (a counter; must be cheap). */
  onDrop?: (reason: GuardDropReason) => void;
}

/** Checks the class shapes the guard relies on, without opening a socket. */
function shapeProblems(): string[] {
  const problems: string[] = [];
  if (typeof (StunProtocol.prototype as unknown as Partial<ProtocolInternals>).datagramReceived !== 'function') {
    problems.push('StunProtocol.datagramReceived is not a method');
  }
  if (typeof parseMessage !== 'function') problems.push('parseMessage is not exported');
  try {
    const probe = new Connection(false, {}) as unknown as Partial<ConnectionInternals>;
    if (!Array.isArray(probe.protocols)) problems.push('Connection.protocols is not an array');
    if (!('nominated' in probe)) problems.push('Connection.nominated is missing');
    if (typeof probe.localUsername !== 'string' || typeof probe.localPassword !== 'string') {
      problems.push('Connection.localUsername/localPassword are not strings');
    }
  } catch (err) {
    problems.push(`a werift Connection cannot be constructed: ${String(err)}`);
  }
  return problems;
}

const canonicalIpv6 = (h: string) => new URL(`http://[${h}]/`).hostname;

/** IPv6 text forms differ (case, zero runs); compare canonical forms when the raw text differs. */
function sameHost(a: string, b: string): boolean {
  if (a === b) return true;
  if (isIP(a) !== 6 || isIP(b) !== 6) return false;
  const canon = canonicalIpv6;
  try {
    return canon(a) === canon(b);
  } catch {
    return false;
  }
}

/** True for a STUN binding request (type 0x0001 with the magic cookie). */
function isBindingRequest(data: Buffer): boolean {
  return data.length >= 20 && data.readUInt16BE(0) === STUN_BINDING_REQUEST && data.readUInt32BE(4) === STUN_COOKIE;
}

/** A binding request whose USERNAME names this agent and whose MESSAGE-INTEGRITY verifies. */
function authenticRequest(connection: ConnectionInternals, data: Buffer): boolean {
  const unverified = parseMessage(data);
  const username: unknown = unverified?.getAttributeValue('USERNAME');
  if (typeof username !== 'string') return false;
  const ufrag = username.split(':')[0] ?? '';
  const password =
    connection.userHistory?.[ufrag] ?? (ufrag === connection.localUsername ? connection.localPassword : undefined);
  if (!password) return false;
  return parseMessage(data, Buffer.from(password, 'utf8')) !== undefined;
}

/** Whether an alert record decrypts (authenticates) under the session's keys. */
function authenticAlert(socket: DtlsSocketInternals, data: Buffer, pos: number, end: number): boolean {
  try {
    socket.cipher.decryptPacket({
      recordLayerHeader: {
        contentType: data[pos]!,
        protocolVersion: { major: data[pos + 1]!, minor: data[pos + 2]! },
        epoch: data.readUInt16BE(pos + 3),
        sequenceNumber: data.readUIntBE(pos + 5, 6),
      },
      fragment: data.subarray(pos + RECORD_HEADER, end),
    });
    return true;
  } catch {
    return false;
  }
}

/**
 * The DTLS records of `data` to hand to werift once its handshake is done: the datagram itself
 * when every record is acceptable, the acceptable ones re-joined when some are not, undefined
 * when none is.
 */
export function acceptedDtlsRecords(socket: DtlsSocketInternals, data: Buffer): Buffer | undefined {
  const kept: Buffer[] = [];
  let all = true;
  let pos = 0;
  while (pos + RECORD_HEADER <= data.length) {
    const end = pos + RECORD_HEADER + data.readUInt16BE(pos + 11);
    if (end > data.length) break;
    const type = data[pos]!;
    const epoch = data.readUInt16BE(pos + 3);
    // change_cipher_spec (20) belongs to the handshake that is over; other types are unknown.
    const ok =
      epoch >= 1 &&
      (type === CONTENT_HANDSHAKE ||
        type === CONTENT_APPLICATION_DATA ||
        (type === CONTENT_ALERT && authenticAlert(socket, data, pos, end)));
    if (ok) kept.push(data.subarray(pos, end));
    else all = false;
    pos = end;
  }
  if (pos !== data.length) all = false;
  if (kept.length === 0) return undefined;
  return all ? data : Buffer.concat(kept);
}

export function createWeriftGuard(deps: WeriftGuardDeps): WeriftGuard {
  const problems = shapeProblems();
  if (problems.length > 0) {
    deps.logger.error(
      { problems },
      'werift is not the shape the media guard knows: media ports will accept DTLS/SRTP from any address, ' +
        'and one forged datagram can end a call. Pin werift to the tested version (0.25.2).',
    );
  }
  const guarded = new WeakSet<object>();
  const onDrop = deps.onDrop ?? (() => undefined);
  let warned = false;
  const cannot = (why: string) => {
    if (warned) return;
    warned = true;
    deps.logger.error(
      { why },
      'werift media guard NOT installed on a transport: its media port accepts datagrams from any address',
    );
  };

  function guardProtocol(protocol: ProtocolInternals, connection: ConnectionInternals, dtls: RTCDtlsTransport): void {
    const original = protocol.datagramReceived;
    protocol.datagramReceived = function guardedDatagram(data: Buffer, addr: Address): void {
      const first = data[0];
      if (first === undefined) return;
      if (first < 4) {
        if (isBindingRequest(data) && !authenticRequest(connection, data)) {
          onDrop('stun_unauthenticated');
          return;
        }
        original.call(protocol, data, addr);
        return;
      }
      const pair = connection.nominated;
      if (
        !pair ||
        pair.protocol !== protocol ||
        pair.remoteAddr[1] !== addr[1] ||
        !sameHost(pair.remoteAddr[0], addr[0])
      ) {
        onDrop('foreign_address');
        return;
      }
      if (first >= 20 && first <= 63) {
        const socket = (dtls as unknown as { dtls?: Partial<DtlsSocketInternals> }).dtls;
        if (socket && (typeof socket.connected !== 'boolean' || typeof socket.cipher?.decryptPacket !== 'function')) {
          cannot('DTLS socket without connected/cipher.decryptPacket: DTLS records are not filtered');
        } else if (socket?.connected === true) {
          const kept = acceptedDtlsRecords(socket as DtlsSocketInternals, data);
          if (!kept) {
            onDrop('dtls_unauthenticated');
            return;
          }
          original.call(protocol, kept, addr);
          return;
        }
      }
      original.call(protocol, data, addr);
    };
  }

  return {
    problems,
    protect(pc) {
      if (problems.length > 0) {
        cannot(problems.join('; '));
        return false;
      }
      let ok = true;
      for (const dtls of pc.dtlsTransports) {
        const connection = dtls.iceTransport.connection as unknown as Partial<ConnectionInternals>;
        if (!Array.isArray(connection.protocols)) {
          cannot('ICE connection without a protocols list');
          ok = false;
          continue;
        }
        for (const protocol of connection.protocols) {
          if (typeof protocol !== 'object' || protocol === null || guarded.has(protocol)) continue;
          if (!(protocol instanceof StunProtocol)) {
            // TURN/TCP protocols are not configured by the SFU (iceServers [], iceUseTcp false).
            cannot(`unexpected ICE protocol ${(protocol as { type?: string }).type ?? typeof protocol}`);
            ok = false;
            continue;
          }
          guarded.add(protocol);
          guardProtocol(protocol as unknown as ProtocolInternals, connection as ConnectionInternals, dtls);
        }
      }
      return ok;
    },
  };
}
