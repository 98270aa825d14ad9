/**
 * Media-worker test hooks (loaded by every worker through `startTestSfu({ workerHooks })`):
 * drops every `everyNth` first transmission of video to subscribers, the way the in-process
 * `dropOutgoing` hook does, so NACK recovery can be tested when the track crosses workers.
 * Counts its drops on the BroadcastChannel `channel` (one message per drop: cheap at 5 %).
 */
interface Data {
  everyNth: number;
  channel: string;
}

export default function hooks(data: Data) {
  const channel = new BroadcastChannel(data.channel);
  // The channel must not keep a worker alive on its own.
  (channel as unknown as { unref?: () => void }).unref?.();
  // BroadcastChannel.postMessage has no target origin (the lint rule is about window.postMessage).
  const post = channel.postMessage.bind(channel);
  let seen = 0;
  return {
    dropOutgoing: ({ kind }: { subscriber: string; kind: 'audio' | 'video'; sequenceNumber: number }) => {
      if (kind !== 'video' || ++seen % data.everyNth !== 0) return false;
      post('drop');
      return true;
    },
  };
}
