// The usage dashboard: signs in with Cognito (USER_PASSWORD_AUTH), then calls the usage API with the IdToken.
// Plain JavaScript, no build step, no third-party code; the chart is drawn as SVG by hand.
'use strict';

const TOKEN_KEY = 'bedrock-usage.idToken';
const SVG_NS = 'http://www.w3.org/2000/svg';
// The page is /ui (or /<stage>/ui behind API Gateway); the API lives next to it.
const API_ROOT = location.pathname.replace(/\/ui\/?$/, '');

const state = {
  config: null,
  token: null,
  claims: null,
  tenant: null, // null: the caller's own tenant (/v1/usage/me)
  limitsTenant: null, // whose limits the limits card shows
  nextCursor: null,
  generation: 0, // answers of an older selection are dropped
};

const $ = (id) => document.getElementById(id);

class UiError extends Error {}
class SessionExpired extends UiError {}

// ------------------------------------------------------------------ small helpers

function show(element, visible) {
  element.hidden = !visible;
}

function setState(name) {
  document.body.dataset.state = name;
}

function showError(error) {
  const box = $('error');
  box.textContent = error instanceof Error ? error.message : String(error);
  show(box, true);
  setState('error');
}

function clearError() {
  $('error').textContent = '';
  show($('error'), false);
}

function formatCount(value) {
  return Number(value).toLocaleString('en-US');
}

function formatCost(value) {
  if (value === null || value === undefined) return 'n/a';
  return '$' + Number(value).toFixed(6).replace(/0{1,4}$/, '');
}

function setFigure(id, value, text) {
  const element = $(id);
  element.textContent = text;
  element.dataset.value = value === null || value === undefined ? '' : String(value);
}

function element(tag, attributes = {}, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attributes = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  return node;
}

function decodeClaims(token) {
  const payload = token.split('.')[1] || '';
  const base64 = payload.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(payload.length / 4) * 4, '=');
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

function groupsOf(claims) {
  const groups = claims['cognito:groups'];
  if (Array.isArray(groups)) return groups;
  if (typeof groups === 'string') return groups.split(/[,\s]+/).filter(Boolean);
  return [];
}

function isAdmin() {
  return Boolean(state.claims && state.config && groupsOf(state.claims).includes(state.config.admin_group));
}

// ------------------------------------------------------------------ Cognito and the API

async function signIn(username, password) {
  const { cognito_endpoint: endpoint, cognito_client_id: clientId } = state.config;
  if (!clientId) throw new UiError('Sign-in is not configured: the usage function has no COGNITO_CLIENT_ID.');
  let response;
  try {
    response = await fetch(endpoint, {
      method: 'POST',
      headers: {
        'Content-Type': 'application/x-amz-json-1.1',
        'X-Amz-Target': 'AWSCognitoIdentityProviderService.InitiateAuth',
      },
      body: JSON.stringify({
        AuthFlow: 'USER_PASSWORD_AUTH',
        ClientId: clientId,
        AuthParameters: { USERNAME: username, PASSWORD: password },
      }),
    });
  } catch (error) {
    throw new UiError(`Cognito (${endpoint}) could not be reached: ${error.message}`);
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const kind = String(body.__type || '').split('#').pop() || `HTTP ${response.status}`;
    throw new UiError(`Sign-in failed: ${body.message || body.Message || kind} (${kind})`);
  }
  if (body.ChallengeName) {
    throw new UiError(`Sign-in needs the ${body.ChallengeName} step, which this page does not support. ` +
      'Complete it with an administrator (for example set a permanent password), then sign in again.');
  }
  const token = body.AuthenticationResult && body.AuthenticationResult.IdToken;
  if (!token) throw new UiError('Sign-in failed: Cognito returned no IdToken.');
  adoptToken(token);
}

function adoptToken(token) {
  const claims = decodeClaims(token);
  state.token = token;
  state.claims = claims;
  sessionStorage.setItem(TOKEN_KEY, token);
}

function signOut() {
  state.token = null;
  state.claims = null;
  state.tenant = null;
  sessionStorage.removeItem(TOKEN_KEY);
}

async function apiGet(path) {
  return apiCall('GET', path);
}

