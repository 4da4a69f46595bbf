// The Chat tab: conversations (kept by the server per session_id), streamed answers rendered as
// Markdown once per animation frame, sources of knowledge-base answers, stop, copy and retry.
import { api, openStream, describeError, isAbort, seg, ApiError } from './api.js';
import { readEvents, eventError, eventText } from './sse.js';
import { renderMarkdown } from './markdown.js';
import { el, tr, setText, setRaw, $, $$, showNotice, formatTime, copyText, formatScore } from './dom.js';
import { t, getLang, onLanguageChange } from './i18n.js';

const state = { model: null, sessionId: null, controller: null, sessions: [] };

/** `console-` and 128 random bits as hex: unguessable, and within the server's session-id rule. */
export function newSessionId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `console-${[...bytes].map((b) => b.toString(16).padStart(2, '0')).join('')}`;
}

const log = () => $('#chat-log');

function emptyHint() {
  return tr('p', 'chat.empty', { class: 'chat-empty' });
}

// --- messages -------------------------------------------------------------------------------------
/** Who speaks is an aria-label, not text: a message's text is exactly what was said. */
function labelled(node, key) {
  node.setAttribute('role', 'article');
  node.dataset.i18nAriaLabel = key;
  node.setAttribute('aria-label', t(key));
  return node;
}

function userMessage(text) {
  return labelled(el('div', { class: 'msg user' }, el('div', { class: 'msg-body', text })), 'chat.you');
}

/** An assistant message: its node and parts, and the answer text so far. */
function assistantMessage(question) {
  const message = {
    question,
    text: '',
    frame: 0,
    body: el('div', { class: 'msg-body' }),
    status: el('p', { class: 'msg-status', hidden: true }),
    sources: el('div', { class: 'sources', hidden: true }),
  };
  const copy = tr('button', 'copy', { type: 'button', class: 'copy' });
  const retry = tr('button', 'chat.retry', { type: 'button', class: 'retry' });
  copy.addEventListener('click', () => copyText(message.text, copy));
  retry.addEventListener('click', () => ask(message.question));
  message.node = labelled(el('div', { class: 'msg assistant' },
    message.body, message.status, message.sources,
    el('div', { class: 'msg-actions' }, copy, retry)), 'chat.assistant');
  return message;
}

function renderSources(container, sources) {
  const items = sources.map((source) => el('li', {},
    el('details', { class: 'source' },
      el('summary', {},
        el('span', { class: 'source-doc', text: source.document ?? '' }),
        tr('span', 'chat.chunk', { class: 'source-chunk-label' }),
        el('span', { class: 'source-chunk', text: String(source.chunk ?? '') }),
        tr('span', 'chat.score', { class: 'source-score-label' }),
        el('span', { class: 'source-score', text: formatScore(source.score) })),
      el('div', { class: 'source-text', text: source.text ?? '' }))));
  container.replaceChildren(tr('h4', 'chat.sources'), el('ol', { class: 'source-list' }, items));
  container.hidden = sources.length === 0;
}

/** Follows the answer down only if the reader was already at the bottom. */
function paint(message) {
  const box = log();
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  message.body.replaceChildren(renderMarkdown(message.text));
  if (atBottom) box.scrollTop = box.scrollHeight;
}

function scheduleRender(message) {
  if (!message.frame) message.frame = requestAnimationFrame(() => { message.frame = 0; paint(message); });
}

function finish(message, outcome, statusKey, statusVars) {
  cancelAnimationFrame(message.frame);
  message.frame = 0;
  paint(message);
  message.node.classList.remove('streaming');
  message.node.classList.add(outcome === 'error' ? 'error' : 'done');
  if (outcome === 'stopped') message.node.classList.add('stopped');
  message.node.removeAttribute('aria-busy');
  if (statusKey) {
    if (statusKey === 'raw') setRaw(message.status, statusVars.text); // a server message, kept as said
    else setText(message.status, statusKey, statusVars);
    message.status.hidden = false;
  }
}

