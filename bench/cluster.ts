/**
 * `npm run bench -- cluster`: the SFU cluster on a real redis-server, in two parts.
 *
 * relay: what the signalling relay costs. Join time (WebSocket open -> JoinResponse) and
 * ping -> pong round trips straight to the hosting node and through another node's relay, next
 * to a Redis pub/sub request/response echo on the same machine (what a channel over Redis
 * would add to every message).
 *
 * soak: 3 nodes behind a TCP balancer; rtc-node participants join and leave rooms continuously
 * for CLUSTER_SOAK_SECONDS (default 300) while one node is killed (-9) and started again every
 * CLUSTER_KILL_EVERY_SECONDS (default 60). Figures: joins asked / joined / seen in their room
 * through RoomService, time until the participants of a killed node's rooms are listed on a
 * live node again, and ghosts (listed but gone, or connected but not listed) at the end.
 * Every process started here is stopped here.
 */
import { Room, dispose } from '@livekit/rtc-node';
import { RoomServiceClient } from 'livekit-server-sdk';
import { WebSocket } from 'ws';
import { SignalRequest, SignalResponse } from '@livekit/protocol';
import { createRedisConnection } from '../common/redis.ts';
import { createSilentLogger } from '../common/logger.ts';
import { ROOM_NODE_KEY } from '../sfu/routing/redis-router.ts';
import { startClusterScene, type ClusterScene } from '../test/support/sfu-cluster.ts';
import { startSfuNode, type SfuNodeProcess } from '../test/support/sfu-node-process.ts';
import { startTcpBalancer } from '../test/support/tcp-balancer.ts';
import { TEST_API_KEY, TEST_API_SECRET } from '../test/support/sfu-harness.ts';

const SOAK_SECONDS = Number(process.env.CLUSTER_SOAK_SECONDS ?? 300);
const KILL_EVERY_SECONDS = Number(process.env.CLUSTER_KILL_EVERY_SECONDS ?? 60);
const CONCURRENT = 8;
const ROOMS = 4;

