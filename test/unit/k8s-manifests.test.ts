/**
 * The Kubernetes manifests in deploy/k8s, checked without a cluster: every resource kustomize
 * lists exists and is well formed, selectors and Service/Ingress references line up, the SFU
 * uses the host network for its UDP range, and the example Secret feeds the processes' own config
 * loaders: refused while the CHANGE-ME placeholders are in, accepted once real secrets are.
 * The SFU's init container script (which writes rtc.node_ip) is run for real with Node.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { resolveBridgeConfig } from '../../bridge/config.ts';
import { ConfigError } from '../../common/config.ts';
import { parseSfuConfig, resolveSfuConfig } from '../../sfu/config.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const dir = join(root, 'deploy/k8s');

interface Container {
  name: string;
  image: string;
  args?: string[];
  command?: string[];
  env?: { name: string; value?: string }[];
  ports?: { name?: string; containerPort: number; protocol?: string }[];
}
interface Resource {
  apiVersion: string;
  kind: string;
  metadata: { name: string };
  spec?: Record<string, unknown> & {
    selector?: { matchLabels?: Record<string, string> } & Record<string, string>;
    template?: {
      metadata: { labels: Record<string, string> };
      spec: { hostNetwork?: boolean; containers: Container[]; initContainers?: Container[] };
    };
    ports?: { name: string; port: number; targetPort: number | string }[];
    rules?: { http: { paths: { path: string; backend: { service: { name: string; port: { name: string } } } }[] } }[];
  };
  stringData?: Record<string, string>;
}

const kustomization = parse(readFileSync(join(dir, 'kustomization.yaml'), 'utf8')) as { resources: string[] };
/** secret.yaml is the operator's filled-in copy of secret.example.yaml (git-ignored). */
const fileOf = (r: string): string => join(dir, r === 'secret.yaml' ? 'secret.example.yaml' : r);
const resources: Resource[] = kustomization.resources.flatMap((r) =>
  parseAllDocuments(readFileSync(fileOf(r), 'utf8')).map((d) => d.toJS() as Resource),
);
const byKind = (kind: string): Resource[] => resources.filter((r) => r.kind === kind);
const workloads = (): Resource[] => [...byKind('Deployment'), ...byKind('DaemonSet')];
const one = (kind: string, name: string): Resource => {
  const r = resources.find((x) => x.kind === kind && x.metadata.name === name);
  if (!r) throw new Error(`no ${kind} ${name}`);
  return r;
};
const secret = one('Secret', 'matrix-rtc').stringData ?? {};
const REAL = 'r'.repeat(44);
const filled = (text: string): string => text.replaceAll('CHANGE-ME', REAL);

