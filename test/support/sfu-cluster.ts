/**
 * A cluster scene for tests: one real redis-server, SFU node processes on it (each its own
 * HTTP port and UDP range), an optional webhook receiver, rtc-node clients, tokens and
 * livekit-server-sdk RoomService clients per node. `end()` disconnects the clients and stops
 * every process the scene started, by pid.
 */
import { AccessToken, RoomServiceClient } from 'livekit-server-sdk';
import type { RemoteTrack } from '@livekit/rtc-node';
import { startRedisServer, type RunningRedis } from './redis-server.ts';
import { startSfuNode, type SfuNodeOptions, type SfuNodeProcess } from './sfu-node-process.ts';
import { TEST_API_KEY, TEST_API_SECRET } from './sfu-harness.ts';
import { connectRtcNode, dominantFrequency, rms, SAMPLE_RATE, type RtcNodeClient } from './rtc-node.ts';
import { startTestWebhookReceiver, type TestWebhookReceiver } from './webhook-receiver.ts';

export interface ClusterScene {
  redis: RunningRedis;
  nodes: SfuNodeProcess[];
  webhooks: TestWebhookReceiver | undefined;
  addNode(extra?: Partial<SfuNodeOptions>): Promise<SfuNodeProcess>;
  token(identity: string, room: string): Promise<string>;
  connect(wsUrl: string, identity: string, room: string): Promise<RtcNodeClient>;
  api(node: SfuNodeProcess): RoomServiceClient;
  end(): Promise<void>;
}

let udpBase = 52_000;

export async function startClusterScene(opts: { nodes: number; webhooks?: boolean; node?: Partial<SfuNodeOptions> }): Promise<ClusterScene> {
  const redis = await startRedisServer();
  const clients: RtcNodeClient[] = [];
  const nodes: SfuNodeProcess[] = [];
  let webhooks: TestWebhookReceiver | undefined;
  const scene: ClusterScene = {
    redis,
    nodes,
    get webhooks() {
      return webhooks;
    },
    async addNode(extra = {}) {
      udpBase += 500;
      if (udpBase > 64_000) udpBase = 52_000;
      const node = await startSfuNode({
        redisPort: redis.port,
        udpStart: udpBase,
        ...(webhooks ? { webhookUrl: webhooks.url } : {}),
        ...opts.node,
        ...extra,
      });
      nodes.push(node);
      return node;
    },
    async token(identity, room) {
      const at = new AccessToken(TEST_API_KEY, TEST_API_SECRET, { identity, ttl: '10m' });
      at.addGrant({ roomJoin: true, room });
      return await at.toJwt();
    },
    async connect(wsUrl, identity, room) {
      const client = await connectRtcNode(wsUrl, await scene.token(identity, room));
      clients.push(client);
      return client;
    },
    api: (node) => new RoomServiceClient(node.url, TEST_API_KEY, TEST_API_SECRET),
    async end() {
      for (const c of clients.splice(0)) await c.disconnect();
      for (const n of nodes.splice(0)) await n.stop();
      await webhooks?.stop();
      // A test may have replaced the server (stopped and started again on the same port).
      await scene.redis.stop();
    },
  };
  try {
    if (opts.webhooks) webhooks = await startTestWebhookReceiver({ apiKey: TEST_API_KEY, apiSecret: TEST_API_SECRET });
    for (let i = 0; i < opts.nodes; i++) await scene.addNode();
  } catch (err) {
    await scene.end();
    throw err;
  }
  return scene;
}

/** Waits for `from`'s tone at `listener` and returns its dominant frequency over one steady second. */
export async function hearTone(listener: RtcNodeClient, from: string, timeoutMs = 15_000): Promise<{ frequency: number; rms: number }> {
  const participant = [...listener.room.remoteParticipants.values()].find((p) => p.identity === from);
  const existing = [...(participant?.trackPublications.values() ?? [])].find((pub) => pub.track)?.track;
  const track =
    existing ?? (await listener.waitForEvent('trackSubscribed', (_t, _pub, p) => p.identity === from, timeoutMs))[0];
  const samples = await listener.collectAudio(track as RemoteTrack, SAMPLE_RATE * 1.5, timeoutMs);
  const steady = samples.subarray(SAMPLE_RATE / 2);
  return { frequency: dominantFrequency(steady, 100, 2000), rms: rms(steady) };
}
