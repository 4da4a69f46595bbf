// The Knowledge tab: knowledge bases, their documents, uploads followed as ingestion jobs, and a
// search that runs the three retrieval modes side by side.
import { api, uploadFiles, describeError, seg } from './api.js';
import { el, tr, setText, setRaw, $, $$, showNotice, formatScore } from './dom.js';
import { t } from './i18n.js';

const MODES = ['vector', 'fulltext', 'hybrid'];
const POLL_MS = 1000;
const MAX_POLL_ERRORS = 5; // a job poll survives a few transient failures (a Redis blip, a 503)

const state = { role: 'user', kbs: [], selected: null, uploading: false, searchSeq: 0, docsSeq: 0 };

const kbPath = (name) => `/v1/knowledge_bases/${seg(name)}`;
const mayEdit = () => state.role === 'editor' || state.role === 'admin';
const announceChange = () => document.dispatchEvent(new CustomEvent('raychat:kbs-changed'));

// --- the list and the selection -------------------------------------------------------------------
function renderList() {
  const list = $('#kb-list');
  if (!state.kbs.length) {
    list.replaceChildren(tr('li', 'kb.none', { class: 'muted' }));
    return;
  }
  list.replaceChildren(...state.kbs.map((kb) => {
    const item = el('button', { type: 'button', class: 'kb-item', dataset: { kb: kb.name } },
      el('span', { class: 'kb-name', text: kb.name }),
      kb.description ? el('span', { class: 'kb-description', text: kb.description }) : null);
    item.addEventListener('click', () => select(kb.name));
    return el('li', {}, item);
  }));
  markSelected();
}

function markSelected() {
  for (const item of $$('#kb-list .kb-item')) {
    const active = item.dataset.kb === state.selected;
    item.classList.toggle('active', active);
    item.setAttribute('aria-pressed', String(active));
  }
}

async function loadList() {
  try {
    const answer = await api('/v1/knowledge_bases');
    state.kbs = answer?.data ?? [];
  } catch (error) {
    showNotice(describeError(error));
  }
  renderList();
  if (state.selected && !state.kbs.some((kb) => kb.name === state.selected)) select(null);
}

function select(name) {
  state.selected = name;
  markSelected();
  const title = $('#kb-selected');
  if (name) setRaw(title, name);
  else setText(title, 'kb.selectOne');
  for (const id of ['#kb-delete', '#kb-upload', '#kb-search-button']) $(id).disabled = !name;
  $('#kb-search-results').replaceChildren();
  if (!state.uploading) resetUploadStatus();
  loadDocuments();
}

// --- documents ------------------------------------------------------------------------------------
function documentRow(doc) {
  const remove = tr('button', 'doc.delete', { type: 'button', class: 'doc-delete danger-link', hidden: !mayEdit() });
  remove.addEventListener('click', () => deleteDocument(doc.document));
  const title = doc.title && doc.title !== doc.document ? el('div', { class: 'doc-title', text: doc.title }) : null;
  return el('tr', { class: 'doc', dataset: { doc: doc.document } },
    el('td', { class: 'doc-name', title: doc.source || null }, el('span', { text: doc.document }), title),
    el('td', { class: 'doc-chunks', text: String(doc.chunks ?? '') }),
    tr('td', doc.deleted ? 'doc.deleted' : 'doc.ready', { class: 'doc-state' }),
    el('td', { class: 'doc-actions' }, remove));
}

async function loadDocuments() {
  const body = $('#kb-docs tbody');
  const name = state.selected;
  const seq = ++state.docsSeq; // an older, slower answer must not overwrite a newer selection's
  if (!name) {
    body.replaceChildren();
    return;
  }
  try {
    const answer = await api(`${kbPath(name)}/documents`);
    if (seq !== state.docsSeq) return;
    const docs = answer?.data ?? [];
    body.replaceChildren(...(docs.length ? docs.map(documentRow)
      : [el('tr', { class: 'empty' }, tr('td', 'doc.none', { colspan: 4, class: 'muted' }))]));
  } catch (error) {
    if (seq === state.docsSeq) body.replaceChildren();
    showNotice(describeError(error));
  }
}

