// The Admin tab's API keys: create (the secret shown once), list with today's usage, edit limits,
// revoke. The cluster view is cluster.js.
import { api, describeError, seg } from './api.js';
import { el, tr, setRaw, $, showNotice, formatTime, copyText } from './dom.js';
import { t, getLang, onLanguageChange } from './i18n.js';

const LIMITS = [
  { field: 'rpm', input: '#key-rpm', label: 'keys.rpm' },
  { field: 'tpm', input: '#key-tpm', label: 'keys.tpm' },
  { field: 'daily_tokens', input: '#key-daily', label: 'keys.daily' },
];

let keys = [];

/** A positive whole number from an input; null when empty; throws a readable Error otherwise. */
function positiveInt(raw, labelKey) {
  const value = String(raw ?? '').trim();
  if (!value) return null;
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value)) || Number(value) < 1) {
    throw new Error(t('keys.badNumber', { field: t(labelKey) }));
  }
  return Number(value); // a JSON integer: the server's model is strict
}

function parseGrants(raw) {
  return [...new Set(raw.split(/[,，\s]+/).map((name) => name.trim()).filter(Boolean))];
}

function keyState(key) {
  if (key.revoked) return 'revoked';
  if (key.expires && key.expires * 1000 <= Date.now()) return 'expired';
  return 'active';
}

// --- create ---------------------------------------------------------------------------------------
async function createKey(event) {
  event.preventDefault();
  let body;
  try {
    body = {
      name: $('#key-name').value.trim(),
      role: $('#key-role').value,
      knowledge_bases: parseGrants($('#key-kbs').value),
    };
    for (const { field, input, label } of LIMITS) {
      const value = positiveInt($(input).value, label);
      if (value !== null) body[field] = value; // empty optional fields are left out
    }
    const days = $('#key-expires').value.trim();
    if (days) {
      if (!(Number(days) > 0)) throw new Error(t('keys.badNumber', { field: t('keys.expiresDays') }));
      body.expires_days = Number(days);
    }
  } catch (error) {
    showNotice(error.message);
    return;
  }
  if (!body.name) return;
  try {
    const created = await api('/v1/admin/keys', { method: 'POST', body });
    setRaw($('#key-secret'), created?.key ?? '');
    $('#key-created').hidden = false;
    $('#key-form').reset();
    $('#key-secret-copy').focus();
  } catch (error) {
    showNotice(describeError(error));
  }
  loadKeys();
}

function hideSecret() {
  $('#key-secret').textContent = ''; // the secret does not stay in the page once acknowledged
  $('#key-created').hidden = true;
}

// --- the table ------------------------------------------------------------------------------------
function limitsText(limits) {
  return LIMITS.map(({ field, label }) => {
    const value = limits?.[field];
    return `${t(label)}: ${value === null || value === undefined ? t('keys.defaultLimit') : value.toLocaleString()}`;
  }).join(' · ');
}

function grantsText(grants) {
  if (!grants?.length) return t('keys.noKbs');
  return grants.map((name) => (name === '*' ? t('keys.allKbs') : name)).join(', ');
}

function keyRow(key) {
  const state = keyState(key);
  const limitsCell = el('td', { class: 'key-limits', text: limitsText(key.limits) });
  const edit = tr('button', 'keys.editLimits', { type: 'button', class: 'key-edit link-button', disabled: state === 'revoked' });
  edit.addEventListener('click', () => editLimits(key, limitsCell));
  const revoke = tr('button', 'keys.revoke', { type: 'button', class: 'key-revoke danger-link', disabled: state === 'revoked' });
  revoke.addEventListener('click', () => revokeKey(key));
  const dates = [
    t('keys.createdAt', { when: formatTime(key.created, getLang()) }),
    key.expires ? t('keys.expiresAt', { when: formatTime(key.expires, getLang()) }) : null,
    key.revoked ? t('keys.revokedAt', { when: formatTime(key.revoked, getLang()) }) : null,
  ].filter(Boolean).join('\n');
  const usage = key.usage_today ?? {};
  return el('tr', { class: `key ${state}`, dataset: { keyId: key.id } },
    el('td', { class: 'key-name' }, el('span', { text: key.name }), el('div', { class: 'key-id muted', text: key.id })),
    el('td', { class: 'key-role', text: key.role }),
    el('td', { class: 'key-grants', text: grantsText(key.knowledge_bases) }),
    limitsCell,
    tr('td', 'keys.usageValue', { class: 'key-usage' }, { requests: usage.requests ?? 0, tokens: usage.tokens ?? 0 }),
    el('td', { class: 'key-state', title: dates }, tr('span', `keys.state.${state}`, { class: `badge ${state}` })),
    el('td', { class: 'key-actions' }, edit, revoke));
}

function renderKeys() {
  const body = $('#keys tbody');
  body.replaceChildren(...(keys.length ? keys.map(keyRow)
    : [el('tr', { class: 'empty' }, tr('td', 'keys.none', { colspan: 7, class: 'muted' }))]));
}

export async function loadKeys() {
  try {
    const answer = await api('/v1/admin/keys');
    keys = answer?.data ?? [];
    renderKeys();
  } catch (error) {
    showNotice(describeError(error));
  }
}

/** Turns a row's limits cell into three inputs; Save sends only what changed (empty = the default). */
function editLimits(key, cell) {
  const inputs = LIMITS.map(({ field, label }) => {
    const input = el('input', {
      type: 'number', min: 1, step: 1, inputmode: 'numeric', class: `key-edit-${field}`,
      value: key.limits?.[field] ?? '', placeholder: t('keys.defaultLimit'), 'aria-label': t(label),
    });
    return { field, label, input };
  });
  const save = tr('button', 'keys.save', { type: 'button', class: 'key-save primary small' });
  const cancel = tr('button', 'keys.cancel', { type: 'button', class: 'key-cancel small' });
  cancel.addEventListener('click', renderKeys);
  save.addEventListener('click', async () => {
    const changes = {};
    try {
      for (const { field, label, input } of inputs) {
        const value = positiveInt(input.value, label);
        if (value !== (key.limits?.[field] ?? null)) changes[field] = value;
      }
    } catch (error) {
      showNotice(error.message);
      return;
    }
    if (!Object.keys(changes).length) {
      renderKeys();
      return;
    }
    try {
      await api(`/v1/admin/keys/${seg(key.id)}`, { method: 'PATCH', body: changes });
    } catch (error) {
      showNotice(describeError(error));
    }
    loadKeys();
  });
  cell.replaceChildren(el('div', { class: 'limit-editor' },
    inputs.map(({ label, input }) => el('label', {}, el('span', { text: t(label) }), input)), save, cancel));
  inputs[0].input.focus();
}

async function revokeKey(key) {
  if (!window.confirm(t('keys.confirmRevoke', { name: key.name, id: key.id }))) return;
  try {
    await api(`/v1/admin/keys/${seg(key.id)}`, { method: 'DELETE' });
  } catch (error) {
    showNotice(describeError(error));
  }
  loadKeys();
}

// --- lifecycle ------------------------------------------------------------------------------------
export function initAdmin() {
  $('#key-form').addEventListener('submit', createKey);
  $('#key-secret-copy').addEventListener('click', (event) => copyText($('#key-secret').textContent, event.currentTarget));
  $('#key-created-close').addEventListener('click', hideSecret);
  onLanguageChange(() => { if (keys.length) renderKeys(); });
}

export function resetAdmin() {
  keys = [];
  hideSecret();
  $('#key-form').reset();
  $('#keys tbody').replaceChildren();
}

