// English and Simplified Chinese. Elements carry data-i18n="key" (text), data-i18n-vars (JSON
// for {placeholders}), data-i18n-placeholder and data-i18n-aria-label; applyI18n() fills them
// as text, never as HTML. The language choice is kept in localStorage (it is not a secret).

const LANG_KEY = 'raychat.lang';

// key: [English, Simplified Chinese], side by side so neither language can miss a key.
const MESSAGES = {
  'app.title': ['raychat console', 'raychat 控制台'],
  'tabs.label': ['Sections', '功能'],
  'tab.chat': ['Chat', '对话'],
  'tab.knowledge': ['Knowledge', '知识库'],
  'tab.admin': ['Admin', '管理'],
  'lang.label': ['Language', '语言'],
  signout: ['Sign out', '退出登录'],
  'whoami.limits': [
    'Limits: {rpm} requests/min, {tpm} tokens/min, {daily} tokens/day',
    '限额：每分钟 {rpm} 次请求，每分钟 {tpm} 个令牌，每天 {daily} 个令牌',
  ],
  'notice.close': ['Dismiss', '关闭'],
  copy: ['Copy', '复制'],
  'copy.done': ['Copied', '已复制'],
  'copy.failed': [
    'The browser did not allow copying. Select the text and copy it by hand.',
    '浏览器不允许复制，请手动选中文本后复制。',
  ],
  'role.user': ['user', '用户 (user)'],
  'role.editor': ['editor', '编辑 (editor)'],
  'role.admin': ['admin', '管理员 (admin)'],

  'signin.title': ['Sign in', '登录'],
  'signin.help': [
    'Paste your API key (rc-…) or access token. It is kept only for this browser session.',
    '粘贴您的 API 密钥（rc-…）或访问令牌。它只保存在本次浏览器会话中。',
  ],
  'signin.credential': ['API key or token', 'API 密钥或令牌'],
  'signin.placeholder': ['rc-… or a token', 'rc-… 或令牌'],
  'signin.button': ['Sign in', '登录'],
  'signin.badCharacters': [
    'The credential contains spaces or characters that a key or token never has. Paste it again.',
    '凭据中含有空格或密钥、令牌中不会出现的字符，请重新粘贴。',
  ],

  'err.refused': ['Refused ({status}): {message}', '请求被拒绝（{status}）：{message}'],
  'err.hint401': ['Sign in again.', '请重新登录。'],
  'err.hint403': ['Your role does not allow this.', '您的角色无权执行此操作。'],
  'err.retryAfter': ['Retry in {seconds} s.', '请在 {seconds} 秒后重试。'],
  'err.retryAfterLong': ['Retry in {seconds} s (about {about}).', '请在 {seconds} 秒（约 {about}）后重试。'],
  'err.hoursMinutes': ['{hours} h {minutes} min', '{hours} 小时 {minutes} 分钟'],
  'err.minutes': ['{minutes} min', '{minutes} 分钟'],
  'err.retryLater': ['Retry shortly.', '请稍后重试。'],
  'err.network': [
    'Network error: the server could not be reached. Check the connection and try again.',
    '网络错误：无法连接服务器。请检查网络后重试。',
  ],
  'err.noDetail': ['no detail given', '没有详细信息'],
  'err.badResponse': ['the server sent an answer the console cannot read', '服务器返回了控制台无法读取的内容'],
  'err.unexpected': ['Unexpected error: {message}', '意外错误：{message}'],

  'chat.new': ['New chat', '新对话'],
  'chat.conversations': ['Conversations', '对话记录'],
  'chat.noSessions': ['No conversations yet.', '还没有对话。'],
  'chat.untitled': ['Untitled conversation', '未命名对话'],
  'chat.deleteSession': ['Delete conversation', '删除对话'],
  'chat.confirmDeleteSession': ['Delete the conversation "{title}"?', '删除对话“{title}”？'],
  'chat.kb': ['Knowledge base', '知识库'],
  'chat.noKb': ['None (general chat)', '不使用（普通对话）'],
  'chat.inputLabel': ['Your message', '您的消息'],
  'chat.placeholder': [
    'Ask a question. Enter sends, Shift+Enter adds a line.',
    '输入问题。Enter 发送，Shift+Enter 换行。',
  ],
  'chat.send': ['Send', '发送'],
  'chat.stop': ['Stop', '停止'],
  'chat.empty': [
    'Ask a question to start. Choose a knowledge base to answer from your documents.',
    '输入问题开始对话。选择知识库可基于您的文档回答。',
  ],
  'chat.you': ['You', '您'],
  'chat.assistant': ['Assistant', '助手'],
  'chat.retry': ['Ask again', '重新提问'],
  'chat.sources': ['Sources', '来源'],
  'chat.chunk': ['chunk', '片段'],
  'chat.score': ['score', '得分'],
  'chat.stopped': ['Stopped.', '已停止。'],
  'chat.incomplete': ['The answer stopped before it was complete. Ask again.', '回答未完成就中断了，请重新提问。'],
  'chat.streamFailed': ['The answer failed: {message}', '回答失败：{message}'],

  'kb.title': ['Knowledge bases', '知识库'],
  'kb.none': ['No knowledge bases.', '没有知识库。'],
  'kb.selectOne': ['Select a knowledge base', '请选择一个知识库'],
  'kb.createTitle': ['New knowledge base', '新建知识库'],
  'kb.name': ['Name', '名称'],
  'kb.namePlaceholder': ['letters, digits, _ and -', '字母、数字、汉字、_ 和 -'],
  'kb.description': ['Description', '描述'],
  'kb.create': ['Create', '创建'],
  'kb.delete': ['Delete knowledge base', '删除知识库'],
  'kb.confirmDelete': ['Delete the knowledge base "{kb}" and all its documents?', '删除知识库“{kb}”及其全部文档？'],

  'upload.title': ['Upload documents', '上传文档'],
  'upload.files': ['Files', '文件'],
  'upload.button': ['Upload', '上传'],
  'upload.chooseFiles': ['Choose one or more files first.', '请先选择一个或多个文件。'],
  'upload.sending': ['Sending {files} file(s): {percent}%', '正在发送 {files} 个文件：{percent}%'],
  'upload.running': [
    'Ingesting: {done}/{files} files done, {chunks} chunks',
    '正在导入：已完成 {done}/{files} 个文件，{chunks} 个片段',
  ],
  'upload.completed': [
    'Done: {done}/{files} files ({ingested} ingested, {unchanged} unchanged), {chunks} chunks.',
    '完成：{done}/{files} 个文件（新导入 {ingested}，未变化 {unchanged}），共 {chunks} 个片段。',
  ],
  'upload.completedWithFailures': [
    'Done with failures: {done}/{files} files ({ingested} ingested, {unchanged} unchanged, {failed} failed), {chunks} chunks.',
    '完成但有失败：{done}/{files} 个文件（新导入 {ingested}，未变化 {unchanged}，失败 {failed}），共 {chunks} 个片段。',
  ],
  'upload.failed': [
    'The ingestion failed after {done}/{files} files: {error}',
    '导入在完成 {done}/{files} 个文件后失败：{error}',
  ],
  'upload.lost': [
    'The ingestion was lost (its server went away) after {done}/{files} files. What was written stays; upload the rest again.',
    '导入任务已丢失（处理它的服务器已离线），此前完成 {done}/{files} 个文件。已写入的内容会保留，请重新上传其余文件。',
  ],
  'upload.failedNoDetail': ['failed', '失败'],

  'doc.title': ['Documents', '文档'],
  'doc.name': ['Document', '文档'],
  'doc.chunks': ['Chunks', '片段数'],
  'doc.state': ['State', '状态'],
  'doc.actions': ['Actions', '操作'],
  'doc.ready': ['ready', '可用'],
  'doc.deleted': ['deleted', '已删除'],
  'doc.delete': ['Delete', '删除'],
  'doc.none': ['No documents yet.', '还没有文档。'],
  'doc.confirmDelete': ['Delete "{document}" from "{kb}"?', '从“{kb}”中删除“{document}”？'],

  'search.title': ['Search', '检索'],
  'search.label': ['Search query', '检索内容'],
  'search.placeholder': ['Search this knowledge base', '在此知识库中检索'],
  'search.button': ['Search', '检索'],
  'search.searching': ['Searching…', '检索中…'],
  'search.noHits': ['No results.', '没有结果。'],
  'search.mode.vector': ['Vector', '向量'],
  'search.mode.fulltext': ['Full text', '全文'],
  'search.mode.hybrid': ['Hybrid', '混合'],

  'keys.title': ['API keys', 'API 密钥'],
  'keys.name': ['Name', '名称'],
  'keys.role': ['Role', '角色'],
  'keys.kbs': ['Knowledge bases', '知识库'],
  'keys.kbsPlaceholder': ['names, comma-separated, or *', '名称，用逗号分隔，或 *'],
  'keys.rpm': ['Requests/min', '每分钟请求数'],
  'keys.tpm': ['Tokens/min', '每分钟令牌数'],
  'keys.daily': ['Tokens/day', '每日令牌数'],
  'keys.expiresDays': ['Expires after (days)', '有效期（天）'],
  'keys.never': ['never', '永不过期'],
  'keys.defaultLimit': ['default', '默认'],
  'keys.create': ['Create key', '创建密钥'],
  'keys.createdOnce': [
    'The new key is below. Copy it now: it will not be shown again.',
    '新密钥如下。请立即复制：它不会再次显示。',
  ],
  'keys.secretDone': ['Done', '完成'],
  'keys.limits': ['Limits', '限额'],
  'keys.usage': ['Usage today', '今日用量'],
  'keys.usageValue': ['{requests} requests, {tokens} tokens', '{requests} 次请求，{tokens} 个令牌'],
  'keys.state': ['State', '状态'],
  'keys.state.active': ['active', '有效'],
  'keys.state.revoked': ['revoked', '已吊销'],
  'keys.state.expired': ['expired', '已过期'],
  'keys.allKbs': ['all (*)', '全部 (*)'],
  'keys.noKbs': ['none', '无'],
  'keys.none': ['No keys yet.', '还没有密钥。'],
  'keys.editLimits': ['Edit limits', '修改限额'],
  'keys.save': ['Save', '保存'],
  'keys.cancel': ['Cancel', '取消'],
  'keys.revoke': ['Revoke', '吊销'],
  'keys.confirmRevoke': [
    'Revoke the key "{name}" ({id})? Anything using it stops working at once.',
    '吊销密钥“{name}”（{id}）？使用它的一切将立即停止工作。',
  ],
  'keys.badNumber': ['{field} must be a whole number of at least 1.', '{field} 必须是不小于 1 的整数。'],
  'keys.createdAt': ['Created {when}', '创建于 {when}'],
  'keys.expiresAt': ['Expires {when}', '到期于 {when}'],
  'keys.revokedAt': ['Revoked {when}', '吊销于 {when}'],

  'cluster.title': ['Cluster', '集群'],
  'cluster.updated': ['Updated {when}', '更新于 {when}'],
  'cluster.nodes': ['Nodes', '节点'],
  'cluster.noNodes': ['No nodes reported.', '没有节点信息。'],
  'cluster.node': ['Node', '节点'],
  'cluster.address': ['Address', '地址'],
  'cluster.state': ['State', '状态'],
  'cluster.resources': ['Resources', '资源'],
  'cluster.alive': ['alive', '在线'],
  'cluster.dead': ['dead', '离线'],
  'cluster.memory': ['memory', '内存'],
  'cluster.deployments': ['Deployments', '部署'],
  'cluster.noDeployments': ['No deployments reported.', '没有部署信息。'],
  'cluster.app': ['Application', '应用'],
  'cluster.deployment': ['Deployment', '部署'],
  'cluster.status': ['Status', '状态'],
  'cluster.replicas': ['Replicas', '副本'],
  'cluster.cacheHitRate': ['Answer cache hit rate', '回答缓存命中率'],
  'cluster.cacheDetail': ['{hits} hits of {lookups} lookups', '{lookups} 次查询中命中 {hits} 次'],
  'cluster.inFlight': ['Requests in flight', '处理中的请求'],
  'cluster.chartRequests': ['Requests per {seconds} s', '每 {seconds} 秒请求数'],
  'cluster.chartErrors': ['errors', '错误'],
  'cluster.chartP95': ['p95 latency', 'p95 延迟'],
  'cluster.chartEmpty': ['No traffic recorded yet.', '暂无流量记录。'],
};