function setStreaming(on) {
  $('#chat-send').disabled = on;
  $('#chat-stop').disabled = !on;
  $('#chat-log').classList.toggle('busy', on);
}

// --- asking ---------------------------------------------------------------------------------------
/** Sends one question (only the new message: the server keeps the history) and streams the answer. */
async function ask(question) {
  if (state.controller || !question.trim()) return;
  $('.chat-empty', log())?.remove();
  const message = assistantMessage(question);
  log().append(userMessage(question), message.node);
  message.node.classList.add('streaming');
  message.node.setAttribute('aria-busy', 'true');
  log().scrollTop = log().scrollHeight;
  const controller = new AbortController();
  state.controller = controller;
  setStreaming(true);

  const body = { messages: [{ role: 'user', content: question }], stream: true, session_id: state.sessionId };
  if (state.model) body.model = state.model;
  const kb = $('#chat-kb').value;
  if (kb) body.knowledge_base = kb;

  let outcome = ['done'];
  try {
    const response = await openStream('/v1/chat/completions', body, controller.signal);
    let ended = false;
    for await (const event of readEvents(response.body)) {
      if (event.done) { ended = true; break; }
      if (!event.data) continue;
      const error = eventError(event.data);
      if (error) {
        outcome = ['error', 'chat.streamFailed', { message: String(error.message ?? '') }];
        showNotice(t('chat.streamFailed', { message: String(error.message ?? '') }));
        ended = true;
        break;
      }
      if (Array.isArray(event.data.sources)) renderSources(message.sources, event.data.sources);
      const text = eventText(event.data);
      if (text) {
        message.text += text;
        scheduleRender(message);
      }
    }
    if (!ended) {
      outcome = ['error', 'chat.incomplete'];
      showNotice(t('chat.incomplete'));
    }
  } catch (error) {
    if (isAbort(error)) {
      outcome = ['stopped', 'chat.stopped'];
    } else {
      // A body that breaks mid-stream rejects with a TypeError, not an ApiError: a lost connection.
      if (!(error instanceof ApiError)) console.error(error);
      const readable = error instanceof ApiError ? describeError(error) : t('err.network');
      outcome = ['error', 'raw', { text: readable }];
      showNotice(readable);
    }
  } finally {
    state.controller = null;
    setStreaming(false);
  }
  finish(message, ...outcome);
  if (outcome[0] === 'done') refreshSessions();
}

/** Stops the answer being streamed, if any. */
export function stopAnswer() {
  state.controller?.abort();
}

// --- conversations --------------------------------------------------------------------------------
function startNewChat() {
  stopAnswer();
  state.sessionId = newSessionId();
  log().replaceChildren(emptyHint());
  markActiveSession();
  $('#chat-input').focus();
}

function markActiveSession() {
  for (const item of $$('#sessions .session-item')) {
    const active = item.dataset.session === state.sessionId;
    item.classList.toggle('active', active);
    if (active) item.setAttribute('aria-current', 'true');
    else item.removeAttribute('aria-current');
  }
}

function sessionItem(session) {
  const remove = el('button', { type: 'button', class: 'session-delete', title: t('chat.deleteSession') }, '×');
  remove.setAttribute('aria-label', t('chat.deleteSession'));
  remove.addEventListener('click', (event) => {
    event.stopPropagation();
    deleteSession(session);
  });
  const title = session.title || t('chat.untitled');
  const open = el('button', { type: 'button', class: 'session-open', title },
    el('span', { class: 'session-title', text: title }),
    el('span', { class: 'session-meta', text: formatTime(session.updated_at, getLang()) }));
  const item = el('li', { class: 'session-item', dataset: { session: session.id } }, open, remove);
  item.addEventListener('click', () => openSession(session.id));
  return item;
}

function renderSessions() {
  const list = $('#sessions');
  if (!state.sessions.length) list.replaceChildren(tr('li', 'chat.noSessions', { class: 'muted' }));
  else list.replaceChildren(...state.sessions.map(sessionItem));
  markActiveSession();
}

