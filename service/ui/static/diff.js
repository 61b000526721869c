// Word-level differences between two texts (longest common subsequence), rendered as <ins>/<del> text nodes.

export function tokens(text) {
  return text.match(/\s+|[^\s]+/g) || [];
}

// [{op: "same"|"add"|"del", text}] turning `before` into `after`; runs of one op are merged.
export function diffWords(before, after) {
  const a = tokens(before);
  const b = tokens(after);
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start++;
  let endA = a.length;
  let endB = b.length;
  while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) { endA--; endB--; }
  const midA = a.slice(start, endA);
  const midB = b.slice(start, endB);
  const n = midA.length;
  const m = midB.length;
  const ops = [];
  const push = (op, text) => {
    const last = ops[ops.length - 1];
    if (last && last.op === op) last.text += text;
    else ops.push({ op, text });
  };
  if (start) push("same", a.slice(0, start).join(""));
  if (n * m > 4_000_000) {
    push("del", midA.join(""));
    push("add", midB.join(""));
  } else {
    const width = m + 1;
    const table = new Uint32Array((n + 1) * width);
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        table[i * width + j] = midA[i] === midB[j]
          ? table[(i + 1) * width + j + 1] + 1
          : Math.max(table[(i + 1) * width + j], table[i * width + j + 1]);
      }
    }
    let i = 0;
    let j = 0;
    while (i < n && j < m) {
      if (midA[i] === midB[j]) { push("same", midA[i]); i++; j++; }
      else if (table[(i + 1) * width + j] >= table[i * width + j + 1]) { push("del", midA[i]); i++; }
      else { push("add", midB[j]); j++; }
    }
    while (i < n) push("del", midA[i++]);
    while (j < m) push("add", midB[j++]);
  }
  if (endA < a.length) push("same", a.slice(endA).join(""));
  return ops;
}

// Fill `container` with the difference; returns counts of changed words.
export function renderDiff(container, before, after) {
  container.replaceChildren();
  const counts = { added: 0, removed: 0 };
  for (const { op, text } of diffWords(before, after)) {
    if (op === "same") {
      container.append(document.createTextNode(text));
      continue;
    }
    const node = document.createElement(op === "add" ? "ins" : "del");
    node.textContent = text;
    container.append(node);
    const words = (text.match(/[^\s]+/g) || []).length;
    if (op === "add") counts.added += words;
    else counts.removed += words;
  }
  return counts;
}
