// Prints cog.yaml as JSON (the run.cog.config label). Handles the subset of YAML cog.yaml uses: nested maps
// by two-space indentation, "- item" lists of scalars, quoted or bare scalars, comments. Anything else is an
// error, so the label can never silently differ from the file.
import { readFileSync } from 'node:fs';

function scalar(text) {
  const t = text.trim();
  if (/^".*"$/.test(t) || /^'.*'$/.test(t)) return t.slice(1, -1);
  if (t === 'true' || t === 'false') return t === 'true';
  if (t === 'null' || t === '~') return null;
  if (/^-?\d+(\.\d+)?$/.test(t)) return Number(t);
  return t;
}

export function parseCogYaml(source) {
  const root = {};
  const stack = [{ indent: -1, node: root }];
  const lines = source.split('\n');
  for (let n = 0; n < lines.length; n++) {
    const raw = lines[n].replace(/\s+#.*$/, '').replace(/^#.*$/, '');
    if (raw.trim() === '') continue;
    const indent = raw.length - raw.trimStart().length;
    const line = raw.trim();
    while (stack.length > 1 && indent <= stack.at(-1).indent) stack.pop();
    const parent = stack.at(-1);
    const item = /^- (.*)$/.exec(line);
    if (item) {
      if (!Array.isArray(parent.node)) throw new Error(`cog.yaml line ${n + 1}: list item outside a list`);
      parent.node.push(scalar(item[1]));
      continue;
    }
    const kv = /^([A-Za-z_][\w-]*):(?:\s+(.*))?$/.exec(line);
    if (!kv || Array.isArray(parent.node)) throw new Error(`cog.yaml line ${n + 1}: unsupported syntax: ${line}`);
    if (kv[2] !== undefined && kv[2] !== '') {
      parent.node[kv[1]] = scalar(kv[2]);
    } else {
      const next = lines.slice(n + 1).find((l) => l.trim() !== '' && !l.trim().startsWith('#'));
      const child = next && next.trim().startsWith('- ') ? [] : {};
      parent.node[kv[1]] = child;
      stack.push({ indent, node: child });
    }
  }
  return root;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  process.stdout.write(JSON.stringify(parseCogYaml(readFileSync(process.argv[2] ?? 'cog.yaml', 'utf8'))));
}