const column = (i) => Object.fromEntries(Object.entries(MESSAGES).map(([key, texts]) => [key, texts[i]]));
const en = column(0);
export const DICTIONARIES = { en, zh: column(1) };

let lang = 'en';
const listeners = [];

function initialLang() {
  let saved = null;
  try {
    saved = localStorage.getItem(LANG_KEY);
  } catch {
    // Storage disabled: the browser's language decides.
  }
  if (saved && DICTIONARIES[saved]) return saved;
  return (navigator.language || '').toLowerCase().startsWith('zh') ? 'zh' : 'en';
}

/** The text for `key` in the current language (English, then the key itself, as fallbacks). */
export function t(key, vars) {
  const template = DICTIONARIES[lang][key] ?? en[key] ?? key;
  if (!vars) return template;
  return template.replace(/\{(\w+)\}/g, (whole, name) => (name in vars ? String(vars[name]) : whole));
}

export const getLang = () => lang;

/** Fills every marked element under `root` from the dictionary. */
export function applyI18n(root = document) {
  document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
  document.title = t('app.title');
  for (const node of root.querySelectorAll('[data-i18n]')) {
    let vars;
    try {
      vars = node.dataset.i18nVars ? JSON.parse(node.dataset.i18nVars) : undefined;
    } catch {
      vars = undefined;
    }
    node.textContent = t(node.dataset.i18n, vars);
  }
  for (const node of root.querySelectorAll('[data-i18n-placeholder]')) {
    node.placeholder = t(node.dataset.i18nPlaceholder);
  }
  for (const node of root.querySelectorAll('[data-i18n-aria-label]')) {
    node.setAttribute('aria-label', t(node.dataset.i18nAriaLabel));
  }
}

export function setLang(next) {
  if (!DICTIONARIES[next]) return;
  lang = next;
  try {
    localStorage.setItem(LANG_KEY, next);
  } catch {
    // Storage disabled: the choice lasts for this page only.
  }
  applyI18n();
  for (const listener of listeners) listener(lang);
}

/** `listener(lang)` after every language change (for texts built with values, such as dates). */
export function onLanguageChange(listener) {
  listeners.push(listener);
}

export function initI18n() {
  lang = initialLang();
  applyI18n();
}
