"""Fail when the notebooks and the generated package disagree.

Runs `nbdev_clean` and `nbdev_export` and compares every notebook and every generated module before and
after. Any difference means someone edited gmem/*.py by hand or forgot to clean/export a notebook: the
files are now regenerated in place, so commit them (or move a hand edit into its notebook) and rerun.
"""
import hashlib, pathlib, subprocess, sys

root = pathlib.Path(__file__).resolve().parents[1]

def snapshot():
    files = sorted(root.glob('nbs/**/*.ipynb')) + sorted(root.glob('gmem/**/*.py'))
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

before = snapshot()
for cmd in (['nbdev_clean'], ['nbdev_export']):
    subprocess.run(cmd, cwd=root, check=True)
after = snapshot()
changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
if changed:
    print('check_sync: notebooks and gmem/ were out of sync; regenerated:\n  ' + '\n  '.join(changed))
    print('Commit the regenerated files (hand edits to gmem/*.py belong in their notebooks).')
    sys.exit(1)
print(f'check_sync: {len(after)} notebooks/modules in sync')