async function deleteDocument(documentId) {
  const name = state.selected;
  if (!name || !window.confirm(t('doc.confirmDelete', { document: documentId, kb: name }))) return;
  try {
    await api(`${kbPath(name)}/documents/${seg(documentId)}`, { method: 'DELETE' });
  } catch (error) {
    showNotice(describeError(error));
  }
  loadDocuments();
}

// --- creating and deleting knowledge bases (admin) ------------------------------------------------
async function createKnowledgeBase(event) {
  event.preventDefault();
  const nameInput = $('#kb-create-name');
  const name = nameInput.value.trim();
  if (!name) return;
  try {
    await api('/v1/knowledge_bases', {
      method: 'POST',
      body: { name, description: $('#kb-create-description').value.trim() },
    });
    nameInput.value = '';
    $('#kb-create-description').value = '';
    await loadList();
    select(name);
    announceChange();
  } catch (error) {
    showNotice(describeError(error));
  }
}

async function deleteKnowledgeBase() {
  const name = state.selected;
  if (!name || !window.confirm(t('kb.confirmDelete', { kb: name }))) return;
  try {
    await api(kbPath(name), { method: 'DELETE' });
    select(null);
    announceChange();
  } catch (error) {
    showNotice(describeError(error));
  }
  loadList();
}

// --- uploads: bytes sent, then the ingestion job polled every second until it ends ----------------
function resetUploadStatus() {
  const progress = $('#kb-upload-progress');
  progress.value = 0;
  progress.max = 1;
  $('#kb-upload-status').replaceChildren();
}

function uploadStatus(key, vars, failures = []) {
  const line = tr('p', key, { class: 'upload-line' }, vars);
  const list = failures.length
    ? el('ul', { class: 'upload-failures' }, failures.map((f) => el('li', {},
      el('span', { class: 'upload-failed-doc', text: f.document }), ': ',
      el('span', { class: 'upload-failed-error', text: f.error || t('upload.failedNoDetail') }))))
    : null;
  $('#kb-upload-status').replaceChildren(...[line, list].filter(Boolean));
}

