// Markdown to DOM nodes, safe by construction: the only output is elements made here and text
// nodes, so HTML in the source (<script>, <img onerror>) stays literal text. Links are made only
// for http(s) URLs. Enough Markdown for model answers and documents, re-run on every streamed frame.

const MAX_DEPTH = 8; // nesting of quotes, lists and emphasis; deeper input renders as text

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$/;
const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const BULLET = /^(\s*)([-*+])\s+(.*)$/;
const ORDERED = /^(\s*)(\d{1,9})[.)]\s+(.*)$/;
const TABLE_RULE = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;

/** The Markdown `source` as a DocumentFragment. */
export function renderMarkdown(source) {
  const fragment = document.createDocumentFragment();
  renderBlocks(String(source ?? '').replace(/\r\n?/g, '\n').split('\n'), fragment, 0);
  return fragment;
}

const isBlank = (line) => line.trim() === '';

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line)
    || BULLET.test(line) || ORDERED.test(line);
}

function renderBlocks(lines, parent, depth) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (isBlank(line)) { i += 1; continue; }
    if (depth >= MAX_DEPTH) { parent.append(paragraph(lines.slice(i), depth)); return; }
    let match;
    if ((match = FENCE.exec(line))) {
      i = codeBlock(lines, i, match, parent);
    } else if ((match = HEADING.exec(line))) {
      const heading = document.createElement(`h${match[1].length}`);
      renderInline(match[2], heading, depth);
      parent.append(heading);
      i += 1;
    } else if (RULE.test(line)) {
      parent.append(document.createElement('hr'));
      i += 1;
    } else if (QUOTE.test(line)) {
      const quoted = [];
      while (i < lines.length && QUOTE.test(lines[i])) quoted.push(QUOTE.exec(lines[i++])[1]);
      const quote = document.createElement('blockquote');
      renderBlocks(quoted, quote, depth + 1);
      parent.append(quote);
    } else if (BULLET.test(line) || ORDERED.test(line)) {
      i = list(lines, i, parent, depth);
    } else if (line.includes('|') && i + 1 < lines.length && TABLE_RULE.test(lines[i + 1]) && lines[i + 1].includes('-')) {
      i = table(lines, i, parent, depth);
    } else {
      const start = i;
      i += 1;
      while (i < lines.length && !isBlank(lines[i]) && !startsBlock(lines[i])) i += 1;
      parent.append(paragraph(lines.slice(start, i), depth));
    }
  }
}

/** A fenced block up to its closing fence, or to the end (an answer still streaming). */
function codeBlock(lines, i, match, parent) {
  const [, fence, lang] = match;
  const body = [];
  let j = i + 1;
  while (j < lines.length && !lines[j].trim().startsWith(fence)) body.push(lines[j++]);
  const pre = document.createElement('pre');
  const code = document.createElement('code');
  if (lang) code.className = `language-${lang.replace(/[^\w-]/g, '')}`;
  code.textContent = body.join('\n');
  pre.append(code);
  parent.append(pre);
  return j + 1;
}

function paragraph(lines, depth) {
  const p = document.createElement('p');
  lines.forEach((line, n) => {
    if (n > 0) p.append(document.createElement('br')); // a chat answer's single newlines are meant
    renderInline(line.trim(), p, depth);
  });
  return p;
}

/** A list of one kind from line i; items hold their indented continuation lines, rendered as blocks. */
function list(lines, i, parent, depth) {
  const first = BULLET.exec(lines[i]) || ORDERED.exec(lines[i]);
  const ordered = !BULLET.test(lines[i]);
  const pattern = ordered ? ORDERED : BULLET;
  const indent = first[1].length;
  const node = document.createElement(ordered ? 'ol' : 'ul');
  if (ordered && first[2] !== '1') node.start = Number(first[2]);
  while (i < lines.length) {
    const match = pattern.exec(lines[i]);
    if (!match || match[1].length !== indent) break;
    const body = [match[3]];
    i += 1;
    // Continuation: indented deeper than the marker, or blank lines followed by such a line.
    while (i < lines.length) {
      const line = lines[i];
      const deeper = line.length - line.trimStart().length > indent;
      if (!isBlank(line) && (deeper || !startsBlock(line))) {
        if (!deeper && isBlank(lines[i - 1])) break;
        body.push(line.slice(Math.min(indent + 2, line.length - line.trimStart().length)));
        i += 1;
      } else if (isBlank(line) && i + 1 < lines.length && lines[i + 1].length - lines[i + 1].trimStart().length > indent && !isBlank(lines[i + 1])) {
        body.push('');
        i += 1;
      } else break;
    }
    node.append(listItem(body, depth));
    if (i < lines.length && isBlank(lines[i]) && i + 1 < lines.length && pattern.test(lines[i + 1])) i += 1;
  }
  parent.append(node);
  return i;
}

function listItem(body, depth) {
  const li = document.createElement('li');
  renderBlocks(body, li, depth + 1);
  // A tight item (no blank line) shows its text without paragraph spacing, nested lists included.
  if (!body.some(isBlank) && li.firstChild?.nodeName === 'P') li.firstChild.replaceWith(...li.firstChild.childNodes);
  return li;
}

function cells(line) {
  let text = line.trim();
  if (text.startsWith('|')) text = text.slice(1);
  if (text.endsWith('|') && !text.endsWith('\\|')) text = text.slice(0, -1);
  return text.split(/(?<!\\)\|/).map((cell) => cell.trim().replace(/\\\|/g, '|'));
}

