// Small DOM helpers. Every piece of text goes in through textContent or a text node, never as
// HTML, so nothing the API returns can become markup.
import { t } from './i18n.js';

/**
 * Builds an element. props: `class`, `text`, `dataset` (object), `on<event>` (function),
 * booleans (true sets an empty attribute, false/null/undefined skips it), anything else is an attribute.
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name === 'text') node.textContent = String(value);
    else if (name === 'dataset') Object.assign(node.dataset, value);
    else if (name.startsWith('on') && typeof value === 'function') node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  appendAll(node, children);
  return node;
}

function appendAll(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** A translated text that follows language changes (applyI18n re-reads the key and its vars). */
export function setText(node, key, vars) {
  node.dataset.i18n = key;
  if (vars) node.dataset.i18nVars = JSON.stringify(vars);
  else delete node.dataset.i18nVars;
  node.textContent = t(key, vars);
  return node;
}

/** Plain text that must not be re-translated (a name, a server message). */
export function setRaw(node, text) {
  delete node.dataset.i18n;
  delete node.dataset.i18nVars;
  node.textContent = text;
  return node;
}

/** An element whose text is a translated key. */
export function tr(tag, key, props = {}, vars) {
  return setText(el(tag, props), key, vars);
}

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

// --- the notice area (#notice, role=alert): errors and short confirmations -----------------------
export function showNotice(message, kind = 'error') {
  const notice = $('#notice');
  const close = el('button', { type: 'button', class: 'notice-close', onclick: clearNotice });
  setText(close, 'notice.close');
  notice.replaceChildren(el('span', { class: 'notice-text', text: message }), close);
  notice.dataset.kind = kind;
  notice.hidden = false;
}

export function clearNotice() {
  const notice = $('#notice');
  notice.replaceChildren();
  notice.hidden = true;
}

/** Unix seconds (or milliseconds) as a local date and time; '' for nothing. */
export function formatTime(value, lang) {
  if (value === null || value === undefined || value === '') return '';
  const ms = value > 1e12 ? value : value * 1000;
  const date = new Date(ms);
  return Number.isNaN(date.getTime()) ? '' : date.toLocaleString(lang === 'zh' ? 'zh-CN' : 'en');
}

/** A retrieval score with three decimals. */
export const formatScore = (score) => (typeof score === 'number' ? score.toFixed(3) : String(score ?? ''));

/** Copies text, with feedback on the button; reports a clipboard the browser refuses. */
export async function copyText(text, button) {
  try {
    if (!navigator.clipboard) throw new Error('no clipboard');
    await navigator.clipboard.writeText(text);
    if (button) {
      setText(button, 'copy.done');
      setTimeout(() => setText(button, 'copy'), 1500);
    }
  } catch {
    showNotice(t('copy.failed'));
  }
}