function showJob(job) {
  const progress = $('#kb-upload-progress');
  progress.max = Math.max(1, job.files || 0);
  progress.value = Math.min(job.done || 0, progress.max);
  const vars = {
    done: job.done ?? 0, files: job.files ?? 0, chunks: job.chunks ?? 0,
    ingested: job.ingested ?? 0, unchanged: job.unchanged ?? 0, failed: job.failed ?? 0,
  };
  const failures = (job.results ?? []).filter((r) => r.status === 'failed');
  if (job.status === 'running') uploadStatus('upload.running', vars);
  else if (job.status === 'completed') uploadStatus(vars.failed ? 'upload.completedWithFailures' : 'upload.completed', vars, failures);
  else uploadStatus(job.status === 'lost' ? 'upload.lost' : 'upload.failed', { ...vars, error: job.error || '' }, failures);
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

async function followJob(kb, job) {
  let errors = 0;
  while (job.status === 'running' && state.uploading) {
    await sleep(POLL_MS);
    if (!state.uploading) return job; // signed out meanwhile
    try {
      job = await api(`${kbPath(kb)}/jobs/${seg(job.id)}`);
      errors = 0;
      showJob(job);
    } catch (error) {
      errors += 1;
      if (error.status === 404 || errors >= MAX_POLL_ERRORS) throw error;
    }
  }
  return job;
}

async function upload() {
  const input = $('#kb-upload-input');
  const files = [...input.files];
  const kb = state.selected;
  if (!kb || state.uploading) return;
  if (!files.length) {
    showNotice(t('upload.chooseFiles'), 'info');
    return;
  }
  state.uploading = true;
  $('#kb-upload').disabled = true;
  const progress = $('#kb-upload-progress');
  progress.value = 0;
  progress.max = 1;
  uploadStatus('upload.sending', { percent: 0, files: files.length });
  try {
    const { status, body } = await uploadFiles(`${kbPath(kb)}/documents?wait=false`, files, (sent, total) => {
      progress.max = total || 1;
      progress.value = total ? sent : 0;
      uploadStatus('upload.sending', { percent: total ? Math.round((100 * sent) / total) : 0, files: files.length });
    });
    if (status === 202 && body?.id) {
      showJob(body);
      showJob(await followJob(kb, body));
    } else {
      // A server that answered synchronously: every file's outcome at once.
      const results = body?.data ?? [];
      showJob({ status: 'completed', files: results.length, done: results.length, results,
        chunks: results.reduce((n, r) => n + (r.chunks || 0), 0),
        ingested: results.filter((r) => r.status === 'ingested').length,
        unchanged: results.filter((r) => r.status === 'unchanged').length,
        failed: results.filter((r) => r.status === 'failed').length });
    }
    input.value = '';
  } catch (error) {
    const readable = describeError(error);
    $('#kb-upload-status').replaceChildren(el('p', { class: 'upload-line error', text: readable }));
    showNotice(readable);
  } finally {
    state.uploading = false;
    $('#kb-upload').disabled = !state.selected;
  }
  if (state.selected === kb) loadDocuments();
}

// --- search: the three modes at once, each column filled as its answer arrives -------------------
function hitItem(hit) {
  return el('li', { class: 'hit' },
    el('div', { class: 'hit-head' },
      el('span', { class: 'hit-score', text: formatScore(hit.score) }),
      el('span', { class: 'hit-doc', text: hit.document ?? '' }),
      el('span', { class: 'hit-chunk', text: `#${hit.chunk ?? ''}` })),
    el('div', { class: 'hit-text', text: hit.text ?? '' }));
}

async function searchMode(kb, query, mode, column, seq) {
  const list = $('.hits', column);
  try {
    const answer = await api(`${kbPath(kb)}/search`, { method: 'POST', body: { query, top_k: 5, mode } });
    if (seq !== state.searchSeq) return;
    const hits = answer?.data ?? [];
    list.replaceChildren(...(hits.length ? hits.map(hitItem) : [tr('li', 'search.noHits', { class: 'muted' })]));
  } catch (error) {
    if (seq !== state.searchSeq) return;
    const readable = describeError(error);
    list.replaceChildren(el('li', { class: 'mode-error', text: readable }));
    showNotice(readable);
  } finally {
    if (seq === state.searchSeq) column.removeAttribute('aria-busy');
  }
}

function search(event) {
  event.preventDefault();
  const query = $('#kb-search-input').value.trim();
  const kb = state.selected;
  if (!kb || !query) return;
  const seq = ++state.searchSeq;
  const columns = MODES.map((mode) => el('section', { class: 'mode-results', dataset: { mode }, 'aria-busy': 'true' },
    tr('h4', `search.mode.${mode}`), el('ol', { class: 'hits' }, tr('li', 'search.searching', { class: 'muted' }))));
  $('#kb-search-results').replaceChildren(...columns);
  MODES.forEach((mode, i) => searchMode(kb, query, mode, columns[i], seq));
}

// --- lifecycle ------------------------------------------------------------------------------------
export function initKnowledge() {
  $('#kb-create-form').addEventListener('submit', createKnowledgeBase);
  $('#kb-delete').addEventListener('click', deleteKnowledgeBase);
  $('#kb-upload').addEventListener('click', upload);
  $('#kb-search-form').addEventListener('submit', search);
  select(null);
}

/** Each time the tab is shown: the list again (another admin may have changed it). */
export function activateKnowledge(role) {
  state.role = role;
  loadList();
  if (state.selected) loadDocuments();
}

export function resetKnowledge() {
  state.kbs = [];
  state.uploading = false; // ends a job's polling
  select(null);
  $('#kb-list').replaceChildren();
  $('#kb-search-input').value = '';
  $('#kb-upload-input').value = '';
}
