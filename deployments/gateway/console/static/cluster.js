// The Admin tab's cluster view: nodes, replicas per deployment, the answer-cache hit rate and a
// chart of requests and p95 latency. Refreshed every 10 s, only while the Admin tab is visible.
import { api, describeError } from './api.js';
import { el, tr, setText, setRaw, $, showNotice } from './dom.js';
import { t, onLanguageChange } from './i18n.js';
import { renderChart } from './chart.js';

const REFRESH_MS = 10_000;
const GIB = 1024 ** 3;

let timer = null;
let generation = 0; // bumped on stop: an answer for a stopped view is dropped
let busy = false;
let last = null;

const table = (headKeys, rows) => el('table', { class: 'grid' },
  el('thead', {}, el('tr', {}, headKeys.map((key) => tr('th', key)))),
  el('tbody', {}, rows));

function resourcesText(resources = {}) {
  const parts = [];
  if (resources.CPU !== undefined) parts.push(`CPU ${resources.CPU}`);
  if (resources.GPU !== undefined) parts.push(`GPU ${resources.GPU}`);
  if (resources.memory !== undefined) parts.push(`${t('cluster.memory')} ${(resources.memory / GIB).toFixed(1)} GiB`);
  return parts.join(' · ');
}

function renderNodes(nodes = []) {
  const rows = nodes.map((node) => el('tr', { class: `node ${node.alive ? 'alive' : 'dead'}`, dataset: { node: node.id ?? '' } },
    el('td', { class: 'node-id', title: node.id ?? '', text: String(node.id ?? '').slice(0, 12) }),
    el('td', { class: 'node-address', text: node.address ?? '' }),
    el('td', { class: 'node-state' }, tr('span', node.alive ? 'cluster.alive' : 'cluster.dead', { class: `badge ${node.alive ? 'active' : 'revoked'}` })),
    el('td', { class: 'node-resources', text: resourcesText(node.resources) })));
  $('#cluster-nodes').replaceChildren(tr('h3', 'cluster.nodes'),
    nodes.length ? table(['cluster.node', 'cluster.address', 'cluster.state', 'cluster.resources'], rows)
      : tr('p', 'cluster.noNodes', { class: 'muted' }));
}

function renderDeployments(deployments = []) {
  const rows = deployments.map((d) => el('tr', { class: 'deployment', dataset: { deployment: `${d.app}/${d.name}` } },
    el('td', { text: d.app ?? '' }),
    el('td', { text: d.name ?? '' }),
    el('td', { class: 'deployment-status', text: d.status ?? '' }),
    el('td', { class: 'deployment-replicas', text: Object.entries(d.replicas ?? {}).map(([s, n]) => `${s} ${n}`).join(', ') })));
  $('#cluster-deployments').replaceChildren(tr('h3', 'cluster.deployments'),
    deployments.length ? table(['cluster.app', 'cluster.deployment', 'cluster.status', 'cluster.replicas'], rows)
      : tr('p', 'cluster.noDeployments', { class: 'muted' }));
}

function renderCache(cache = {}, inFlight = 0) {
  const rate = typeof cache.hit_rate === 'number' ? `${(cache.hit_rate * 100).toFixed(1)}%` : '—';
  $('#cluster-cache').replaceChildren(
    el('div', { class: 'stat' }, tr('span', 'cluster.cacheHitRate', { class: 'stat-label' }),
      el('span', { class: 'stat-value cache-hit-rate', text: rate }),
      tr('span', 'cluster.cacheDetail', { class: 'stat-detail' }, { hits: cache.hits ?? 0, lookups: cache.lookups ?? 0 })),
    el('div', { class: 'stat' }, tr('span', 'cluster.inFlight', { class: 'stat-label' }),
      el('span', { class: 'stat-value in-flight', text: String(inFlight ?? 0) })));
}

function render(cluster) {
  renderNodes(cluster?.nodes);
  renderDeployments(cluster?.deployments);
  renderCache(cluster?.cache, cluster?.in_flight);
  const series = cluster?.series ?? {};
  renderChart($('#cluster-chart'), series.points ?? [], {
    requests: t('cluster.chartRequests', { seconds: series.interval_s ?? 10 }),
    errors: t('cluster.chartErrors'),
    p95: t('cluster.chartP95'),
    empty: t('cluster.chartEmpty'),
  });
  setText($('#cluster-updated'), 'cluster.updated', { when: new Date().toLocaleTimeString() });
}

async function refresh() {
  if (busy || document.hidden) return; // a slow answer is not piled on; a hidden page does not poll
  busy = true;
  const mine = generation;
  try {
    const cluster = await api('/v1/admin/cluster');
    if (mine !== generation) return;
    last = cluster;
    render(cluster);
  } catch (error) {
    if (mine === generation) showNotice(describeError(error));
  } finally {
    busy = false;
  }
}

/** The Admin tab became visible: show now, then every 10 s. */
export function startCluster() {
  stopCluster();
  generation += 1;
  refresh();
  timer = setInterval(refresh, REFRESH_MS);
}

export function stopCluster() {
  clearInterval(timer);
  timer = null;
  generation += 1;
  busy = false;
}

export function initCluster() {
  onLanguageChange(() => { if (last && timer) render(last); });
  document.addEventListener('visibilitychange', () => { if (!document.hidden && timer) refresh(); });
}

export function resetCluster() {
  stopCluster();
  last = null;
  for (const id of ['#cluster-nodes', '#cluster-deployments', '#cluster-cache', '#cluster-chart']) {
    $(id).replaceChildren();
  }
  setRaw($('#cluster-updated'), '');
}