async function apiCall(method, path, payload) {
  if (!state.token) throw new SessionExpired('You are signed out: sign in again.');
  const expiresAt = Number(state.claims && state.claims.exp) * 1000;
  if (expiresAt && expiresAt <= Date.now()) {
    throw new SessionExpired(`Your session expired at ${new Date(expiresAt).toLocaleTimeString()}: sign in again.`);
  }
  let response;
  try {
    const headers = { Authorization: `Bearer ${state.token}` };
    const init = { method, headers };
    if (payload !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(payload);
    }
    response = await fetch(API_ROOT + path, init);
  } catch (error) {
    throw new UiError(`The usage API could not be reached: ${error.message}`);
  }
  const body = await response.json().catch(() => null);
  const message = (body && body.error && body.error.message) || response.statusText || 'no details';
  if (response.status === 401) {
    throw new SessionExpired(`Your session has expired or is not valid (${message}): sign in again.`);
  }
  if (response.status === 403) throw new UiError(`Not allowed (403): ${message}`);
  if (!response.ok) throw new UiError(`The usage API answered ${response.status}: ${message}`);
  if (body === null) throw new UiError('The usage API answered with something that is not JSON.');
  return body;
}

function query() {
  const params = new URLSearchParams({ days: $('days').value });
  if ($('request-type').value !== 'all') params.set('request_type', $('request-type').value);
  return params;
}

// ------------------------------------------------------------------ rendering

function renderWho() {
  const claims = state.claims || {};
  $('who-user').textContent = claims['cognito:username'] || claims.email || claims.sub || '';
  $('who-tenant').textContent = claims['custom:tenant_id'] || '(no tenant)';
  show($('who-admin'), isAdmin());
  show($('who'), Boolean(state.token));
}

function renderReport(report) {
  const summary = report.summary;
  $('report-tenant').textContent = report.tenant_id;
  $('report-tenant').dataset.value = report.tenant_id;
  $('report-period').textContent = `${report.from} to ${report.to} (${report.period_days} days, ${report.request_type})`;
  setFigure('total-input-tokens', summary.total_input_tokens, formatCount(summary.total_input_tokens));
  setFigure('total-output-tokens', summary.total_output_tokens, formatCount(summary.total_output_tokens));
  setFigure('total-tokens', summary.total_tokens, formatCount(summary.total_tokens));
  setFigure('total-requests', summary.total_requests, formatCount(summary.total_requests));
  setFigure('estimated-cost', summary.estimated_cost_usd, formatCost(summary.estimated_cost_usd));

  const warnings = $('warnings');
  warnings.replaceChildren(...report.warnings.map((text) => element('li', {}, text)));
  show(warnings, report.warnings.length > 0);

  renderChart(report.daily_stats);

  $('models').replaceChildren(...report.models.map((model) => {
    const row = element('tr');
    row.append(
      element('td', {}, model.model_id),
      element('td', {}, model.request_type),
      element('td', { class: 'num' }, formatCount(model.input_tokens)),
      element('td', { class: 'num' }, formatCount(model.output_tokens)),
      element('td', { class: 'num' }, formatCount(model.requests)),
      element('td', { class: 'num' }, formatCost(model.estimated_cost_usd)),
    );
    return row;
  }));
  show($('report'), true);
}

const LIMIT_KINDS = [
  ['requests_per_minute', 'Requests per minute'],
  ['tokens_per_day', 'Tokens per UTC day'],
  ['tokens_per_month', 'Tokens per UTC month'],
  ['usd_per_month', 'Estimated USD per UTC month'],
];

function formatLimitAmount(kind, value) {
  return kind === 'usd_per_month' ? formatCost(value) : formatCount(value);
}

/** Each limit with a progress bar (used, and held by requests in flight), what remains and when it resets. */
function renderLimits(report) {
  state.limitsTenant = report.tenant_id;
  $('limits-tenant').textContent = report.tenant_id;
  const set = LIMIT_KINDS.filter(([kind]) => report.limits[kind]);
  $('limit-rows').replaceChildren(...set.map(([kind, label]) => {
    const limit = report.limits[kind];
    const bar = element('progress', { max: String(Math.max(limit.limit, 0.000001)), 'data-testid': `limit-bar-${kind}` });
    bar.value = Math.min(limit.used + limit.in_flight, limit.limit);
    bar.dataset.used = String(limit.used);
    bar.dataset.limit = String(limit.limit);
    const row = element('tr', { 'data-testid': `limit-${kind}` });
    row.append(
      element('td', {}, label),
      element('td', {}, ''),
      element('td', { class: 'num', 'data-testid': `limit-used-${kind}` },
        `${formatLimitAmount(kind, limit.used)} of ${formatLimitAmount(kind, limit.limit)}`),
      element('td', { class: 'num', 'data-testid': `limit-remaining-${kind}` }, formatLimitAmount(kind, limit.remaining)),
      element('td', { 'data-testid': `limit-reset-${kind}`, title: limit.resets_at },
        `${new Date(limit.resets_at).toISOString().replace('.000Z', 'Z')} (period ${limit.period})`),
    );
    row.children[1].append(bar);
    return row;
  }));
  show($('limits-none'), set.length === 0);
  const editable = isAdmin();
  show($('limits-form'), editable);
  if (editable) {
    for (const [kind] of LIMIT_KINDS) {
      const limit = report.limits[kind];
      $(`limit-input-${kind}`).value = limit ? String(limit.limit) : '';
    }
  }
  show($('limits'), true);
}