function quantiles(xs: number[]): { n: number; p50: number; p95: number; max: number } {
  const s = xs.toSorted((a, b) => a - b);
  const at = (q: number) => Math.round((s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? Number.NaN) * 100) / 100;
  return { n: s.length, p50: at(0.5), p95: at(0.95), max: at(1) };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A raw signalling socket that resolves `next(case)` the moment that message arrives. */
async function openSignal(url: string): Promise<{ ws: WebSocket; next(c: string): Promise<SignalResponse> }> {
  const ws = new WebSocket(url);
  const waiting: { c: string; resolve: (m: SignalResponse) => void }[] = [];
  const early: SignalResponse[] = [];
  ws.on('message', (data: Buffer) => {
    const m = SignalResponse.fromBinary(new Uint8Array(data));
    const i = waiting.findIndex((w) => w.c === m.message.case);
    if (i >= 0) waiting.splice(i, 1)[0]!.resolve(m);
    else early.push(m);
  });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  return {
    ws,
    next: (c) => {
      const i = early.findIndex((m) => m.message.case === c);
      if (i >= 0) return Promise.resolve(early.splice(i, 1)[0]!);
      return new Promise((resolve) => waiting.push({ c, resolve }));
    },
  };
}

async function measureRelay(): Promise<object> {
  const scene = await startClusterScene({ nodes: 2 });
  try {
    const [a, b] = scene.nodes as [SfuNodeProcess, SfuNodeProcess];
    const room = 'relay-bench';
    const first = await openSignal(`${a.wsUrl}/rtc?access_token=${await scene.token('anchor', room)}`);
    await first.next('join');
    const redis = createRedisConnection({ address: `127.0.0.1:${scene.redis.port}` }, createSilentLogger());
    const hostId = await redis.hget(ROOM_NODE_KEY, room);
    const host = hostId === a.nodeId ? a : b;
    const entry = host === a ? b : a;

    const joinTimes = async (node: SfuNodeProcess, tag: string) => {
      const times: number[] = [];
      for (let i = 0; i < 20; i++) {
        const t0 = performance.now();
        const s = await openSignal(`${node.wsUrl}/rtc?access_token=${await scene.token(`${tag}-${i}`, room)}`);
        await s.next('join');
        times.push(performance.now() - t0);
        s.ws.close();
      }
      return quantiles(times);
    };
    const pingTimes = async (node: SfuNodeProcess, tag: string) => {
      const s = await openSignal(`${node.wsUrl}/rtc?access_token=${await scene.token(tag, room)}`);
      await s.next('join');
      const times: number[] = [];
      for (let i = 0; i < 200; i++) {
        const t0 = performance.now();
        s.ws.send(new SignalRequest({ message: { case: 'ping', value: BigInt(Date.now()) } }).toBinary());
        await s.next('pong');
        times.push(performance.now() - t0);
      }
      s.ws.close();
      return quantiles(times);
    };
    const result = {
      joinMs: { direct: await joinTimes(host, 'dj'), relayed: await joinTimes(entry, 'rj') },
      pingRoundTripMs: { direct: await pingTimes(host, 'dp'), relayed: await pingTimes(entry, 'rp') },
      redisPubSubRoundTripMs: await redisEcho(scene),
    };
    first.ws.close();
    redis.disconnect();
    return result;
  } finally {
    await scene.end();
  }
}

/** Request on one channel, answer on another, through the same redis-server: a Redis signalling channel's floor. */
async function redisEcho(scene: ClusterScene): Promise<object> {
  const mk = () => createRedisConnection({ address: `127.0.0.1:${scene.redis.port}` }, createSilentLogger());
  const [reqSub, resSub, pub, hostPub] = [mk(), mk(), mk(), mk()];
  await reqSub.subscribe('bench:req');
  await resSub.subscribe('bench:res');
  reqSub.on('message', (_c: string, m: string) => void hostPub.publish('bench:res', m));
  const times: number[] = [];
  for (let i = 0; i < 200; i++) {
    const t0 = performance.now();
    const got = new Promise<void>((resolve) => resSub.once('message', () => resolve()));
    await pub.publish('bench:req', String(i));
    await got;
    times.push(performance.now() - t0);
  }
  for (const c of [reqSub, resSub, pub, hostPub]) c.disconnect();
  return quantiles(times);
}

interface Member {
  identity: string;
  room: string;
  client: Room;
  leaveAt: number;
}

async function soak(): Promise<object> {
  const scene = await startClusterScene({ nodes: 3, node: { extra: { room: { departure_timeout: 5, empty_timeout: 10 } } } });
  const balancer = await startTcpBalancer(scene.nodes.map((n) => n.port));
  /** RoomService through a random live node: any node must answer for the whole cluster. */
  const api = () => new RoomServiceClient(scene.nodes[Math.floor(Math.random() * scene.nodes.length)]!.url, TEST_API_KEY, TEST_API_SECRET);
  const redis = createRedisConnection({ address: `127.0.0.1:${scene.redis.port}` }, createSilentLogger());
  const members = new Set<Member>();
  const figures = { asked: 0, joined: 0, seenInRoom: 0, joinErrors: [] as string[], notSeen: [] as string[], kills: 0 };
  const joinMs: number[] = [];
  const reconnectMs: number[] = [];
  const lostDuringKill: string[] = [];
  let seq = 0;
  const started = Date.now();
  let nextKill = started + KILL_EVERY_SECONDS * 1000;

  const listedIn = async (room: string): Promise<Set<string>> => {
    try {
      return new Set((await api().listParticipants(room)).map((p) => p.identity));
    } catch {
      return new Set();
    }
  };

  const join = async () => {
    const identity = `p${seq++}`;
    const room = `soak-${Math.floor(Math.random() * ROOMS)}`;
    figures.asked++;
    const client = new Room();
    const t0 = Date.now();
    try {
      await client.connect(balancer.wsUrl, await scene.token(identity, room), { autoSubscribe: false, dynacast: false });
    } catch (err) {
      figures.joinErrors.push(`${identity}: ${(err as Error).message}`);
      await client.disconnect().catch(() => undefined);
      return;
    }
    figures.joined++;
    joinMs.push(Date.now() - t0);
    members.add({ identity, room, client, leaveAt: Date.now() + 5000 + Math.random() * 15_000 });
    for (let i = 0; i < 50; i++) {
      if ((await listedIn(room)).has(identity)) {
        figures.seenInRoom++;
        return;
      }
      await sleep(200);
    }
    figures.notSeen.push(identity);
  };

  const killOne = async () => {
    const victim = scene.nodes[Math.floor(Math.random() * scene.nodes.length)]!;
    const map = await redis.hgetall(ROOM_NODE_KEY);
    const affected = [...members].filter((m) => map[m.room] === victim.nodeId && m.client.isConnected);
    const t0 = Date.now();
    await victim.kill('SIGKILL');
    figures.kills++;
    scene.nodes.splice(scene.nodes.indexOf(victim), 1);
    const restart = (async () => {
      await sleep(3000);
      scene.nodes.push(await startSfuNode({ redisPort: scene.redis.port, udpStart: 60_000 + (figures.kills % 4) * 500, port: victim.port, extra: { room: { departure_timeout: 5, empty_timeout: 10 } } }));
    })();
    await Promise.all(
      affected.map(async (m) => {
        for (let i = 0; i < 150; i++) {
          if (!members.has(m)) return;
          const owner = await redis.hget(ROOM_NODE_KEY, m.room).catch(() => null);
          if (owner && owner !== victim.nodeId && m.client.isConnected && (await listedIn(m.room)).has(m.identity)) {
            reconnectMs.push(Date.now() - t0);
            return;
          }
          await sleep(100);
        }
        lostDuringKill.push(m.identity);
      }),
    );
    await restart;
  };

  try {
    const pending = new Set<Promise<void>>();
    let killing: Promise<void> | undefined;
    while (Date.now() - started < SOAK_SECONDS * 1000) {
      for (const m of members) {
        if (Date.now() >= m.leaveAt) {
          members.delete(m);
          await m.client.disconnect().catch(() => undefined);
        }
      }
      while (members.size + pending.size < CONCURRENT) {
        const p = join().finally(() => pending.delete(p));
        pending.add(p);
      }
      if (!killing && Date.now() >= nextKill) {
        nextKill = Date.now() + KILL_EVERY_SECONDS * 1000;
        killing = killOne().finally(() => (killing = undefined));
      }
      await sleep(250);
    }
    await Promise.all(pending);
    await killing;
    // Ghosts: after the churn, every connected member listed in its room and nobody else.
    await sleep(3000);
    const listed = new Set<string>();
    for (const r of await api().listRooms()) for (const id of await listedIn(r.name)) listed.add(id);
    const connected = new Set([...members].filter((m) => m.client.isConnected).map((m) => m.identity));
    const ghosts = [...listed].filter((id) => !connected.has(id));
    const missing = [...connected].filter((id) => !listed.has(id));
    for (const m of members) await m.client.disconnect().catch(() => undefined);
    await sleep(2000);
    let afterLeave = 0;
    for (const r of await api().listRooms()) afterLeave += (await listedIn(r.name)).size;
    return {
      seconds: SOAK_SECONDS,
      killEverySeconds: KILL_EVERY_SECONDS,
      ...figures,
      joinErrors: figures.joinErrors.slice(0, 20),
      joinSuccess: figures.asked ? figures.joined / figures.asked : 0,
      joinMs: quantiles(joinMs),
      reconnectAfterKillMs: quantiles(reconnectMs),
      lostDuringKill,
      ghostsAtEnd: ghosts,
      connectedButNotListed: missing,
      listedAfterEveryoneLeft: afterLeave,
    };
  } finally {
    redis.disconnect();
    for (const m of members) await m.client.disconnect().catch(() => undefined);
    await balancer.stop();
    await scene.end();
  }
}

export async function run(): Promise<object> {
  const relay = await measureRelay();
  console.log('relay', JSON.stringify(relay));
  const result = { relay, soak: await soak() };
  // The rtc-node runtime keeps the process alive until it is disposed.
  await dispose();
  return result;
}

