// The REST API (/v1) as the portal calls it: the session cookie (HttpOnly) goes with every
// call by itself; a state-changing call adds the anti-CSRF token the gateway gave at sign-in
// (kept in the berth_csrf cookie, which a page of another site can neither read nor send).

export class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code || 'HTTP_' + status;
    this.requestId = e.request_id || '';
    this.details = e.details || {};
  }
}

function csrfToken() {
  const m = document.cookie.match(/(?:^|;\s*)berth_csrf=([^;]*)/);
  return m ? decodeURIComponent(m[1]) : '';
}

export function hasSession() {
  return csrfToken() !== '';
}

export async function call(method, path, body, extra = {}) {
  const headers = { Accept: 'application/json', ...extra };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && method !== 'HEAD') headers['X-CSRF-Token'] = csrfToken();
  const r = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin',
  });
  let data = null;
  const text = await r.text();
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

export const get = (path) => call('GET', path);
export const post = (path, body, headers) => call('POST', path, body === undefined ? {} : body, headers);
export const put = (path, body) => call('PUT', path, body);
export const del = (path) => call('DELETE', path);

// POST a file as the body (application/octet-stream), streamed by the browser; onProgress
// (sent, total) as it goes. The answer's JSON, or an ApiError. XMLHttpRequest, not fetch:
// fetch tells nothing of an upload's progress.
export function upload(path, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', path);
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    xhr.setRequestHeader('X-CSRF-Token', csrfToken());
    xhr.withCredentials = true;
    if (onProgress) xhr.upload.onprogress = (ev) => onProgress(ev.loaded, ev.total || file.size);
    xhr.onload = () => {
      let data = null;
      try { data = xhr.responseText ? JSON.parse(xhr.responseText) : null; } catch { data = null; }
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else reject(new ApiError(xhr.status, data));
    };
    xhr.onerror = () => reject(new ApiError(0, { error: { message: 'the upload was cut off' } }));
    xhr.send(file);
  });
}

// A report as CSV (Accept: text/csv), its text.
export async function csv(path) {
  const r = await fetch(path, { headers: { Accept: 'text/csv' }, credentials: 'same-origin' });
  const text = await r.text();
  if (!r.ok) {
    let data = null;
    try { data = JSON.parse(text); } catch { data = null; }
    throw new ApiError(r.status, data);
  }
  return text;
}

// Every page of a list (next_marker), up to max items: the portal shows what a user owns,
// which the gateway bounds by list_limit_max per page.
export async function all(path, key, max = 2000) {
  const out = [];
  let marker = null;
  do {
    const sep = path.includes('?') ? '&' : '?';
    const page = await get(path + sep + 'limit=500' + (marker ? '&marker=' + encodeURIComponent(marker) : ''));
    out.push(...(page[key] || []));
    marker = page.next_marker;
  } while (marker && out.length < max);
  return out;
}

export async function login(username, password) {
  return call('POST', '/v1/auth/tokens', { username, password, session: true });
}

export async function logout() {
  return call('DELETE', '/v1/auth/tokens/current');
}