async function saveLimits(clear) {
  clearError();
  const body = {};
  if (!clear) {
    for (const [kind] of LIMIT_KINDS) {
      const text = $(`limit-input-${kind}`).value.trim();
      body[kind] = text === '' ? null : Number(text);
    }
  }
  try {
    const path = `/v1/limits/${encodeURIComponent(state.limitsTenant)}`;
    renderLimits(await apiCall(clear ? 'DELETE' : 'PUT', path, clear ? undefined : body));
    $('limits').dataset.saved = String(Date.now());
  } catch (error) {
    await handleFailure(error);
  }
}

function niceMaximum(value) {
  if (value <= 0) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  const step = [1, 2, 2.5, 5, 10].find((candidate) => candidate * magnitude >= value);
  return step * magnitude;
}

// Stacked bars per day: input at the bottom, output on top. Each day's group carries its numbers as data.
function renderChart(dailyStats) {
  const days = Object.keys(dailyStats).sort();
  const width = 860;
  const height = 260;
  const margin = { top: 12, right: 12, bottom: 28, left: 64 };
  const plotWidth = width - margin.left - margin.right;
  const plotHeight = height - margin.top - margin.bottom;
  const maximum = niceMaximum(Math.max(0, ...days.map((day) => dailyStats[day].input_tokens + dailyStats[day].output_tokens)));
  const slot = plotWidth / Math.max(days.length, 1);
  const barWidth = Math.max(1, slot * 0.8);
  const y = (value) => margin.top + plotHeight - (value / maximum) * plotHeight;

  const chart = svg('svg', {
    viewBox: `0 0 ${width} ${height}`, role: 'img', 'data-days': days.length, 'data-maximum': maximum,
    'aria-label': `Daily input and output tokens, ${days[0]} to ${days[days.length - 1]}`,
  });
  for (const fraction of [0, 0.5, 1]) {
    const value = maximum * fraction;
    chart.append(svg('line', { class: 'gridline', x1: margin.left, x2: width - margin.right, y1: y(value), y2: y(value) }));
    const label = svg('text', { class: 'axis', x: margin.left - 6, y: y(value) + 4, 'text-anchor': 'end' });
    label.textContent = formatCount(value);
    chart.append(label);
  }
  days.forEach((day, index) => {
    const stats = dailyStats[day];
    const x = margin.left + index * slot + (slot - barWidth) / 2;
    const group = svg('g', {
      class: 'day', 'data-day': day, 'data-input': stats.input_tokens, 'data-output': stats.output_tokens,
      'data-requests': stats.requests,
    });
    const title = svg('title');
    title.textContent = `${day}: ${formatCount(stats.input_tokens)} input, ${formatCount(stats.output_tokens)} output, ` +
      `${formatCount(stats.requests)} requests`;
    group.append(title);
    const inputTop = y(stats.input_tokens);
    const outputTop = y(stats.input_tokens + stats.output_tokens);
    group.append(svg('rect', { class: 'bar input', x, width: barWidth, y: inputTop, height: margin.top + plotHeight - inputTop }));
    group.append(svg('rect', { class: 'bar output', x, width: barWidth, y: outputTop, height: inputTop - outputTop }));
    // A transparent full-height target so thin bars still show their tooltip.
    group.append(svg('rect', { class: 'hit', x: margin.left + index * slot, width: slot, y: margin.top, height: plotHeight }));
    chart.append(group);
  });
  const labelEvery = Math.max(1, Math.ceil(days.length / 8));
  days.forEach((day, index) => {
    if (index % labelEvery !== 0 && index !== days.length - 1) return;
    const label = svg('text', { class: 'axis', x: margin.left + index * slot + slot / 2, y: height - 8, 'text-anchor': 'middle' });
    label.textContent = day.slice(5);
    chart.append(label);
  });
  $('chart').replaceChildren(chart);
}

function tenantRow(tenant) {
  const row = element('tr', { 'data-tenant-id': tenant.tenant_id, 'data-total-tokens': tenant.total_tokens, tabindex: '0' });
  const open = element('button', { type: 'button', class: 'link' }, tenant.tenant_id);
  open.addEventListener('click', () => openTenant(tenant.tenant_id));
  const name = element('td');
  name.append(open);
  row.append(
    name,
    element('td', { class: 'num' }, formatCount(tenant.total_input_tokens)),
    element('td', { class: 'num' }, formatCount(tenant.total_output_tokens)),
    element('td', { class: 'num' }, formatCount(tenant.total_tokens)),
    element('td', { class: 'num' }, formatCount(tenant.total_requests)),
    element('td', { class: 'num' }, formatCost(tenant.estimated_cost_usd)),
  );
  return row;
}

