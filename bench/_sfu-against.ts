/**
 * The other side of an A/B run (`npm run bench -- sfu --against <git ref>`): a detached git
 * worktree of that ref in a temporary directory, sharing this checkout's node_modules through a
 * symlink (no build step: the SFU runs from its sources), so its SFU can be started beside ours
 * and the two measured in turn in one run. `remove()` deletes the worktree again.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from './_sfu-procs.ts';

export interface AgainstTree {
  ref: string;
  commit: string;
  root: string;
  remove(): void;
}

const git = (args: string[], cwd = repoRoot) => execFileSync('git', args, { cwd, encoding: 'utf8' }).trim();

/** The `--against <ref>` argument of the bench command line, if any. */
export function againstArg(argv: string[]): string | undefined {
  const i = argv.indexOf('--against');
  if (i < 0) return undefined;
  const ref = argv[i + 1];
  if (!ref || ref.startsWith('-')) throw new Error('--against needs a git ref (a commit, branch or tag)');
  return ref;
}

export function checkoutAgainst(ref: string): AgainstTree {
  const commit = git(['rev-parse', '--verify', `${ref}^{commit}`]);
  const dir = mkdtempSync(join(tmpdir(), 'sfu-bench-against-'));
  const root = join(dir, 'tree');
  git(['worktree', 'add', '--detach', root, commit]);
  symlinkSync(join(repoRoot, 'node_modules'), join(root, 'node_modules'));
  return {
    ref,
    commit,
    root,
    remove: () => {
      try {
        git(['worktree', 'remove', '--force', root]);
      } catch {
        // already gone
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export const currentCommit = (): string => git(['rev-parse', 'HEAD']);
