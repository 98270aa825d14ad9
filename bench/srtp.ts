/**
 * `npm run bench -- srtp`: the per-packet cost of SRTP/SRTCP protection as the SFU does it,
 * werift's contexts with Buffer keys (as werift ships) against the same contexts with prepared
 * KeyObject keys (sfu/media/srtp-keys.ts), both profiles werift negotiates, measured in one run
 * so the ratio is fair on a noisy machine: rounds alternate between the two variants and the
 * median round is reported. Payload sizes: an Opus frame (~100 B) and a video packet (~1100 B).
 * Figures only, nothing passes or fails on time.
 */
import { randomBytes } from 'node:crypto';
import {
  ProtectionProfileAeadAes128Gcm,
  ProtectionProfileAes128CmHmacSha1_80,
  RtpHeader,
  SrtcpSession,
  SrtpSession,
} from 'werift';
import { prepareCipherKeys } from '../sfu/media/srtp-keys.ts';

const PACKETS = Number(process.env.BENCH_SRTP_PACKETS ?? 20_000);
const ROUNDS = Number(process.env.BENCH_SRTP_ROUNDS ?? 7);
const WARMUP = 2000;

type Profile = typeof ProtectionProfileAeadAes128Gcm | typeof ProtectionProfileAes128CmHmacSha1_80;
type CipherKeys = Parameters<typeof prepareCipherKeys>[0];
interface Contexts {
  localContext: { cipher: CipherKeys };
  remoteContext: { cipher: CipherKeys };
}

const round2 = (x: number) => Math.round(x * 100) / 100;
const median = (xs: number[]) => xs.toSorted((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function sessions(profile: Profile, prepared: boolean) {
  const salt = profile === ProtectionProfileAeadAes128Gcm ? 12 : 14;
  const keys = { localMasterKey: randomBytes(16), localMasterSalt: randomBytes(salt), remoteMasterKey: randomBytes(16), remoteMasterSalt: randomBytes(salt) };
  const mirrored = { localMasterKey: keys.remoteMasterKey, localMasterSalt: keys.remoteMasterSalt, remoteMasterKey: keys.localMasterKey, remoteMasterSalt: keys.localMasterSalt };
  const srtp = new SrtpSession({ keys, profile });
  const srtcp = new SrtcpSession({ keys, profile });
  if (prepared) {
    for (const s of [srtp, srtcp] as unknown as Contexts[]) {
      prepareCipherKeys(s.localContext.cipher);
      prepareCipherKeys(s.remoteContext.cipher);
    }
  }
  // The peer that produces what `srtp` decrypts.
  const peer = new SrtpSession({ keys: mirrored, profile });
  return { srtp, srtcp, peer };
}

/** ns per packet for `count` protect (or unprotect) operations. */
function measure(profile: Profile, prepared: boolean, size: number, op: 'protect' | 'unprotect' | 'rtcp'): number {
  const { srtp, srtcp, peer } = sessions(profile, prepared);
  const payload = randomBytes(size);
  const header = (seq: number) => new RtpHeader({ payloadType: 111, sequenceNumber: seq & 0xffff, timestamp: seq * 960, ssrc: 0x1234 });
  const rr = Buffer.from('81c90007000012340000abcd' + '00000000'.repeat(5), 'hex');
  // Sequence numbers must keep increasing: werift tracks the rollover counter per SSRC.
  const incoming = op === 'unprotect' ? Array.from({ length: PACKETS + WARMUP }, (_, i) => peer.encrypt(payload, header(i))) : [];
  const one = (i: number) => {
    if (op === 'protect') srtp.encrypt(payload, header(i));
    else if (op === 'rtcp') srtcp.encrypt(rr);
    else srtp.decrypt(incoming[i]!);
  };
  for (let i = 0; i < WARMUP; i++) one(i);
  const t0 = process.hrtime.bigint();
  for (let i = WARMUP; i < WARMUP + PACKETS; i++) one(i);
  return Number(process.hrtime.bigint() - t0) / PACKETS;
}

export async function run(): Promise<object> {
  const profiles: [string, Profile][] = [
    ['AEAD_AES_128_GCM', ProtectionProfileAeadAes128Gcm],
    ['AES_CM_128_HMAC_SHA1_80', ProtectionProfileAes128CmHmacSha1_80],
  ];
  const cases: { op: 'protect' | 'unprotect' | 'rtcp'; size: number }[] = [
    { op: 'protect', size: 100 },
    { op: 'protect', size: 1100 },
    { op: 'unprotect', size: 100 },
    { op: 'rtcp', size: 0 },
  ];
  const results = [];
  for (const [name, profile] of profiles) {
    for (const { op, size } of cases) {
      const buffer: number[] = [];
      const keyObject: number[] = [];
      for (let r = 0; r < ROUNDS; r++) {
        buffer.push(measure(profile, false, size, op));
        keyObject.push(measure(profile, true, size, op));
      }
      const werift = median(buffer) / 1000;
      const prepared = median(keyObject) / 1000;
      const row = {
        profile: name,
        op,
        payloadBytes: size || undefined,
        weriftBufferKeysUs: round2(werift),
        preparedKeysUs: round2(prepared),
        speedup: round2(werift / prepared),
      };
      console.log(
        `[srtp bench] ${name} ${op}${size ? ` ${size} B` : ''}: werift ${row.weriftBufferKeysUs} µs, prepared keys ${row.preparedKeysUs} µs per packet (${row.speedup}×)`,
      );
      results.push(row);
    }
    await new Promise((r) => setImmediate(r));
  }
  return { packetsPerRound: PACKETS, rounds: ROUNDS, statistic: 'median of rounds', results };
}