export async function refreshSessions() {
  try {
    const answer = await api('/v1/sessions');
    state.sessions = Array.isArray(answer?.data) ? answer.data : [];
    renderSessions();
  } catch (error) {
    showNotice(describeError(error));
  }
}

const contentText = (content) => (Array.isArray(content)
  ? content.map((part) => (typeof part?.text === 'string' ? part.text : '')).join('\n')
  : String(content ?? ''));

async function openSession(id) {
  if (state.controller) stopAnswer();
  try {
    const session = await api(`/v1/sessions/${seg(id)}`);
    state.sessionId = id;
    const nodes = [];
    let question = '';
    for (const { role, content } of session?.messages ?? []) {
      const text = contentText(content);
      if (role === 'user') {
        question = text;
        nodes.push(userMessage(text));
      } else if (role === 'assistant') {
        const message = assistantMessage(question);
        message.text = text;
        message.body.replaceChildren(renderMarkdown(text));
        message.node.classList.add('done');
        nodes.push(message.node);
      }
    }
    log().replaceChildren(...(nodes.length ? nodes : [emptyHint()]));
    log().scrollTop = log().scrollHeight;
    markActiveSession();
  } catch (error) {
    showNotice(describeError(error));
  }
}

async function deleteSession(session) {
  if (!window.confirm(t('chat.confirmDeleteSession', { title: session.title || session.id }))) return;
  try {
    await api(`/v1/sessions/${seg(session.id)}`, { method: 'DELETE' });
    if (session.id === state.sessionId) startNewChat();
  } catch (error) {
    showNotice(describeError(error));
  }
  refreshSessions();
}

// --- knowledge bases and model --------------------------------------------------------------------
export async function refreshChatKnowledgeBases() {
  const select = $('#chat-kb');
  try {
    const answer = await api('/v1/knowledge_bases');
    const names = (answer?.data ?? []).map((kb) => kb.name);
    const keep = select.value;
    select.replaceChildren(tr('option', 'chat.noKb', { value: '' }),
      ...names.map((name) => el('option', { value: name, text: name })));
    select.value = names.includes(keep) ? keep : '';
  } catch (error) {
    showNotice(describeError(error));
  }
}

async function loadModel() {
  try {
    const answer = await api('/v1/models');
    state.model = answer?.data?.[0]?.id ?? null;
  } catch (error) {
    state.model = null; // the server then uses its served model
    showNotice(describeError(error));
  }
}

// --- lifecycle ------------------------------------------------------------------------------------
export function initChat() {
  const input = $('#chat-input');
  $('#chat-form').addEventListener('submit', (event) => {
    event.preventDefault();
    if (state.controller || !input.value.trim()) return;
    const question = input.value;
    input.value = '';
    ask(question);
  });
  input.addEventListener('keydown', (event) => {
    // Enter sends; Shift+Enter is a newline; Enter that confirms an IME composition (Chinese input) is not a send.
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      $('#chat-form').requestSubmit();
    }
  });
  $('#chat-stop').addEventListener('click', stopAnswer);
  $('#new-chat').addEventListener('click', startNewChat);
  document.addEventListener('raychat:kbs-changed', refreshChatKnowledgeBases);
  onLanguageChange(() => { if (state.sessions.length) renderSessions(); });
}

/** After sign-in: a fresh conversation, the model, the knowledge bases and the past conversations. */
export async function activateChat() {
  startNewChat();
  await Promise.all([loadModel(), refreshChatKnowledgeBases(), refreshSessions()]);
}

/** On sign-out: nothing of the last user's stays on the page. */
export function resetChat() {
  stopAnswer();
  state.model = null;
  state.sessionId = null;
  state.sessions = [];
  log().replaceChildren();
  $('#sessions').replaceChildren();
  $('#chat-kb').replaceChildren(tr('option', 'chat.noKb', { value: '' }));
  $('#chat-input').value = '';
}