function table(lines, i, parent, depth) {
  const wrap = document.createElement('div');
  wrap.className = 'md-table';
  const node = document.createElement('table');
  const head = document.createElement('thead');
  const headRow = document.createElement('tr');
  const columns = cells(lines[i]);
  for (const text of columns) {
    const th = document.createElement('th');
    renderInline(text, th, depth);
    headRow.append(th);
  }
  head.append(headRow);
  const bodyNode = document.createElement('tbody');
  i += 2;
  while (i < lines.length && !isBlank(lines[i]) && lines[i].includes('|')) {
    const row = document.createElement('tr');
    const values = cells(lines[i++]);
    columns.forEach((_, c) => {
      const td = document.createElement('td');
      renderInline(values[c] ?? '', td, depth);
      row.append(td);
    });
    bodyNode.append(row);
  }
  node.append(head, bodyNode);
  wrap.append(node);
  parent.append(wrap);
  return i;
}

// --- inline: code spans, links, autolinks, strong, emphasis; everything else is text ------------------
const ESCAPABLE = '\\`*_{}[]()#+-.!|>~';
// Sticky (matched at lastIndex, no slicing); stops at full-width punctuation such as ）。，
const AUTOLINK = /https?:\/\/[^\s<>"'`\u3000-\u303f\uff00-\uffef]+/iy;

/** The URL when it is http(s) and parses, else null: no javascript:, data:, relative or other links. */
export function safeUrl(url) {
  if (!/^https?:\/\//i.test(url)) return null;
  try {
    const parsed = new URL(url);
    return parsed.protocol === 'http:' || parsed.protocol === 'https:' ? parsed.href : null;
  } catch {
    return null;
  }
}

function link(href, label, depth) {
  const a = document.createElement('a');
  a.href = href;
  a.target = '_blank';
  a.rel = 'noopener noreferrer';
  renderInline(label, a, depth + 1);
  return a;
}

/** `[label](url)` at i: {label, url, end} or null. Brackets nest; the URL may hold balanced parens. */
function linkAt(text, i) {
  let level = 0;
  let j = i;
  for (; j < text.length; j += 1) {
    if (text[j] === '\\') { j += 1; continue; }
    if (text[j] === '[') level += 1;
    else if (text[j] === ']' && --level === 0) break;
  }
  if (j >= text.length || text[j + 1] !== '(') return null;
  let parens = 0;
  let k = j + 2;
  for (; k < text.length; k += 1) {
    if (text[k] === '(') parens += 1;
    else if (text[k] === ')' && parens-- === 0) break;
  }
  if (k >= text.length) return null;
  const url = text.slice(j + 2, k).trim().replace(/\s+"[^"]*"$/, '').replace(/^<(.*)>$/, '$1');
  return { label: text.slice(i + 1, j), url, end: k + 1 };
}

/** Closing delimiter for emphasis opened at `from`: not preceded by a space, non-empty content. */
function closing(text, delim, from) {
  let j = from;
  while ((j = text.indexOf(delim, j)) >= 0) {
    const wordAfter = delim[0] === '_' && /\w/.test(text[j + delim.length] ?? '');
    if (j > from && !/\s/.test(text[j - 1]) && (delim.length === 2 || text[j + 1] !== delim) && !wordAfter) return j;
    j += delim.length;
  }
  return -1;
}

export function renderInline(text, parent, depth = 0) {
  let buffer = '';
  const flush = () => {
    if (buffer) parent.append(document.createTextNode(buffer));
    buffer = '';
  };
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === '\\' && i + 1 < text.length && ESCAPABLE.includes(text[i + 1])) {
      buffer += text[i + 1];
      i += 2;
      continue;
    }
    if (c === '`') {
      let run = i;
      while (text[run] === '`') run += 1;
      const ticks = text.slice(i, run);
      const end = text.indexOf(ticks, i + ticks.length);
      if (end > 0) {
        flush();
        const code = document.createElement('code');
        code.textContent = text.slice(i + ticks.length, end).replace(/^ (.*) $/, '$1');
        parent.append(code);
        i = end + ticks.length;
        continue;
      }
      buffer += ticks;
      i += ticks.length;
      continue;
    }
    if (depth < MAX_DEPTH && c === '[') {
      const found = linkAt(text, i);
      if (found) {
        const href = safeUrl(found.url);
        if (href) {
          flush();
          parent.append(link(href, found.label, depth));
        } else {
          buffer += text.slice(i, found.end); // not http(s): shown as the text it is
        }
        i = found.end;
        continue;
      }
    }
    if ((c === 'h' || c === 'H') && (i === 0 || !/[\w/]/.test(text[i - 1]))) {
      AUTOLINK.lastIndex = i;
      const match = AUTOLINK.exec(text);
      const url = match && match[0].replace(/[.,;:!?)\]}'"。，；：！？）]+$/, '');
      const href = url && safeUrl(url);
      if (href) {
        flush();
        const a = link(href, '', depth);
        a.textContent = url;
        parent.append(a);
        i += url.length;
        continue;
      }
    }
    if (depth < MAX_DEPTH && (c === '*' || c === '_')) {
      const double = text[i + 1] === c;
      const delim = double ? c + c : c;
      const wordInside = c === '_' && i > 0 && /\w/.test(text[i - 1]); // snake_case is not emphasis
      const open = i + delim.length;
      const end = !wordInside && open < text.length && !/\s/.test(text[open]) ? closing(text, delim, open) : -1;
      if (end > open) {
        flush();
        const node = document.createElement(double ? 'strong' : 'em');
        renderInline(text.slice(open, end), node, depth + 1);
        parent.append(node);
        i = end + delim.length;
        continue;
      }
      buffer += delim;
      i += delim.length;
      continue;
    }
    buffer += c;
    i += 1;
  }
  flush();
}