describe('deploy/k8s', () => {
  it('lists only files that exist, each resource well formed', () => {
    for (const r of kustomization.resources) expect(existsSync(fileOf(r)), r).toBe(true);
    expect(readFileSync(join(dir, '.gitignore'), 'utf8')).toMatch(/^secret\.yaml$/m);
    for (const r of resources) {
      expect(r.apiVersion, `${r.kind}`).toMatch(/\S/);
      expect(r.metadata.name, `${r.kind} name`).toMatch(/^[a-z0-9-]+$/);
    }
  });

  it('selects pods by labels their templates carry, and Services find a workload', () => {
    for (const w of workloads()) {
      expect(w.spec?.template?.metadata.labels, w.metadata.name).toMatchObject(w.spec?.selector?.matchLabels ?? { missing: true });
    }
    for (const svc of byKind('Service')) {
      const target = workloads().find((w) =>
        Object.entries(svc.spec?.selector ?? {}).every(([k, v]) => w.spec?.template?.metadata.labels[k] === v),
      );
      expect(target, `Service ${svc.metadata.name}`).toBeDefined();
      const ports = (target?.spec?.template?.spec.containers ?? []).flatMap((c) => c.ports ?? []);
      for (const p of svc.spec?.ports ?? []) {
        expect(ports.some((cp) => cp.name === p.targetPort || cp.containerPort === p.targetPort), `${svc.metadata.name}:${p.targetPort}`).toBe(true);
      }
    }
  });

  it('routes the token and signalling paths of the Ingress to existing Services', () => {
    const paths = byKind('Ingress').flatMap((i) => i.spec?.rules?.flatMap((r) => r.http.paths) ?? []);
    const services = new Map(byKind('Service').map((s) => [s.metadata.name, s.spec?.ports?.map((p) => p.name) ?? []]));
    expect(paths.map((p) => [p.path.split('(')[0], p.backend.service.name])).toEqual([
      ['/livekit/jwt', 'matrix-rtc-bridge'],
      ['/livekit/sfu', 'matrix-rtc-sfu'],
    ]);
    for (const p of paths) expect(services.get(p.backend.service.name)).toContain(p.backend.service.port.name);
  });

  it('runs the SFU on the host network, so its UDP range is the node\'s', () => {
    const sfu = one('DaemonSet', 'matrix-rtc-sfu');
    expect(sfu.spec?.template?.spec.hostNetwork).toBe(true);
    expect(sfu.spec?.template?.spec.containers[0]?.args?.slice(0, 1)).toEqual(['sfu']);
  });

  it('refuses the example Secret until the CHANGE-ME secrets are replaced', () => {
    expect(() => parseSfuConfig(parse(secret['sfu.yaml'] ?? ''), 'secret sfu.yaml')).toThrow(ConfigError);
    expect(() => parseSfuConfig(parse(secret['sfu.yaml'] ?? ''), 'secret sfu.yaml')).toThrow(/keys\.APIchangeme: secret is 9 characters/);
  });

  it('writes the node IP into the SFU config with its init container, and the result loads', () => {
    const init = one('DaemonSet', 'matrix-rtc-sfu').spec?.template?.spec.initContainers?.[0];
    const script = (init?.args?.[0] ?? '').replaceAll('/secrets/', '$IN/').replaceAll('/run/matrix-rtc/', '$OUT/');
    const tmp = mkdtempSync(join(tmpdir(), 'k8s-init-'));
    mkdirSync(join(tmp, 'in'));
    mkdirSync(join(tmp, 'out'));
    writeFileSync(join(tmp, 'in/sfu.yaml'), filled(secret['sfu.yaml'] ?? ''));
    const code = script.replaceAll("'$IN/", `'${join(tmp, 'in')}/`).replaceAll("'$OUT/", `'${join(tmp, 'out')}/`);
    const r = spawnSync(process.execPath, [...(init?.command?.slice(1) ?? []), code], {
      cwd: root,
      env: { ...process.env, NODE_IP: '203.0.113.7' },
      encoding: 'utf8',
    });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const cfg = resolveSfuConfig({ configFile: join(tmp, 'out/sfu.yaml') });
    expect(cfg.rtc.node_ip).toBe('203.0.113.7');
    expect(cfg.keys).toEqual({ APIchangeme: REAL });
    const sfuPort = one('Service', 'matrix-rtc-sfu').spec?.ports?.[0]?.port;
    expect(cfg.port).toBe(sfuPort);
  });

  it('configures the bridge with lk-jwt-service variables its loader accepts, with the SFU\'s key', () => {
    const tmp = mkdtempSync(join(tmpdir(), 'k8s-bridge-'));
    for (const f of ['livekit.keys', 'appservice.yaml']) writeFileSync(join(tmp, f), filled(secret[f] ?? ''));
    const container = one('Deployment', 'matrix-rtc-bridge').spec?.template?.spec.containers[0];
    const env = Object.fromEntries(
      (container?.env ?? []).map((e) => [e.name, (e.value ?? '').replace('/secrets/', `${tmp}/`)]),
    );
    const cfg = resolveBridgeConfig(env, join(root, 'config/bridge.yaml'));
    const sfu = parseSfuConfig(parse(filled(secret['sfu.yaml'] ?? '')), 'secret sfu.yaml');
    expect(sfu.keys[cfg.livekit.key]).toBe(cfg.livekit.secret);
    expect(cfg.redisUrl).toBe('redis://matrix-rtc-redis:6379/0');
    expect(cfg.appservice?.serverName).toBe('example.org');
  });

  it('sends the SFU\'s webhooks to the bridge Service\'s /sfu_webhook, signed with the bridge\'s key', () => {
    const tmp = mkdtempSync(join(tmpdir(), 'k8s-webhook-'));
    writeFileSync(join(tmp, 'livekit.keys'), filled(secret['livekit.keys'] ?? ''));
    const container = one('Deployment', 'matrix-rtc-bridge').spec?.template?.spec.containers[0];
    const env = Object.fromEntries((container?.env ?? []).map((e) => [e.name, (e.value ?? '').replace('/secrets/', `${tmp}/`)]));
    const bridge = resolveBridgeConfig({ ...env, LIVEKIT_AS_REGISTRATION_FILE: '', LIVEKIT_HS_SERVER_NAME: '' });
    const sfu = parseSfuConfig(parse(filled(secret['sfu.yaml'] ?? '')), 'secret sfu.yaml');
    expect(sfu.webhook.api_key).toBe(bridge.livekit.key);
    expect(sfu.webhook.urls).toHaveLength(1);
    const url = new URL(sfu.webhook.urls[0]!);
    const svc = one('Service', 'matrix-rtc-bridge');
    expect(url.hostname).toBe(svc.metadata.name);
    expect(Number(url.port)).toBe(svc.spec?.ports?.[0]?.port);
    expect(url.pathname).toBe('/sfu_webhook');
    // The SFU runs on the host network; it still resolves cluster Service names.
    expect(one('DaemonSet', 'matrix-rtc-sfu').spec?.template?.spec).toMatchObject({ dnsPolicy: 'ClusterFirstWithHostNet' });
  });

  it('runs several SFU pods as one cluster on the Redis Service, draining within the grace period', () => {
    const sfu = parseSfuConfig(parse(filled(secret['sfu.yaml'] ?? '')), 'secret sfu.yaml');
    const [host, port] = sfu.redis.address.split(':');
    const redisService = one('Service', host ?? '');
    expect(redisService.spec?.ports?.map((p) => p.port)).toContain(Number(port));
    const podSpec = one('DaemonSet', 'matrix-rtc-sfu').spec?.template?.spec as { terminationGracePeriodSeconds?: number } | undefined;
    const grace = podSpec?.terminationGracePeriodSeconds;
    expect(grace).toBeGreaterThan(sfu.cluster.drain_seconds);
  });
});
