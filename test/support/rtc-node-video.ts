/**
 * VP8 video with rtc-node for the media tests: a moving I420 test pattern published at 30 fps,
 * and the subscriber's inbound-rtp loss-recovery figures.
 */
import {
  LocalVideoTrack,
  TrackPublishOptions,
  TrackSource,
  VideoBufferType,
  VideoCodec,
  VideoFrame,
  VideoSource,
  VideoStream,
  type RemoteTrack,
  type Room,
} from '@livekit/rtc-node';

const WIDTH = 640;
const HEIGHT = 360;

/** Publishes a moving I420 test pattern at 30 fps; returns stop(). */
export async function publishVideo(room: Room): Promise<() => Promise<void>> {
  const source = new VideoSource(WIDTH, HEIGHT);
  const track = LocalVideoTrack.createVideoTrack('camera', source);
  await room.localParticipant!.publishTrack(
    track,
    new TrackPublishOptions({ source: TrackSource.SOURCE_CAMERA, simulcast: false, videoCodec: VideoCodec.VP8 }),
  );
  const data = new Uint8Array((WIDTH * HEIGHT * 3) / 2);
  let n = 0;
  const timer = setInterval(() => {
    n++;
    // Luma noise plus a moving bar: enough detail for several packets per frame.
    for (let i = 0; i < WIDTH * HEIGHT; i++) data[i] = (i * 7 + n * 13 + ((i % WIDTH) >> 3 === n % 80 ? 200 : 0)) & 0xff;
    data.fill(128, WIDTH * HEIGHT);
    source.captureFrame(new VideoFrame(data, WIDTH, HEIGHT, VideoBufferType.I420));
  }, 33);
  return async () => {
    clearInterval(timer);
    await source.close().catch(() => undefined);
  };
}

export interface InboundVideo {
  nackCount: number;
  pliCount: number;
  packetsLost: number;
  packetsReceived: number;
  retransmittedPacketsReceived: number;
}

export async function inboundVideo(room: Room): Promise<InboundVideo | undefined> {
  const stats = await room.getRtcStats();
  for (const s of stats.subscriberStats) {
    if (s.stats.case !== 'inboundRtp') continue;
    const v = s.stats.value;
    if (v.stream?.kind !== 'video') continue;
    return {
      nackCount: v.inbound?.nackCount ?? 0,
      pliCount: v.inbound?.pliCount ?? 0,
      retransmittedPacketsReceived: Number(v.inbound?.retransmittedPacketsReceived ?? 0),
      packetsLost: Number(v.received?.packetsLost ?? 0),
      packetsReceived: Number(v.received?.packetsReceived ?? 0),
    };
  }
  return undefined;
}


/** Counts the frames rtc-node decodes from a remote video track until `stop()`. */
export function countVideoFrames(track: RemoteTrack): { readonly count: number; stop(): Promise<void> } {
  let count = 0;
  const stream = new VideoStream(track);
  const reader = stream.getReader();
  const pump = (async () => {
    for (;;) {
      const next = await reader.read();
      if (next.done) return;
      count++;
    }
  })();
  return {
    get count() {
      return count;
    },
    async stop() {
      reader.releaseLock();
      await stream.cancel().catch(() => undefined);
      await pump.catch(() => undefined);
    },
  };
}
