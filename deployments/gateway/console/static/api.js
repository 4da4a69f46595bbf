// The raychat API over fetch, and the credential. The credential lives only in sessionStorage:
// it is gone when the browser session ends, and no cookie carries it anywhere.
import { t } from './i18n.js';

const CREDENTIAL_KEY = 'raychat.credential';

export const credential = {
  get: () => sessionStorage.getItem(CREDENTIAL_KEY) || '',
  set: (value) => sessionStorage.setItem(CREDENTIAL_KEY, value),
  clear: () => sessionStorage.removeItem(CREDENTIAL_KEY),
};

/** A refusal (status set) or a network failure (status 0), with what the server said. */
export class ApiError extends Error {
  constructor({ status = 0, message = '', code = null, type = null, param = null, retryAfter = null }) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.type = type;
    this.param = param;
    this.retryAfter = retryAfter;
  }
}

/** Retry-After as seconds: either a number of seconds or an HTTP date. */
function retryAfterSeconds(header) {
  if (!header) return null;
  if (/^\d+$/.test(header.trim())) return Number(header.trim());
  const when = Date.parse(header);
  return Number.isNaN(when) ? null : Math.max(0, Math.ceil((when - Date.now()) / 1000));
}

/** An ApiError from a refused response's status, body text and Retry-After header. */
export function errorFromParts(status, bodyText, retryAfterHeader, statusText = '') {
  let message = '';
  let fields = {};
  try {
    const body = JSON.parse(bodyText);
    if (body && typeof body.error === 'object' && body.error) {
      fields = body.error;
      message = String(body.error.message ?? '');
    } else if (body && typeof body.detail === 'string') {
      message = body.detail; // FastAPI's own 404/405 for routes that do not exist
    }
  } catch {
    // Not JSON (a proxy's page): the status line is the readable part.
  }
  return new ApiError({
    status,
    message: message || statusText || t('err.noDetail'),
    code: fields.code ?? null,
    type: fields.type ?? null,
    param: fields.param ?? null,
    retryAfter: retryAfterSeconds(retryAfterHeader),
  });
}

async function errorFromResponse(response) {
  const text = await response.text().catch(() => '');
  return errorFromParts(response.status, text, response.headers.get('Retry-After'), response.statusText);
}

function networkError(cause) {
  const error = new ApiError({ status: 0, message: cause?.message || '' });
  error.network = true;
  return error;
}

export const isAbort = (error) => error?.name === 'AbortError';

/** The request headers; a credential passed in (sign-in) wins over the stored one. */
function headers(token, json) {
  const out = { Authorization: `Bearer ${token ?? credential.get()}`, Accept: 'application/json' };
  if (json) out['Content-Type'] = 'application/json';
  return out;
}

async function send(path, { method = 'GET', body, signal, token, accept } = {}) {
  const init = { method, headers: headers(token, body !== undefined), signal, cache: 'no-store' };
  if (accept) init.headers.Accept = accept;
  if (body !== undefined) init.body = JSON.stringify(body);
  try {
    return await fetch(path, init);
  } catch (error) {
    if (isAbort(error)) throw error;
    throw networkError(error);
  }
}

/** A JSON call; resolves to the parsed body (null when empty), rejects with ApiError. */
export async function api(path, options = {}) {
  const response = await send(path, options);
  if (!response.ok) throw await errorFromResponse(response);
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError({ status: response.status, message: t('err.badResponse') });
  }
}

/** A streamed POST (text/event-stream): the open response, or ApiError if refused before it opened. */
export async function openStream(path, body, signal) {
  const response = await send(path, { method: 'POST', body, signal, accept: 'text/event-stream' });
  if (!response.ok) throw await errorFromResponse(response);
  if (!response.body) throw new ApiError({ status: response.status, message: t('err.badResponse') });
  return response;
}

/**
 * Multipart upload with XMLHttpRequest, because only XHR reports bytes sent (upload.onprogress).
 * Resolves to {status, body}; rejects with ApiError.
 */
export function uploadFiles(path, files, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', path);
    xhr.setRequestHeader('Authorization', `Bearer ${credential.get()}`);
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.upload.addEventListener('progress', (event) => {
      onProgress(event.loaded, event.lengthComputable ? event.total : 0);
    });
    xhr.addEventListener('load', () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        try {
          resolve({ status: xhr.status, body: JSON.parse(xhr.responseText || 'null') });
        } catch {
          reject(new ApiError({ status: xhr.status, message: t('err.badResponse') }));
        }
      } else {
        reject(errorFromParts(xhr.status, xhr.responseText, xhr.getResponseHeader('Retry-After'), xhr.statusText));
      }
    });
    xhr.addEventListener('error', () => reject(networkError(null)));
    xhr.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')));
    const form = new FormData();
    for (const file of files) form.append('files', file, file.name);
    xhr.send(form);
  });
}

/** Retry-After in words; long waits (a daily budget renews at midnight UTC) also in hours and minutes. */
function retryText(seconds) {
  if (seconds === null) return t('err.retryLater');
  if (seconds < 120) return t('err.retryAfter', { seconds });
  const hours = Math.floor(seconds / 3600);
  const minutes = Math.ceil((seconds % 3600) / 60);
  const about = hours ? t('err.hoursMinutes', { hours, minutes }) : t('err.minutes', { minutes });
  return t('err.retryAfterLong', { seconds, about });
}

/** What a person reads for an error: status, the server's message, and what to do next. */
export function describeError(error) {
  if (!(error instanceof ApiError)) return t('err.unexpected', { message: error?.message || String(error) });
  if (error.network || error.status === 0) return t('err.network');
  let message = error.message.trim();
  if (message && !/[.!?。！？]$/.test(message)) message += '.';
  const parts = [t('err.refused', { status: error.status, message })];
  if (error.status === 401) parts.push(t('err.hint401'));
  if (error.status === 403) parts.push(t('err.hint403'));
  if (error.status === 429 || error.status === 503) {
    parts.push(retryText(error.retryAfter));
  }
  return parts.join(' ');
}

/** A path segment, encoded (names can hold CJK; document ids can hold '/'). */
export const seg = (value) => encodeURIComponent(value);
