/**
 * Per-packet forwarding, the public face of sfu/media's hot path: `Upstream` (one per published
 * track, all its simulcast layers; sfu/media/upstream.ts) feeds one `DownForwarder` per
 * subscriber (layer choice, continuity rewriting, NACK answers; sfu/media/downtrack.ts). VP8
 * descriptor munging lives in sfu/media/vp8.ts, the packet cache and uplink NACK tracking in
 * sfu/media/packet-cache.ts, keyframe detection for other codecs in sfu/media/keyframe.ts.
 * Payload bytes are never touched apart from VP8 descriptor counters (E2EE passthrough).
 */
export { isKeyframeStart } from './keyframe.ts';
export { Upstream, LAYER_RANK, type LayerState, type PacketSink, type PacketTap, type UpstreamOptions } from './upstream.ts';
export { DownForwarder, FORWARDED_EXTENSION_URIS, toRtpPacket, type DownForwarderOptions, type ForwardedPacket, type ForwardedHeader } from './downtrack.ts';
