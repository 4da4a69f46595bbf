// The console's entry point: sign-in, the tabs a role may use, the language, sign-out.
import { initI18n, applyI18n, setLang, getLang, t } from './i18n.js';
import { api, credential, describeError, ApiError } from './api.js';
import { $, $$, showNotice, clearNotice } from './dom.js';
import { initChat, activateChat, resetChat } from './chat.js';
import { initKnowledge, activateKnowledge, resetKnowledge } from './knowledge.js';
import { initAdmin, loadKeys, resetAdmin } from './admin.js';
import { initCluster, startCluster, stopCluster, resetCluster } from './cluster.js';

// What each role sees; the server enforces the same rules, this only spares useless tabs.
const TABS_BY_ROLE = {
  user: ['chat'],
  editor: ['chat', 'knowledge'],
  admin: ['chat', 'knowledge', 'admin'],
};

let identity = null;

const allowedTabs = () => TABS_BY_ROLE[identity?.role] ?? TABS_BY_ROLE.user;

function showTab(name) {
  if (!allowedTabs().includes(name)) return;
  for (const button of $$('[data-tab]')) {
    const active = button.dataset.tab === name;
    button.setAttribute('aria-selected', String(active));
    button.tabIndex = active ? 0 : -1;
    $(`#panel-${button.dataset.tab}`).hidden = !active;
  }
  if (name === 'knowledge') activateKnowledge(identity.role);
  if (name === 'admin') {
    loadKeys();
    startCluster();
  } else {
    stopCluster();
  }
}

/** Arrow keys move between the visible tabs (the WAI-ARIA tabs pattern). */
function onTabKey(event) {
  if (event.key !== 'ArrowRight' && event.key !== 'ArrowLeft') return;
  const visible = $$('[data-tab]').filter((button) => !button.hidden);
  const index = visible.indexOf(event.target);
  const next = visible[(index + (event.key === 'ArrowRight' ? 1 : visible.length - 1)) % visible.length];
  showTab(next.dataset.tab);
  next.focus();
}

function enterConsole(me) {
  identity = me;
  const role = TABS_BY_ROLE[me.role] ? me.role : 'user';
  document.body.dataset.role = role;
  const whoami = $('#whoami');
  whoami.textContent = `${me.name ?? ''} · ${role}`;
  whoami.title = t('whoami.limits', {
    rpm: me.limits?.rpm ?? '—', tpm: me.limits?.tpm ?? '—', daily: me.limits?.daily_tokens ?? '—',
  });
  for (const button of $$('[data-tab]')) button.hidden = !allowedTabs().includes(button.dataset.tab);
  for (const node of $$('.admin-only')) node.hidden = role !== 'admin';
  for (const node of $$('.editor-only')) node.hidden = role === 'user';
  $('#signin-view').hidden = true;
  $('#console-view').hidden = false;
  $('#tabs').hidden = false;
  whoami.hidden = false;
  $('#signout').hidden = false;
  showTab('chat');
  activateChat();
  $('#chat-input').focus();
}

function leaveConsole() {
  identity = null;
  delete document.body.dataset.role;
  stopCluster();
  resetChat();
  resetKnowledge();
  resetAdmin();
  resetCluster();
  $('#console-view').hidden = true;
  $('#tabs').hidden = true;
  $('#whoami').hidden = true;
  $('#whoami').textContent = '';
  $('#signout').hidden = true;
  $('#signin-view').hidden = false;
  $('#credential').focus();
}

/** Sign-in is GET /v1/me with the typed credential; it is stored only once the server accepts it. */
async function signIn(token) {
  const me = await api('/v1/me', { token });
  credential.set(token);
  clearNotice();
  enterConsole(me);
}

async function onSignIn(event) {
  event.preventDefault();
  const input = $('#credential');
  const token = input.value.trim();
  if (!token) return;
  // A header can carry only visible ASCII: say so instead of failing as a "network error".
  if (/[^\x21-\x7e]/.test(token)) {
    showNotice(t('signin.badCharacters'));
    return;
  }
  const button = $('#signin-button');
  button.disabled = true;
  try {
    await signIn(token);
    input.value = '';
  } catch (error) {
    showNotice(describeError(error));
  } finally {
    button.disabled = false;
  }
}

function signOut() {
  credential.clear();
  clearNotice();
  leaveConsole();
}

/** A credential from earlier in this browser session signs in again without asking. */
async function resume() {
  const saved = credential.get();
  if (!saved) return;
  try {
    await signIn(saved);
  } catch (error) {
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) credential.clear();
    showNotice(describeError(error));
  }
}

function init() {
  initI18n();
  const lang = $('#lang');
  lang.value = getLang();
  lang.addEventListener('change', () => setLang(lang.value));
  $('#signin-form').addEventListener('submit', onSignIn);
  $('#signout').addEventListener('click', signOut);
  for (const button of $$('[data-tab]')) {
    button.addEventListener('click', () => showTab(button.dataset.tab));
    button.addEventListener('keydown', onTabKey);
  }
  initChat();
  initKnowledge();
  initAdmin();
  initCluster();
  applyI18n();
  resume();
}

init();