function renderTenants(page, append) {
  const rows = page.tenants.map(tenantRow);
  if (append) $('tenant-rows').append(...rows);
  else $('tenant-rows').replaceChildren(...rows);
  $('tenant-count').textContent = `${formatCount(page.tenant_count)} tenants, ${formatCount(page.summary.total_tokens)} tokens, ` +
    `estimated ${formatCost(page.summary.estimated_cost_usd)}`;
  $('tenant-count').dataset.value = String(page.tenant_count);
  state.nextCursor = page.next;
  show($('more-tenants'), Boolean(page.next));
  show($('tenants'), true);
}

// ------------------------------------------------------------------ flows

function tenantFromHash() {
  const match = /^#tenant=(.+)$/.exec(location.hash);
  return match ? decodeURIComponent(match[1]) : null;
}

function openTenant(tenantId) {
  location.hash = `tenant=${encodeURIComponent(tenantId)}`; // hashchange reloads
}

async function handleFailure(error) {
  if (error instanceof SessionExpired) {
    signOut();
    renderSignedOut();
  }
  showError(error);
}

async function load() {
  const generation = ++state.generation;
  clearError();
  setState('loading');
  state.tenant = tenantFromHash();
  show($('back-to-mine'), state.tenant !== null);
  try {
    const path = state.tenant === null ? '/v1/usage/me' : `/v1/usage/${encodeURIComponent(state.tenant)}`;
    const limitsPath = state.tenant === null ? '/v1/limits/me' : `/v1/limits/${encodeURIComponent(state.tenant)}`;
    const requests = [apiGet(`${path}?${query()}`), apiGet(limitsPath)];
    if (isAdmin()) requests.push(apiGet(`/v1/usage?${query()}&limit=100`));
    const [report, limits, tenants] = await Promise.all(requests);
    if (generation !== state.generation) return;
    renderReport(report);
    renderLimits(limits);
    if (tenants) renderTenants(tenants, false);
    else show($('tenants'), false);
    setState('ready');
  } catch (error) {
    if (generation !== state.generation) return;
    show($('report'), false);
    show($('limits'), false);
    await handleFailure(error);
  }
}

async function loadMoreTenants() {
  if (!state.nextCursor) return;
  clearError();
  try {
    const params = query();
    params.set('cursor', state.nextCursor);
    params.set('limit', '100');
    renderTenants(await apiGet(`/v1/usage?${params}`), true);
  } catch (error) {
    await handleFailure(error);
  }
}

function renderSignedOut() {
  renderWho();
  show($('dashboard'), false);
  show($('sign-in'), true);
  setState('signed-out');
  $('username').focus();
}

function renderSignedIn() {
  renderWho();
  show($('sign-in'), false);
  show($('dashboard'), true);
  return load();
}

async function start() {
  try {
    const response = await fetch('ui/config.json', { cache: 'no-store' });
    if (!response.ok) throw new UiError(`The dashboard configuration could not be loaded (HTTP ${response.status}).`);
    state.config = await response.json();
  } catch (error) {
    showError(error instanceof UiError ? error : new UiError(`The dashboard configuration could not be loaded: ${error.message}`));
    return;
  }
  $('sign-in-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    clearError();
    $('sign-in-button').disabled = true;
    setState('signing-in');
    try {
      await signIn($('username').value.trim(), $('password').value);
      $('password').value = '';
      await renderSignedIn();
    } catch (error) {
      showError(error);
    } finally {
      $('sign-in-button').disabled = false;
    }
  });
  $('sign-out').addEventListener('click', () => {
    signOut();
    clearError();
    renderSignedOut();
  });
  $('days').addEventListener('change', load);
  $('request-type').addEventListener('change', load);
  $('refresh').addEventListener('click', load);
  $('more-tenants').addEventListener('click', loadMoreTenants);
  $('limits-form').addEventListener('submit', (event) => {
    event.preventDefault();
    saveLimits(false);
  });
  $('limits-clear').addEventListener('click', () => saveLimits(true));
  $('back-to-mine').addEventListener('click', () => {
    history.replaceState(null, '', location.pathname + location.search);
    load();
  });
  window.addEventListener('hashchange', () => state.token && load());

  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    try {
      adoptToken(saved);
    } catch {
      signOut();
    }
  }
  if (state.token) await renderSignedIn();
  else renderSignedOut();
}

start();
